"""Shared by the tests of the SMPP relay (tests/test_smpp_{server,session,submit,
deliveries}.py): `filterd serve` as a real process, smpplib (an independent SMPP client)
as the marketing tool, a fake carrier SMSC on filterd's codec, a real Valkey registry;
and an SmppRelay in the test's own process with raw TCP peers; [compliance] tables and
UCS2 message parts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.exceptions

from filterd.identity import ConsumerHasher
from filterd.keywords import Keywords
from filterd.model import ALL_SENDERS, Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import SmppSettings
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import AnyPdu, BindReceiver, BindTransceiver
from filterd.smpp.server import SmppRelay
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests.helpers import LogReader, RedisProcess
from tests.smsc import FakeSmsc

FILTERD = str(Path(sys.executable).parent / "filterd")
SECRET = "ef" * 32
NUMBER = "10690001"
JANE, BOB, CAROL = "8613800138000", "8613800138001", "8613800138002"
HTTP = '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test/"\n'
SIGNATURE = "【Acme】"
CANCEL = "回T退订"


@dataclass
class Client:
    """An smpplib client and the answers it has read."""

    smpp: smpplib.client.Client
    answers: list[tuple[str, int, Any]] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)

    def submit(self, destination: str, text: bytes = b"hello", **kw: Any) -> tuple[str, Any]:
        """One submit_sm; its answer: ("ok", message_id) or ("error", status)."""
        self.send(destination, text, **kw)
        return self.answer()

    def send(self, destination: str, text: bytes = b"hello", **kw: Any) -> None:
        """Send a submit_sm without reading the answer."""
        self.smpp.send_message(
            source_addr_ton=0, source_addr=NUMBER, dest_addr_ton=1, dest_addr_npi=1,
            destination_addr=destination, short_message=text, **kw,
        )  # fmt: skip

    def answer(self) -> tuple[str, Any]:
        """Read until the next submit_sm answer."""
        count = len(self.answers)
        while len(self.answers) == count:
            self.smpp.read_once()
        kind, _, value = self.answers[-1]
        return kind, value

    def close(self) -> None:
        """Unbind and disconnect."""
        with contextlib.suppress(
            smpplib.exceptions.PDUError, smpplib.exceptions.ConnectionError, OSError
        ):
            self.smpp.unbind()
        self.smpp.disconnect()


@dataclass
class Relay:
    """A running filterd SMPP relay with its carrier and registry."""

    process: subprocess.Popen[bytes]
    port: int
    smsc: FakeSmsc
    registry_server: RedisProcess
    clients: list[Client] = field(default_factory=list)
    home: Path | None = None
    log: LogReader | None = None
    pids: dict[str, int] = field(default_factory=dict)
    """Process id by role ("main", "smpp-worker") from the "listening" log lines."""

    def client(self, system_id: str = "promo", password: str = "chg-me-1",  # noqa: S107
               mode: str = "transceiver") -> Client:  # fmt: skip
        """A bound smpplib client."""
        smpp = smpplib.client.Client(
            "127.0.0.1", self.port, timeout=20, allow_unknown_opt_params=True
        )
        client = Client(smpp)
        smpp.set_message_sent_handler(  # smpplib calls it for error answers too
            lambda pdu, **kw: (
                pdu.status or client.answers.append(("ok", pdu.sequence, pdu.message_id))
            )
        )
        smpp.set_error_pdu_handler(
            lambda pdu: client.answers.append(("error", pdu.sequence, pdu.status))
        )
        smpp.set_message_received_handler(lambda pdu, **kw: client.received.append(pdu))
        smpp.connect()
        getattr(smpp, f"bind_{mode}")(system_id=system_id, password=password)
        self.clients.append(client)
        return client

    def record(self, number: str, kind: Kind, sender: str = "acme", **kw: Any) -> None:
        """Write a fact for +number into the registry filterd reads."""
        asyncio.run(self._record(number, kind, sender, **kw))

    async def _record(self, number: str, kind: Kind, sender: str, **kw: Any) -> None:
        registry = RedisRegistry.from_url(self.registry_server.url)
        service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
        channel = None if sender == ALL_SENDERS else Channel.SMS
        await service.record(
            FactRequest(normalize("+" + number), kind, sender, channel, "test", **kw),
            origin="test",
        )
        await registry.close()

    def audit(self) -> list[tuple[str, str | None, str | None]]:
        """(event, reason, sender) of the audit log, newest first, read once filterd has
        stopped (drop entries are written in the background; a clean stop writes them all)."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        stop(self.process)
        assert self.process.returncode == 0

        async def read() -> list[tuple[str, str | None, str | None]]:
            registry = RedisRegistry.from_url(self.registry_server.url)
            entries = await registry.read_audit(AuditQuery(limit=50))
            await registry.close()
            return [(e.event, e.reason, e.sender) for e in entries]

        return asyncio.run(read())

    def facts(self, number: str) -> list[tuple[str, str, str]]:
        """(kind, sender, source) of every fact on record for +number."""

        async def read() -> list[tuple[str, str, str]]:
            registry = RedisRegistry.from_url(self.registry_server.url)
            hasher = ConsumerHasher(bytes.fromhex(SECRET))
            facts = await registry.facts(hasher.consumer_id(normalize("+" + number)))
            await registry.close()
            return [(f.kind.value, f.sender, f.source) for f in facts]

        return asyncio.run(read())


