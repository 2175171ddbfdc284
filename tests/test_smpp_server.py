"""The SMPP relay end to end: `filterd serve` as a real process, smpplib (an
independent SMPP client) as the marketing tool, a fake carrier SMSC on filterd's
codec, a real Valkey registry; with smpp.workers = 2, two processes on one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp

from filterd.config.load import load as load_config
from filterd.identity import ConsumerHasher
from filterd.keywords import Keywords
from filterd.model import ALL_SENDERS, Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import SmppSettings
from filterd.smpp import server as server_module
from filterd.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    DeliverSm,
    EnquireLink,
    Framer,
    SubmitSm,
    encode,
)
from filterd.smpp.server import SmppRelay
from filterd.storage.redis import RedisRegistry
from tests.conftest import ServerPool, flush
from tests.helpers import LogReader, RedisProcess
from tests.smsc import FakeSmsc

FILTERD = str(Path(sys.executable).parent / "filterd")
SECRET = "ef" * 32
NUMBER = "10690001"
JANE, BOB, CAROL = "8613800138000", "8613800138001", "8613800138002"


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
           workers: int = 1, *, extra: str = "") -> Path:  # fmt: skip
    """The relay config used here."""
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
""")
    return path


@pytest.fixture
def relay(server_pool: ServerPool) -> Iterator[Relay]:
    """filterd bound to a fresh fake carrier, on a flushed Valkey registry."""
    with running_relay(server_pool) as relay:
        yield relay


def free_port() -> int:
    """A loopback port that was free a moment ago (workers > 1 need a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_relay(
    server_pool: ServerPool, workers: int = 1, exit_code: int = 0, extra: str = ""
) -> Iterator[Relay]:
    """`filterd serve` with smpp.workers = `workers` (and `extra` lines in [smpp]), every
    process bound to the carrier; on exit SIGTERM, and the exit code must be `exit_code`."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smpp", dir="/tmp"))
    smsc = FakeSmsc().start()
    listen = "127.0.0.1:0" if workers == 1 else f"127.0.0.1:{free_port()}"
    path = config(home, registry_server.url, smsc.port, listen, workers, extra=extra)
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
        listening = [log.wait_for("listening") for _ in range(workers)]
        port = int(listening[0]["port"])  # type: ignore[call-overload]
        smsc.wait_bound(links=workers)
        relay = Relay(process, port, smsc, registry_server, home=home, log=log)
        relay.pids = {str(entry["role"]): int(entry["pid"]) for entry in listening}  # type: ignore[call-overload]
        yield relay
    finally:
        for client in relay.clients if relay else []:
            client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        assert process.stdout is not None
        process.stdout.close()
        smsc.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert process.returncode == exit_code


def test_decisions(relay: Relay) -> None:
    """Consented → forwarded with a message id; refused → 0x400; no consent → 0x401;
    nothing undecided reaches the carrier."""
    relay.record(JANE, Kind.CONSENT)
    relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    client = relay.client()
    kind, message_id = client.submit(JANE)
    assert kind == "ok"
    assert message_id
    assert client.submit(BOB) == ("error", 0x400)
    assert client.submit(CAROL) == ("error", 0x401)
    [forwarded] = relay.smsc.wait_submits(1)
    assert (forwarded.destination_addr, forwarded.short_message) == (JANE, b"hello")


def test_transactional_and_invalid_destination(relay: Relay) -> None:
    """A transactional account is forwarded without consent; an invalid number → 0x0B."""
    client = relay.client("notify", "notify-1")
    assert client.submit(CAROL)[0] == "ok"
    assert client.submit("12345") == ("error", 0x0B)


def test_wrong_password_is_refused_and_closed(relay: Relay) -> None:
    """A wrong password gets ESME_RINVPASWD (0x0E) and the connection is closed."""
    smpp = smpplib.client.Client("127.0.0.1", relay.port, timeout=10, allow_unknown_opt_params=True)
    smpp.connect()
    with pytest.raises(smpplib.exceptions.PDUError) as error:
        smpp.bind_transceiver(system_id="promo", password="wrong")  # noqa: S106
    assert error.value.args[1] == 0x0E
    with pytest.raises((smpplib.exceptions.ConnectionError, OSError)):
        smpp.read_pdu()  # the server has closed the connection
    smpp.disconnect()


