"""The embedded registry server: shared by several users, stopped by the last,
restarted after a crash, its data kept in AOF across restarts."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from filterd.embedded import EmbeddedServer, answers_ping, find_binary, server_config
from filterd.errors import FilterdError
from tests.helpers import RedisProcess


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short private data directory (unix socket paths are limited)."""
    directory = Path(tempfile.mkdtemp(prefix="emb", dir="/tmp")) / "var"
    yield directory
    probe = EmbeddedServer(directory)
    if probe.alive():
        probe.acquire()
        probe.release()
    shutil.rmtree(directory.parent, ignore_errors=True)


def client(server: EmbeddedServer) -> redis.Redis:
    """A plain client on the server's socket."""
    return redis.Redis(unix_socket_path=str(server.socket_path))


def test_acquire_starts_private_durable_server(data_dir: Path) -> None:
    """acquire() starts a server on a 0700 unix socket, no TCP port, AOF on."""
    server = EmbeddedServer(data_dir)
    url = server.acquire()
    try:
        assert url == f"unix://{data_dir.resolve()}/registry.sock"
        c = client(server)
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("port")["port"] == "0"
        assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o700
        c.close()
    finally:
        server.release()
    assert not server.alive()


def test_last_user_stops_it(data_dir: Path) -> None:
    """With two users, the first to leave keeps it running; the last one stops it."""
    first, second = EmbeddedServer(data_dir), EmbeddedServer(data_dir)
    first.acquire()
    second.acquire()
    first.release()
    assert second.alive()
    second.release()
    assert not first.alive()


def test_data_survives_restart(data_dir: Path) -> None:
    """What was written is there after the server is stopped and started again."""
    server = EmbeddedServer(data_dir)
    server.acquire()
    c = client(server)
    c.set("k", "v")
    c.close()
    server.release()
    server.acquire()
    c = client(server)
    assert c.get("k") == b"v"
    c.close()
    server.release()


def test_ensure_running_restarts_after_kill_9(data_dir: Path) -> None:
    """A server killed with SIGKILL is started again by ensure_running(), data intact."""
    server = EmbeddedServer(data_dir)
    server.acquire()
    try:
        c = client(server)
        c.set("k", "kept")
        c.close()
        pid = int((data_dir / "registry.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # this process spawned it: wait for the kill to take effect
        assert not server.alive()
        server.ensure_running()
        c = client(server)
        assert c.get("k") == b"kept"
        c.close()
    finally:
        server.release()


def test_server_config_uses_fsync_always() -> None:
    """The config written for the server: unix socket only, AOF with fsync always."""
    binary = find_binary()
    text = server_config(Path("/srv/x"), binary)
    assert "port 0" in text
    assert "unixsocket /srv/x/registry.sock" in text
    assert "appendonly yes" in text
    assert "appendfsync always" in text


def test_configured_binary_that_does_not_run() -> None:
    """A registry.server that does not run is a clear error naming it."""
    with pytest.raises(FilterdError, match=r"registry\.server"):
        find_binary("/nonexistent/redis-server")


def test_too_long_data_dir_is_refused() -> None:
    """A data_dir too long for a unix socket path is refused up front."""
    with pytest.raises(FilterdError, match="too long"):
        EmbeddedServer(Path("/tmp/" + "d" * 120))


def test_start_failure_reports_the_log(data_dir: Path, tmp_path: Path) -> None:
    """A server that exits at start is reported with the end of its log."""
    fake = tmp_path / "fake-server"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Redis server v=7.0.0'; "
                    "exit 0; fi\necho 'boom: bad config' >&2\nexit 1\n")  # fmt: skip
    fake.chmod(0o755)
    with pytest.raises(FilterdError, match="boom: bad config"):
        EmbeddedServer(data_dir, str(fake)).acquire(timeout=10)


def test_answers_ping_tells_a_live_server_from_none(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """answers_ping is True for a server on its unix socket, False where nothing listens."""
    assert answers_ping(valkey_server.socket_path)
    assert not answers_ping(tmp_path / "nothing.sock")
