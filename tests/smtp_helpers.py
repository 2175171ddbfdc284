"""Shared by the tests of the SMTP relay (tests/test_smtp_*.py) and of the front
ends that run it: `filterd serve` as a real process with an SMTP listener (and the
unsubscribe listener), its config, the registry it reads, and what the tests check
there. The fixtures built on them (`relay`, `optout_relay`) are in conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filterd.identity import ConsumerHasher
from filterd.model import ALL_SENDERS, Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests.helpers import LogReader, RedisProcess, SinkServer

FILTERD = str(Path(sys.executable).parent / "filterd")


SECRET = "ab" * 32


MESSAGE = (
    b"From: shop@acme.test\r\nTo: you@example.com\r\nSubject: hello\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=s1; h=from:to:subject; b=xyz\r\n"
    b"\r\nBody line 1\r\n.leading dot line\r\nBody line 3\r\n"
)


@dataclass
class Relay:
    """A running filterd with its upstream sink and registry."""

    process: subprocess.Popen[bytes]
    log: LogReader
    port: int
    sink: SinkServer
    registry_server: RedisProcess
    home: Path
    intake_port: int = 0
    """smtp.unsubscribe_listen's port, when configured."""
    http_port: int = 0
    """[http]'s port, when relay_with configured it."""

    def smtp(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        """A client connection (EHLO done)."""
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30, source_address=(source, 0))
        client.ehlo("tool.test")
        return client

    def intake(self) -> smtplib.SMTP:
        """A client connection to the unsubscribe listener (EHLO done)."""
        client = smtplib.SMTP("127.0.0.1", self.intake_port, timeout=30)
        client.ehlo("mx.mailbox.test")
        return client

    def login(self, user: str = "newsletter", password: str = "pw-news") -> smtplib.SMTP:  # noqa: S107
        """A client logged in with AUTH."""
        client = self.smtp()
        client.login(user, password)
        return client

    def record(self, address: str, kind: Kind, sender: str = "acme", **kw: object) -> None:
        """Write a fact into the registry filterd reads (same secret)."""

        async def write() -> None:
            registry = RedisRegistry.from_url(self.registry_server.url)
            service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
            channel = None if sender == ALL_SENDERS else Channel.EMAIL
            request = FactRequest(normalize(address), kind, sender, channel, "test", **kw)  # type: ignore[arg-type]
            await service.record(request, origin="test")
            await registry.close()

        asyncio.run(write())

    def audit(self) -> list[tuple[str, str | None]]:
        """(event, reason) of the audit log, newest first, read after filterd has stopped
        (drop entries are written in the background; a clean stop writes them all)."""
        assert stop_filterd(self.process) == 0

        async def read() -> list[tuple[str, str | None]]:
            registry = RedisRegistry.from_url(self.registry_server.url)
            entries = await registry.read_audit(AuditQuery(limit=50))
            await registry.close()
            return [(e.event, e.reason) for e in entries]

        return asyncio.run(read())


def write_config(home: Path, registry_url: str, sink_port: int, extra: str = "") -> Path:
    """The relay config used by these tests."""
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink_port}"
hostname = "filterd.test"
max_message_size = "20KB"
max_recipients = 5
{extra}

[[smtp.accounts]]
username = "newsletter"
password = "pw-news"
sender = "acme"
stream = "commercial"

[[smtp.accounts]]
username = "receipts"
password = "pw-tx"
sender = "acme"
stream = "transactional"

[[smtp.accounts]]
username = "legacy"
networks = ["127.0.0.2/32"]
sender = "acme"
stream = "commercial"
""")
    return path


def start_filterd(config: Path) -> tuple[subprocess.Popen[bytes], LogReader, int]:
    """`filterd serve`, its log reader, and the port its SMTP listener got."""
    process, reader, ports = start_listeners(config, 1)
    return process, reader, ports["smtp"]


def start_listeners(
    config: Path, count: int
) -> tuple[subprocess.Popen[bytes], LogReader, dict[str, int]]:
    """`filterd serve`, its log reader, and the ports of its first `count` listeners
    by front end."""
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    reader = LogReader(process)
    ports: dict[str, int] = {}
    try:
        while len(ports) < count:
            record = reader.wait_for("listening")
            ports[str(record["front_end"])] = int(record["port"])  # type: ignore[call-overload]
    except AssertionError:
        process.kill()
        stop_filterd(process)
        raise
    return process, reader, ports


def stop_filterd(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, the exit code; the pipes closed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


UNSIGNED = b"From: shop@acme.test\r\nTo: you@example.com\r\nSubject: sale\r\n\r\nOffer\r\n"


def unsubscribe_token(relay: Relay, address: str) -> str:
    """The token of `filterctl unsubscribe-url ADDRESS --sender acme` for this relay."""
    done = subprocess.run(
        [str(Path(FILTERD).parent / "filterctl"), "--config", str(relay.home / "filterd.toml"),
         "unsubscribe-url", address, "--sender", "acme"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip().rsplit("/", 1)[1]


def facts_of(relay: Relay, address: str) -> list[tuple[Kind, str, str]]:
    """(kind, sender, source) of every fact on record for an address."""

    async def read() -> list[tuple[Kind, str, str]]:
        registry = RedisRegistry.from_url(relay.registry_server.url)
        hasher = ConsumerHasher(bytes.fromhex(SECRET))
        facts = await registry.facts(hasher.consumer_id(normalize(address)))
        await registry.close()
        return [(f.kind, f.sender, f.source) for f in facts]

    return asyncio.run(read())


@contextlib.contextmanager
def relay_with(registry_server: RedisProcess, extra: str) -> Iterator[Relay]:
    """filterd relaying to a fresh sink with `extra` config text after [smtp]'s keys
    (further tables may follow), on `registry_server` (already flushed); exit 0 checked."""
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(home, registry_server.url, sink.port, extra)
    try:
        process, reader, ports = start_listeners(config, 2 if "[http]" in extra else 1)
    except BaseException:
        sink.shutdown()
        raise
    try:
        yield Relay(
            process, reader, ports["smtp"], sink, registry_server, home,
            http_port=ports.get("http", 0),
        )  # fmt: skip
    finally:
        code = stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0