def _wrong_bind(relay: Relay) -> None:
    """One bind with a wrong password, answered 0x0E."""
    smpp = smpplib.client.Client("127.0.0.1", relay.port, timeout=40, allow_unknown_opt_params=True)
    smpp.connect()
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as error:
            smpp.bind_transmitter(system_id="promo", password="guess")  # noqa: S106
        assert error.value.args[1] == 0x0E
    finally:
        smpp.disconnect()


def test_failed_binds_make_every_next_bind_from_that_peer_wait(relay: Relay) -> None:
    """After a wrong password, the peer's next bind, right or wrong, is checked only
    after the back-off (0.5 s, doubling per failure); a successful bind clears the
    peer's record, so the next failure starts afresh."""
    assert relay.log is not None
    _wrong_bind(relay)  # the first failure: judged at once
    _wrong_bind(relay)  # waits 0.5 s
    relay.client()  # the right password: waits 1 s, is accepted, clears the record
    _wrong_bind(relay)  # judged at once again
    _wrong_bind(relay)  # waits 0.5 s
    delays = [relay.log.wait_for("login_delayed")["delay_s"] for _ in range(3)]
    assert delays == [0.5, 1.0, 0.5]


def test_sighup_reloads_accounts_without_dropping_binds(relay: Relay) -> None:
    """A new [[smpp.accounts]] entry works after SIGHUP, and a client bound before
    the reload stays bound and keeps submitting."""
    assert relay.home is not None
    assert relay.log is not None
    before = relay.client()
    config_path = relay.home / "filterd.toml"
    config_path.write_text(
        config_path.read_text() + '\n[[smpp.accounts]]\nsystem_id = "late"\npassword = "late-pw1"\n'
        'sender = "acme"\nstream = "transactional"\n'
    )
    relay.process.send_signal(signal.SIGHUP)
    assert relay.log.wait_for("reloaded")["restart_needed"] is None
    after = relay.client(system_id="late", password="late-pw1")  # noqa: S106
    assert after.submit(JANE)[0] == "ok"  # transactional: delivered
    assert before.submit(JANE) == ("error", 0x401)  # still bound: decided (no consent)
    assert relay.process.poll() is None