def config(home: Path, registry_url: str, smsc_port: int, listen: str = "127.0.0.1:0",
           workers: int = 1, *, extra: str = "", tables: str = "") -> Path:  # fmt: skip
    """The relay config used here (`extra` lines in [smpp], `tables` at the end)."""
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[smpp]
listen = "{listen}"
workers = {workers}
{extra}

[smpp.upstream]
host = "127.0.0.1"
port = {smsc_port}
system_id = "filterd"
password = "secret1"

[[smpp.accounts]]
system_id = "promo"
password = "chg-me-1"
sender = "acme"
stream = "commercial"

[[smpp.accounts]]
system_id = "notify"
password = "notify-1"
sender = "acme"
stream = "transactional"

[[smpp.numbers]]
address = "{NUMBER}"
sender = "acme"
{tables}
""")
    return path


def smpp_listening(log: LogReader) -> dict[str, object]:
    """The next "listening" line of the SMPP listener (other front ends' are skipped)."""
    while True:
        entry = log.wait_for("listening")
        if entry.get("front_end") == "smpp":
            return entry


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a `filterd serve` still running and wait for it (killed after 30 s)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def compliance(
    method: str = "add",
    signature: str | None = SIGNATURE,
    cancel: str | None = CANCEL,
    quiet: str | None = None,
) -> str:
    """The [compliance] table (and [http], which "add" needs) with one sender table for
    acme."""
    lines = [HTTP, "[compliance]", f'cancel_method = "{method}"']
    if quiet is not None:
        lines.append(f'quiet_hours = "{quiet}"')
    lines += ["[[compliance.senders]]", 'sender = "acme"']
    if signature is not None:
        lines.append(f'signature = "{signature}"')
    if cancel is not None:
        lines.append(f'sms_cancel_text = "{cancel}"')
    return "\n".join(lines) + "\n"


def ucs2(text: str) -> bytes:
    """UTF-16BE, as data_coding 8 carries it."""
    return text.encode("utf-16-be")


def udh_parts(texts: list[str], reference: int = 0x21) -> list[bytes]:
    """One UCS2 part per text, each led by the 8-bit concatenation UDH."""
    return [
        bytes([5, 0, 3, reference, len(texts), seq]) + ucs2(text)
        for seq, text in enumerate(texts, 1)
    ]


def free_port() -> int:
    """A loopback port that was free a moment ago (workers > 1 need a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_relay(
    registry_server: RedisProcess,
    workers: int = 1,
    exit_code: int = 0,
    extra: str = "",
    tables: str = "",
) -> Iterator[Relay]:
    """`filterd serve` with smpp.workers = `workers` (and `extra` lines in [smpp], `tables`
    after it) over `registry_server` (flushed by the caller), every process bound to the
    carrier; on exit SIGTERM (unless stopped already), and the exit code must be
    `exit_code`."""
    home = Path(tempfile.mkdtemp(prefix="smpp", dir="/tmp"))
    smsc = FakeSmsc().start()
    listen = "127.0.0.1:0" if workers == 1 else f"127.0.0.1:{free_port()}"
    path = config(home, registry_server.url, smsc.port, listen, workers, extra=extra, tables=tables)
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    relay = None
    try:
        log = LogReader(process)
        listening = [smpp_listening(log) for _ in range(workers)]
        port = int(listening[0]["port"])  # type: ignore[call-overload]
        smsc.wait_bound(links=workers)
        relay = Relay(process, port, smsc, registry_server, home=home, log=log)
        relay.pids = {str(entry["role"]): int(entry["pid"]) for entry in listening}  # type: ignore[call-overload]
        yield relay
    finally:
        for client in relay.clients if relay else []:
            client.close()
        stop(process)
        assert process.stdout is not None
        process.stdout.close()
        smsc.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert process.returncode == exit_code


@contextlib.asynccontextmanager
async def in_process_relay(
    settings: SmppSettings, registry_url: str, **options: Any
) -> AsyncIterator[tuple[SmppRelay, int]]:
    """An SmppRelay of this process listening on 127.0.0.1 (OS port), over the registry
    at `registry_url` (`options`: SmppRelay's keyword arguments), and its port; unbound,
    its audit entries written and closed at the end."""
    registry = RedisRegistry.from_url(registry_url)
    service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
    keywords = Keywords.from_lists([], [], [])
    relay = SmppRelay(settings, service, registry, keywords, default_region="CN", **options)
    server = await relay.start()
    try:
        yield relay, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await relay.unbind_all()
        await service.close()  # the audit entries still queued are written
        await registry.close()


async def bound_peer(port: int, bind: type[BindReceiver] | type[BindTransceiver]) -> socket.socket:
    """A non-blocking TCP client with a 4 KiB receive buffer, bound to the relay on
    `port` as account promo (the bind answered ESME_ROK)."""
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(peer, ("127.0.0.1", port))
    request = bind(sequence_number=1, system_id="promo", password="chg-me-1")  # noqa: S106
    await loop.sock_sendall(peer, encode(request))
    answer = await asyncio.wait_for(loop.sock_recv(peer, 4096), 30)
    assert int.from_bytes(answer[8:12], "big") == 0  # the bind's response: ESME_ROK
    return peer


async def next_pdu(peer: socket.socket, framer: Framer) -> AnyPdu:
    """The next PDU the relay sends to a raw `peer` (read through `framer`), within 30 s."""
    loop = asyncio.get_running_loop()
    while (pdu := framer.next_pdu()) is None:
        data = await asyncio.wait_for(loop.sock_recv(peer, 4096), 30)
        assert data, "the relay closed the connection"
        framer.feed(data)
    return pdu
