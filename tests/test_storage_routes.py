"""Message-route writes (filterd/storage/routes.py): the routes of one loop turn go
out as one batch of SETs with their expiry, each caller returns once its own SET is
stored, and a failure (server error, lost link, wrong shape, closed) fails the
callers it concerns with RegistryUnavailable."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import pytest

from filterd.errors import RegistryUnavailable
from filterd.storage import keys
from filterd.storage.link import Outcome
from filterd.storage.lookups import Done
from filterd.storage.redis import RedisRegistry
from filterd.storage.routes import Routes
from tests.helpers import RedisProcess, free_port
from tests.test_storage_redis import _commandstats


class Recorder:
    """A Reads that keeps each batch and answers it when told (a pure unit test)."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[tuple[Any, ...]], Done]] = []

    def submit(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """Keep the batch unanswered."""
        self.batches.append((commands, done))

    def close(self) -> None:
        """Nothing to release."""


def test_concurrent_routes_share_one_batch_and_are_stored(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """50 routes remembered at the same time are 50 SETs (no other command: no
    transaction, no script), each readable afterwards with its expiry."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    run(registry.remember_message("warm", "sp", "0", 60))  # the link is open
    assert valkey_server.command(b"CONFIG RESETSTAT") == b"+OK"

    async def many() -> None:
        await asyncio.gather(
            *(registry.remember_message(f"c{i}", f"sp{i}", str(i), 600) for i in range(50))
        )

    run(many())
    stats = _commandstats(valkey_server)  # this INFO's own connection aside
    assert {k: v for k, v in stats.items() if "|" not in k and k != "hello"} == {"set": 50}
    assert run(registry.find_message("c7")) == ("sp7", "7")
    ttl = valkey_server.command(f"TTL {keys.message_key('c49')}".encode())
    run(registry.close())
    assert ttl is not None
    assert 0 < int(ttl.lstrip(b":")) <= 600


def test_each_caller_waits_for_its_own_reply() -> None:
    """Routes remembered in one loop turn are one batch of SETs with their expiry;
    nothing returns before the batch is answered; a server error on one SET fails
    that caller only, the others return."""
    recorder = Recorder()
    routes = Routes(recorder)

    async def scenario() -> list[object]:
        calls = [asyncio.ensure_future(routes.remember(f"k{i}", "v", 60)) for i in range(3)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not any(call.done() for call in calls)
        [(commands, done)] = recorder.batches
        assert commands == [("SET", f"k{i}", "v", "EX", 60) for i in range(3)]
        done([b"OK", hiredis.ReplyError("OOM command not allowed"), b"OK"])
        return await asyncio.gather(*calls, return_exceptions=True)

    first, second, third = asyncio.run(scenario())
    assert first is None
    assert third is None
    assert isinstance(second, RegistryUnavailable)
    assert "OOM" in str(second)


@pytest.mark.parametrize(
    "outcome", [RegistryUnavailable("link lost"), [b"OK"]], ids=["error", "wrong-shape"]
)
def test_a_failed_batch_fails_every_caller(outcome: Outcome) -> None:
    """A batch the link could not deliver, or answered with the wrong number of
    replies, fails every caller with RegistryUnavailable (nobody is left waiting)."""
    recorder = Recorder()
    routes = Routes(recorder)

    async def scenario() -> list[object]:
        calls = [asyncio.ensure_future(routes.remember(f"k{i}", "v", 60)) for i in range(2)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        recorder.batches[0][1](outcome)
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RegistryUnavailable) for r in results), results


def test_close_fails_what_is_queued() -> None:
    """A route queued when the registry closes fails with RegistryUnavailable and is
    never sent."""
    recorder = Recorder()
    routes = Routes(recorder)

    async def scenario() -> object:
        call = asyncio.ensure_future(routes.remember("k", "v", 60))
        await asyncio.sleep(0)  # queued; its flush is the next loop turn's
        routes.close()
        result = (await asyncio.gather(call, return_exceptions=True))[0]
        await asyncio.sleep(0)
        return result

    assert isinstance(asyncio.run(scenario()), RegistryUnavailable)
    assert recorder.batches == []


def test_no_server_fails_the_write(event_loop_runner: asyncio.Runner) -> None:
    """A route written while no server listens fails with RegistryUnavailable."""
    registry = RedisRegistry.from_url(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailable):
        event_loop_runner.run(registry.remember_message("c1", "sp", "1", 60))
    event_loop_runner.run(registry.close())