def test_submit_before_bind(relay: Relay) -> None:
    """A submit_sm on an unbound connection gets ESME_RINVBNDSTS (0x04)."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(encode(SubmitSm(sequence_number=7, destination_addr=JANE)))
        framer = Framer()
        while (pdu := framer.next_pdu()) is None:
            framer.feed(sock.recv(4096))
        assert (pdu.command_status, pdu.sequence_number) == (0x04, 7)


def ucs2_parts(text: str, reference: bytes, sixteen_bit: bool = False) -> list[bytes]:
    """A 3-part UCS2 message with a concatenation UDH (8- or 16-bit reference)."""
    data = text.encode("utf-16-be")
    size = -(-len(data) // 3) + (-(-len(data) // 3)) % 2
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        if sixteen_bit:
            udh = b"\x06\x08\x04" + reference + bytes([len(chunks), seq])
        else:
            udh = b"\x05\x00\x03" + reference + bytes([len(chunks), seq])
        parts.append(udh + chunk)
    return parts


LONG = "尊敬的客户，您好！本店春季大促销活动现已开始，全场商品八折优惠，欢迎光临选购。" * 3


@pytest.mark.parametrize("sixteen_bit", [False, True])
def test_concatenated_ucs2_one_decision(relay: Relay, sixteen_bit: bool) -> None:
    """All parts of a 3-part UCS2 Chinese message get one decision: all rejected for a
    refused number; for a consented one all forwarded byte for byte (UDH intact), even
    when a refusal lands between the parts."""
    relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    relay.record(JANE, Kind.CONSENT)
    client = relay.client()
    reference = b"\x12\x34" if sixteen_bit else b"\x42"
    refused = [
        client.submit(BOB, part, esm_class=0x40, data_coding=8)
        for part in ucs2_parts(LONG, reference, sixteen_bit)
    ]
    assert refused == [("error", 0x400)] * 3
    parts = ucs2_parts(LONG, reference, sixteen_bit)
    assert client.submit(JANE, parts[0], esm_class=0x40, data_coding=8)[0] == "ok"
    relay.record(JANE, Kind.REFUSAL, "acme")  # after the first part: same message, same decision
    for part in parts[1:]:
        assert client.submit(JANE, part, esm_class=0x40, data_coding=8)[0] == "ok"
    forwarded = relay.smsc.wait_submits(3)
    assert [p.short_message for p in forwarded] == parts
    assert {(p.esm_class, p.data_coding) for p in forwarded} == {(0x40, 8)}
    assert client.submit(JANE, b"a new message") == ("error", 0x400)


@pytest.mark.parametrize(
    ("text", "coding"),
    [
        ("退订", 8),
        ("ＴＤ", 8),
        ("td。", 8),
        ("Stop", 0),
        ("STOP please", 0),
    ],
)
def test_opt_out_keyword_records_refusal_and_confirms(relay: Relay, text: str, coding: int) -> None:
    """An opt-out reply records a refusal for the number's sender (channel sms) before the
    carrier gets its deliver_sm_resp, and a confirmation goes back to the consumer."""
    relay.record(JANE, Kind.CONSENT)
    payload = text.encode("utf-16-be") if coding == 8 else text.encode("ascii")
    assert relay.smsc.send_mo(JANE, NUMBER, payload, data_coding=coding) == 0
    assert ("refusal", "acme", "sms-keyword") in relay.facts(JANE)
    [confirmation] = relay.smsc.wait_submits(1)
    assert (confirmation.source_addr, confirmation.destination_addr) == (NUMBER, JANE)
    client = relay.client()
    assert client.submit(JANE) == ("error", 0x400)


def test_start_after_stop(relay: Relay) -> None:
    """START after STOP records a consent (the reply as evidence): sending resumes."""
    assert relay.smsc.send_mo(BOB, NUMBER, b"STOP") == 0
    client = relay.client()
    assert client.submit(BOB) == ("error", 0x400)
    assert relay.smsc.send_mo(BOB, NUMBER, b"START") == 0
    assert client.submit(BOB)[0] == "ok"


def test_mo_and_receipts_reach_the_client(relay: Relay) -> None:
    """A receipt comes back to the submitting client with the client's message id;
    an MO to the account's number is passed on to its receiver bind."""
    relay.record(JANE, Kind.CONSENT)
    client = relay.client()
    _, client_id = client.submit(JANE)
    relay.smsc.wait_submits(1)
    assert relay.smsc.send_receipt("c1") == 0
    while not client.received:
        client.smpp.read_once()
    receipt = client.received.pop()
    assert f"id:{client_id.decode() if isinstance(client_id, bytes) else client_id}".encode() in (
        receipt.short_message
    )
    assert relay.smsc.send_mo(JANE, NUMBER, b"hello there") == 0
    while not client.received:
        client.smpp.read_once()
    assert client.received.pop().short_message == b"hello there"


def test_carrier_down_then_up(relay: Relay) -> None:
    """Carrier down: submits get ESME_RMSGQFUL (0x14), never dropped silently; the relay
    rebinds by itself when the carrier is back."""
    relay.record(JANE, Kind.CONSENT)
    client = relay.client()
    relay.smsc.stop()
    assert client.submit(JANE) == ("error", 0x14)
    relay.smsc.start()
    relay.smsc.wait_bound(60)
    assert client.submit(JANE)[0] == "ok"


def test_registry_down_throttles(relay: Relay, server_pool: ServerPool) -> None:
    """Registry down: ESME_RTHROTTLED (0x58) so the client retries; back: decided again."""
    relay.record(JANE, Kind.CONSENT)
    client = relay.client()
    relay.registry_server.kill()
    assert client.submit(JANE) == ("error", 0x58)
    server_pool.get("valkey")
    assert client.submit(JANE)[0] == "ok"


