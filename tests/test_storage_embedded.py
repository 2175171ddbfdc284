"""The embedded registry server: shared by several users, stopped by the last,
restarted after a crash, its data kept in AOF across restarts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from filterd.errors import ConfigError, FilterdError
from filterd.storage.embedded import EmbeddedServer, answers_ping, find_binary, server_config
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


# ---- a private data directory (SPEC §11) --------------------------------------------------

FILTERCTL = str(Path(sys.executable).parent / "filterctl")
FILTERD = str(Path(sys.executable).parent / "filterd")


def mode(path: Path) -> int:
    """The permission bits of `path` (not following a symbolic link)."""
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(directory: Path) -> dict[str, int]:
    """Path (relative) → mode of every directory and regular file under `directory`."""
    return {
        str(p.relative_to(directory)): mode(p)
        for p in directory.rglob("*")
        if p.is_dir() or (p.is_file() and not p.is_symlink())
    }


def test_loose_data_dir_and_files_are_made_private(data_dir: Path, tmp_path: Path) -> None:
    """A data_dir that exists with mode 0755, holding a 0644 file and a 0755 directory with
    a 0664 file, is 0700 with 0700 directories and 0600 files once the server is acquired;
    a symbolic link in it is not followed (its target keeps its mode)."""
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "old.aof").write_bytes(b"")
    (data_dir / "old.aof").chmod(0o644)
    (data_dir / "appendonlydir").mkdir(mode=0o755)
    (data_dir / "appendonlydir").chmod(0o755)
    (data_dir / "appendonlydir" / "x.incr.aof").write_bytes(b"")
    (data_dir / "appendonlydir" / "x.incr.aof").chmod(0o664)
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    outside.chmod(0o644)
    (data_dir / "link").symlink_to(outside)
    server = EmbeddedServer(data_dir)
    server.acquire()
    try:
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "old.aof") == 0o600
        assert mode(data_dir / "appendonlydir") == 0o700
        assert mode(data_dir / "appendonlydir" / "x.incr.aof") == 0o600
        assert mode(outside) == 0o644
    finally:
        server.release()


def test_what_the_server_writes_is_private(data_dir: Path) -> None:
    """With a usual umask (022), every directory and file in the data directory, the AOF
    directory and files the server writes included, is 0700 / 0600 after writes."""
    previous = os.umask(0o022)
    try:
        server = EmbeddedServer(data_dir)
        server.acquire()
    finally:
        os.umask(previous)
    try:
        c = client(server)
        c.set("k", "v")
        c.close()
        modes = modes_under(data_dir)
    finally:
        server.release()
    assert any(name.endswith(".incr.aof") for name in modes), modes
    assert "registry.pid" in modes
    expected = {
        name: 0o700 if (data_dir / name).is_dir() else 0o600 for name in modes
    }  # fmt: skip
    assert modes == expected
    assert mode(data_dir) == 0o700


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` made immutable (chattr +i): not even root may change its mode."""
    chattr = shutil.which("chattr")
    if chattr is None or os.geteuid() != 0:
        pytest.skip("chattr +i needs root and e2fsprogs")
    if subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode:
        pytest.skip(f"the file system of {path} has no immutable flag")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_file_whose_mode_cannot_be_set_is_refused_naming_it(data_dir: Path) -> None:
    """A 0644 file in the data directory whose mode cannot be changed (EPERM) is a
    ConfigError naming the file, and no server is started."""
    data_dir.mkdir()
    stuck = data_dir / "stuck.aof"
    stuck.write_bytes(b"")
    stuck.chmod(0o644)
    with immutable(stuck), pytest.raises(ConfigError, match=re.escape(str(stuck))):
        EmbeddedServer(data_dir).acquire()
    assert not EmbeddedServer(data_dir).alive()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may change the mode of any directory")
def test_a_directory_of_another_user_is_refused() -> None:
    """A data_dir owned by another user (here /) is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"registry\.data_dir: / "):
        EmbeddedServer(Path("/")).acquire()


@pytest.mark.parametrize("command", [[FILTERCTL, "stats"], [FILTERD, "serve"]])
def test_commands_exit_2_naming_a_path_they_cannot_make_private(
    data_dir: Path, command: list[str]
) -> None:
    """filterctl and filterd serve refuse a data directory they cannot make private: exit
    status 2, the path named on stderr / in the log."""
    data_dir.mkdir()
    stuck = data_dir / "stuck.aof"
    stuck.write_bytes(b"")
    stuck.chmod(0o644)
    config = data_dir.parent / "filterd.toml"
    config.write_text(f'[registry]\nurl = "embedded"\ndata_dir = "{data_dir}"\n')
    environ = {k: v for k, v in os.environ.items() if k != "FILTERD_CONFIG"}
    with immutable(stuck):
        result = subprocess.run(
            [*command, "--config", str(config)],
            capture_output=True, text=True, timeout=60, env=environ, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr + result.stdout
    assert str(stuck) in result.stderr + result.stdout
