"""Durable writes (filterd/storage/durability.py): a server that does not make
writes durable gets none acknowledged; an acknowledged write survives kill -9."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from filterd.errors import NotDurable
from filterd.model import (
    WriteResult,
)
from filterd.storage.redis import RedisRegistry
from tests.conftest import SERVERS, ServerPool
from tests.helpers import (
    RedisProcess,
    aof_args,
)
from tests.test_storage_redis import A, refusal


def test_refuses_to_write_without_durable_server(
    server_pool: ServerPool, tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """A server with appendonly off gets no write acknowledged: NotDurable, nothing stored."""
    binary = SERVERS["valkey"] or SERVERS["redis"]
    assert binary is not None
    server = RedisProcess(binary, tmp_path / "r", ["--appendonly", "no"]).start()
    try:
        registry = RedisRegistry.from_url(server.url)
        with pytest.raises(NotDurable):
            event_loop_runner.run(registry.record(A, refusal()))
        assert event_loop_runner.run(registry.lookup("acme", [A])) == [[]]
        event_loop_runner.run(registry.close())
    finally:
        server.stop()


def test_old_redis_needs_fsync_always(tmp_path: Path, event_loop_runner: asyncio.Runner) -> None:
    """On Redis < 7.2 (no WAITAOF) appendfsync everysec is not durable enough: NotDurable."""
    binary = SERVERS["redis"]
    if binary is None:
        pytest.skip("no redis-server on PATH")
    client_check = RedisProcess(binary, tmp_path / "v").start()
    version = redis.Redis(unix_socket_path=str(client_check.socket_path)).info("server")
    client_check.stop()
    if "valkey_version" in version or tuple(map(int, version["redis_version"].split(".")[:2])) >= (
        7,
        2,
    ):
        pytest.skip("this redis-server has WAITAOF")
    server = RedisProcess(
        binary, tmp_path / "r", ["--appendonly", "yes", "--appendfsync", "everysec"]
    ).start()
    try:
        registry = RedisRegistry.from_url(server.url)
        with pytest.raises(NotDurable):
            event_loop_runner.run(registry.record(A, refusal()))
        event_loop_runner.run(registry.close())
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_acknowledged_refusal_survives_kill_9(
    kind: str, tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """A refusal acknowledged by record() is on disk: kill -9 the server, restart, it is there."""
    binary = SERVERS[kind]
    if binary is None:
        pytest.skip(f"no {kind} server")
    server = RedisProcess(binary, tmp_path / "r", aof_args(binary)).start()
    try:
        for trial in range(5):
            consumer = trial.to_bytes(2, "big") + bytes(8)
            registry = RedisRegistry.from_url(server.url)
            result = event_loop_runner.run(registry.record(consumer, refusal(1000 + trial)))
            assert result is WriteResult.STORED
            server.kill()
            event_loop_runner.run(registry.close())
            server.start()
            registry = RedisRegistry.from_url(server.url)
            facts = event_loop_runner.run(registry.lookup("acme", [consumer]))[0]
            assert [f.at_ms for f in facts] == [1000 + trial]
            event_loop_runner.run(registry.close())
    finally:
        server.stop()