def test_unknown_response_from_client_is_ignored(relay: Relay) -> None:
    """A client's unknown response PDU does not end its session: enquire_link still answered."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        bind = BindTransceiver(sequence_number=1, system_id="promo", password="chg-me-1")  # noqa: S106
        sock.sendall(encode(bind))
        sock.sendall((16).to_bytes(4, "big") + (0x80000021).to_bytes(4, "big") + bytes(8))
        sock.sendall(encode(EnquireLink(sequence_number=2)))
        framer = Framer()
        answers = []
        while len(answers) < 2:
            framer.feed(sock.recv(4096))
            while (pdu := framer.next_pdu()) is not None:
                answers.append(pdu)
        assert [(type(p).__name__, p.command_status) for p in answers] == [
            ("BindTransceiverResp", 0), ("EnquireLinkResp", 0),
        ]  # fmt: skip


def test_parts_sent_together_share_one_decision(relay: Relay) -> None:
    """Parts of one message submitted back to back (all in flight at once) get one
    decision: all forwarded, or all refused."""
    relay.record(JANE, Kind.CONSENT)
    client = relay.client()
    parts = ucs2_parts(LONG, b"\x77")
    for part in parts:
        client.send(JANE, part, esm_class=0x40, data_coding=8)
    answers = [client.answer() for _ in parts]
    assert [kind for kind, _ in answers] == ["ok"] * 3
    assert len(relay.smsc.wait_submits(3)) == 3


# ---- smpp.workers = 2: two processes on one port, deliveries through the hub ------------


@pytest.fixture
def workers(server_pool: ServerPool) -> Iterator[Relay]:
    """filterd with smpp.workers = 2 (the main process and one worker) on one fixed port,
    each process bound to the fake carrier."""
    with running_relay(server_pool, workers=2) as relay:
        yield relay


def client_on(relay: Relay, pid: int, tries: int = 64) -> Client:
    """A bound transceiver client served by process `pid` (told by the pid of the "bound"
    log line); clients that land on the other process are closed again."""
    assert relay.log is not None
    for _ in range(tries):
        client = relay.client()
        if relay.log.wait_for("bound")["pid"] == pid:
            return client
        relay.clients.remove(client)
        client.close()
    raise AssertionError(f"no client landed on process {pid} in {tries} binds")


def read_deliveries(client: Client, count: int) -> list[Any]:
    """Read until the client has received `count` deliver_sm; return and clear them."""
    while len(client.received) < count:
        client.smpp.read_once()
    received, client.received[:] = list(client.received), []
    return received


def text_id(message_id: str | bytes) -> bytes:
    """A message id as smpplib gives it, in bytes."""
    return message_id if isinstance(message_id, bytes) else message_id.encode()


def test_two_processes_share_the_smpp_port(workers: Relay) -> None:
    """With smpp.workers = 2 the main process and one worker both listen on the one port
    and both bind to the carrier; clients land on each (told apart by the pid of the
    "bound" log line), and a submit through either is relayed to the carrier."""
    workers.record(JANE, Kind.CONSENT)
    assert set(workers.pids) == {"main", "smpp-worker"}
    assert workers.smsc.links == 2
    for pid in workers.pids.values():
        client = client_on(workers, pid)
        assert client.submit(JANE)[0] == "ok"
        client.close()
    forwarded = workers.smsc.wait_submits(2)
    assert [p.destination_addr for p in forwarded] == [JANE, JANE]


def test_receipts_and_mo_reach_a_client_in_the_other_process(workers: Relay) -> None:
    """The client's receiver bind is in one process; a receipt and an MO sent on each
    process's carrier bind both reach it: the copy that arrives in the other process is
    passed on through the parent's hub. True with the client in the main process and
    with the client in the worker."""
    workers.record(JANE, Kind.CONSENT)
    for round_, pid in enumerate(workers.pids.values(), 1):
        client = client_on(workers, pid)
        _, client_id = client.submit(JANE)
        workers.smsc.wait_submits(round_)
        for link in range(2):
            assert workers.smsc.send_receipt(f"c{round_}", link=link) == 0
        receipts = read_deliveries(client, 2)
        assert all(b"id:" + text_id(client_id) in r.short_message for r in receipts)
        for link in range(2):
            assert workers.smsc.send_mo(JANE, NUMBER, b"hello there", link=link) == 0
        assert [p.short_message for p in read_deliveries(client, 2)] == [b"hello there"] * 2
        workers.clients.remove(client)
        client.close()


def test_killed_worker_is_restarted_and_clients_bind_again(workers: Relay) -> None:
    """kill -9 of the SMPP worker: its clients lose the connection, `filterd serve` starts
    a new worker, which listens, binds to the carrier and joins the hub: a client that
    binds again on it submits, and its receipts arrive whichever carrier bind they take."""
    assert workers.log is not None
    workers.record(JANE, Kind.CONSENT)
    old = workers.pids["smpp-worker"]
    victim = client_on(workers, old)
    os.kill(old, signal.SIGKILL)
    with pytest.raises((smpplib.exceptions.ConnectionError, OSError)):
        victim.smpp.read_pdu()
    died = workers.log.wait_for("worker_died")
    assert (died["front_end"], died["pid"]) == ("smpp", old)
    restarted = workers.log.wait_for("listening")
    assert restarted["role"] == "smpp-worker"
    assert restarted["pid"] != old
    workers.smsc.wait_bound(links=2, total=3)
    client = client_on(workers, int(restarted["pid"]))  # type: ignore[call-overload]
    kind, client_id = client.submit(JANE)
    assert kind == "ok"
    [forwarded] = workers.smsc.wait_submits(1)
    assert forwarded.destination_addr == JANE
    for link in range(2):
        assert workers.smsc.send_receipt("c1", link=link) == 0
    receipts = read_deliveries(client, 2)
    assert all(b"id:" + text_id(client_id) in r.short_message for r in receipts)


def test_sigterm_drains_every_process(workers: Relay) -> None:
    """SIGTERM to `filterd serve` with a client on each process: both processes drain
    their SMPP front end (logged with their pids), the worker exits, and filterd exits 0."""
    assert workers.log is not None
    for pid in workers.pids.values():
        client_on(workers, pid)
    workers.process.send_signal(signal.SIGTERM)
    drained = [workers.log.wait_for("drained") for _ in range(2)]
    assert {entry["pid"] for entry in drained} == set(workers.pids.values())
    assert workers.process.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(workers.pids["smpp-worker"], 0)


def test_worker_exits_when_main_is_killed(server_pool: ServerPool) -> None:
    """kill -9 of `filterd serve`: its SMPP worker is told by the parent-death signal and
    exits by itself; nothing is left serving the port."""
    with running_relay(server_pool, workers=2, exit_code=-signal.SIGKILL) as relay:
        pidfd = os.pidfd_open(relay.pids["smpp-worker"])
        try:
            relay.process.kill()
            relay.process.wait(30)
            assert select.select([pidfd], [], [], 30)[0] == [pidfd], "the worker still runs"
        finally:
            os.close(pidfd)


MO = DeliverSm(
    sequence_number=9, source_addr_ton=1, source_addr="8613800138000",
    destination_addr="10690001", short_message=b"hello there",
)  # fmt: skip


@contextlib.asynccontextmanager
async def in_process_relay(
    settings: SmppSettings, registry_url: str
) -> AsyncIterator[tuple[SmppRelay, int]]:
    """An SmppRelay of this process listening on 127.0.0.1 (OS port), over the registry
    at `registry_url`, and its port; unbound and closed at the end."""
    registry = RedisRegistry.from_url(registry_url)
    service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
    keywords = Keywords.from_lists([], [], [])
    relay = SmppRelay(settings, service, registry, keywords, default_region="CN")
    server = await relay.start()
    try:
        yield relay, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await relay.unbind_all()
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


def test_a_receiver_that_stops_reading_gets_no_more_than_the_backlog(
    valkey_server: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client bound as receiver that never reads (a real TCP peer with a small
    receive buffer): deliver_sm for it are queued up to DELIVER_BACKLOG bytes, then
    refused for that bind (deliver_local False: undeliverable, logged), so filterd's
    buffer for it stays bounded."""
    monkeypatch.setattr(server_module, "DELIVER_BACKLOG", 64 * 1024)
    settings = load_config(config(tmp_path, valkey_server.url, free_port()))
    smpp = settings.smpp
    assert smpp is not None

    async def scenario() -> tuple[int, int]:
        async with in_process_relay(smpp, valkey_server.url) as (relay, port):
            peer = await bound_peer(port, BindReceiver)
            [session] = relay.sessions
            assert session.receives
            sent = 0
            while relay.deliver_local("promo", MO):
                sent += 1
                assert sent < 200_000, "the backlog is not bounded"
                if sent % 100 == 0:
                    await asyncio.sleep(0)  # let the transport write what the kernel takes
            waiting = session.writer.transport.get_write_buffer_size()
            peer.close()
            return sent, waiting

    sent, waiting = asyncio.run(scenario())
    assert sent > 0
    assert 64 * 1024 <= waiting < 64 * 1024 + len(encode(MO)) + 64


