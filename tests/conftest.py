"""Shared fixtures: real registry servers spawned by the test session; short temp
directories and a minimal config for `filterd serve`; a filterctl home (config and
embedded registry) with and without [http]; a running SMPP relay."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterd.storage.embedded import EmbeddedServer
from tests.cli_helpers import HTTP_SECTIONS
from tests.helpers import RedisProcess, aof_args, bundled_valkey, system_redis
from tests.smpp_relay_helpers import Relay, running_relay

SERVERS = {"valkey": bundled_valkey(), "redis": system_redis()}


class ServerPool:
    """Session-wide servers, started on first use, one per kind."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._servers: dict[str, RedisProcess] = {}

    def get(self, kind: str) -> RedisProcess:
        """The running server of `kind` (skips the test when none is installed)."""
        binary = SERVERS[kind]
        if binary is None:
            pytest.skip(f"no {kind} server binary installed")
        if kind not in self._servers:
            directory = Path(self._factory.mktemp(kind, numbered=True))
            self._servers[kind] = RedisProcess(binary, directory, aof_args(binary)).start()
        server = self._servers[kind]
        if server.process is None or server.process.poll() is not None:
            server.start()
        return server

    def close(self) -> None:
        """Stop every server."""
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's servers."""
    pool = ServerPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture
def valkey_server(server_pool: ServerPool) -> RedisProcess:
    """A flushed Valkey server (WAITAOF durability)."""
    server = server_pool.get("valkey")
    flush(server)
    return server


def flush(server: RedisProcess) -> None:
    """Empty a shared server between tests."""
    assert server.command(b"FLUSHALL") == b"+OK"


@pytest.fixture
def event_loop_runner() -> Iterator[asyncio.Runner]:
    """An asyncio runner for tests that drive async code from sync test functions."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp with a short path (unix socket paths must be < 100 chars)."""
    path = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve_config(short_dir: Path) -> Path:
    """A minimal config: only [registry], embedded, data and secret in a short directory."""
    path = short_dir / "filterd.toml"
    path.write_text('[registry]\nurl = "embedded"\ndata_dir = "data"\nsecret_file = "secret/key"\n')
    return path


@pytest.fixture
def home() -> Iterator[Path]:
    """A short directory with a config using the embedded registry, default region CN."""
    directory = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    (directory / "filterd.toml").write_text(
        '[registry]\nurl = "embedded"\ndata_dir = "var"\nsecret_file = "var/secret"\n'
        'default_region = "CN"\nrequest_ttl = "30d"\n'
    )
    yield directory
    server = EmbeddedServer(directory / "var")
    if server.alive():  # a test that failed midway may leave it running
        server.acquire()
        server.release()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def http_home(home: Path) -> Path:
    """The home config plus [http] and an account naming the sender acme."""
    with (home / "filterd.toml").open("a") as config:
        config.write(HTTP_SECTIONS)
    return home


@pytest.fixture
def relay(valkey_server: RedisProcess) -> Iterator[Relay]:
    """filterd bound to a fresh fake carrier, on a flushed Valkey registry (the SMPP
    relay's tests; test_smtp_inbound.py has a `relay` of its own)."""
    with running_relay(valkey_server) as relay:
        yield relay