def test_a_client_that_does_not_read_its_answers_is_not_read_either(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """A transceiver that sends 200,000 enquire_link without reading the answers (a real
    TCP peer with a small receive buffer): filterd stops reading it once its answers
    pass the write buffer's high-water mark, so they stay bounded (not 3 MB of answers in
    memory); when the client reads again every request gets its one answer."""
    settings = load_config(config(tmp_path, valkey_server.url, free_port()))
    smpp = settings.smpp
    assert smpp is not None
    requests = 200_000
    links = b"".join(encode(EnquireLink(sequence_number=n)) for n in range(2, requests + 2))

    async def scenario() -> tuple[int, int]:
        async with in_process_relay(smpp, valkey_server.url) as (relay, port):
            return await flood(relay, port)

    async def flood(relay: SmppRelay, port: int) -> tuple[int, int]:
        peer = await bound_peer(port, BindTransceiver)
        loop = asyncio.get_running_loop()
        [session] = relay.sessions
        # a small kernel send buffer on filterd's side too, so that what the kernel does
        # not take waits in filterd's own buffer (loopback would take megabytes)
        own = session.writer.get_extra_info("socket")
        own.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sending = loop.create_task(loop.sock_sendall(peer, links))
        most = 0
        for _ in range(200):  # 2 s of not reading
            await asyncio.sleep(0.01)
            most = max(most, session.writer.transport.get_write_buffer_size())
        received = bytearray()
        while len(received) < requests * 16:  # enquire_link_resp: a 16-octet header
            chunk = await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), 30)
            assert chunk, "filterd closed the connection"
            received += chunk
        await sending
        answers = {int.from_bytes(received[i + 12 : i + 16], "big")
                   for i in range(0, len(received), 16)}  # fmt: skip
        peer.close()
        return most, len(answers)

    most, answered = asyncio.run(scenario())
    assert most <= 256 * 1024, f"{most:,} octets of answers waited for a client not reading"
    assert answered == requests


def _raw_bind(port: int, password: str) -> tuple[socket.socket, float, int]:
    """Send a bind_transceiver on a new connection; (socket, seconds to its answer, status)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=40)
    bind = BindTransceiver(sequence_number=1, system_id="promo", password=password)
    started = time.monotonic()
    sock.sendall(encode(bind))
    framer = Framer()
    while (pdu := framer.next_pdu()) is None:
        chunk = sock.recv(4096)
        assert chunk, "closed without an answer"
        framer.feed(chunk)
    return sock, time.monotonic() - started, pdu.command_status


def test_after_a_failure_a_right_password_is_not_answered_sooner(relay: Relay) -> None:
    """The timing oracle is closed: after one wrong password from an address, a bind
    with the right password (on a new connection) is answered only after the back-off,
    as a wrong one would be; so a client that gives up early learns nothing."""
    wrong, took, status = _raw_bind(relay.port, "guess-1")
    assert status == 0x0E
    wrong.close()
    right, took, status = _raw_bind(relay.port, "chg-me-1")
    assert status == 0
    assert took >= 0.5  # a lower bound: the gate sleeps at least the back-off
    right.close()


def test_connection_caps_and_idle_timeout(server_pool: ServerPool) -> None:
    """Beyond max_connections_per_address a connection is closed at once, nothing said;
    a silent connection is closed after idle_timeout; a bound client whose only traffic
    is enquire_link stays bound past it."""
    extra = 'idle_timeout = "1s"\nmax_connections_per_address = 2'
    with running_relay(server_pool, extra=extra) as relay:
        bound = relay.client()
        silent = socket.create_connection(("127.0.0.1", relay.port), timeout=15)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as third:
            assert third.recv(1024) == b""
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # past the idle timeout, talking all along
            bound.smpp.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=bound.smpp))
            bound.smpp.read_pdu()
            time.sleep(0.25)
        assert silent.recv(1024) == b""
        silent.close()
        assert bound.submit(JANE) == ("error", 0x401)  # still bound, still judged
