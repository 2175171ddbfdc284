"""The Postfix policy service (filterd/policy_service.py): a real listening server on
127.0.0.1 (port 0) against a real Valkey registry, driven by a client that speaks the
protocol byte for byte (http://www.postfix.org/SMTPD_POLICY_README.html), and finally
by a real Postfix smtpd when Debian's `postfix` package is installed. The wire format
alone is tested in test_policy_wire.py, the answers alone in test_policy_rules.py."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog

from filterd import logs
from filterd.accounts import AccountBook
from filterd.compliance import QuietRule
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.model import ALL_SENDERS, Channel, FactRequest, Kind, MessageClass
from filterd.normalize import normalize
from filterd.policy_service import start_policy_server
from filterd.policy_wire import MAX_ATTRIBUTES, MAX_LINE
from filterd.quiet_hours import parse_window
from filterd.service import Service
from filterd.settings import ListenerLimits, SmtpAccount
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess
from tests.policy_helpers import BOB, CAROL, JANE, request

TIMEOUT = 10.0
"""Bound on every wait for a reply or a close."""
SECRET = b"p" * 32
REFUSED_BOB = f"550 5.7.1 <{BOB}>: recipient has refused commercial messages"
NO_CONSENT_CAROL = f"550 5.7.1 <{CAROL}>: no consent or request on record"
NO_ACCOUNT = "554 5.7.1 client is not allowed to send through filterd (no account)"
UNAVAILABLE = "451 4.3.0 consent registry unavailable, try again later"

ACCOUNTS = AccountBook(
    [
        SmtpAccount("newsletter", "acme", MessageClass.COMMERCIAL, password="pw-news"),  # noqa: S106
        SmtpAccount("receipts", "acme", MessageClass.TRANSACTIONAL, password="pw-rcpt"),  # noqa: S106
        SmtpAccount(
            "legacy-tool",
            "beta",
            MessageClass.COMMERCIAL,
            networks=(ipaddress.ip_network("10.1.2.0/24"),),
        ),
    ]
)


# ---- a real server against a real registry ----------------------------------------------


class Client:
    """A policy client over a raw asyncio stream: writes bytes, reads `action=` replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        """Open a connection to the policy server."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> str:
        """The next reply's action (the reply must be exactly `action=...\\n\\n`)."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), TIMEOUT)
        assert raw.startswith(b"action=")
        assert raw.count(b"\n") == 2
        return raw[len(b"action=") : -2].decode("utf-8", "surrogateescape")

    async def ask(self, data: bytes) -> str:
        """Send one request and return its action."""
        await self.send(data)
        return await self.reply()

    async def closed_by_server(self) -> bool:
        """True when the server closes the connection (EOF or reset) with nothing more sent."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except ConnectionResetError:
            return True
        return rest == b""

    async def close(self) -> None:
        """Close our side."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class Rig:
    """A policy server on 127.0.0.1 with its Service and Valkey registry."""

    runner: asyncio.Runner
    registry_server: RedisProcess
    registry: RedisRegistry
    service: Service
    server: asyncio.Server

    @property
    def port(self) -> int:
        """The port the OS gave the policy server."""
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's event loop."""
        return self.runner.run(coroutine)

    def record(self, address: str, kind: Kind, sender: str = "acme") -> None:
        """Write a fact (channel email; a global refusal covers every channel)."""
        channel = None if sender == ALL_SENDERS else Channel.EMAIL
        fact = FactRequest(normalize(address), kind, sender, channel, "test")
        self.run(self.service.record(fact, origin="test"))

    def ask(self, *requests: bytes) -> list[str]:
        """Send the requests one after another on one new connection; their actions."""

        async def go() -> list[str]:
            client = await Client.connect(self.port)
            try:
                return [await client.ask(r) for r in requests]
            finally:
                await client.close()

        answers: list[str] = self.run(go())
        return answers

    def drops(self) -> list[tuple[str, str | None, str | None, str | None, str | None]]:
        """(event, reason, origin, message_id, consumer) of audit drops and deferrals
        (after the service's queued audit entries are written)."""
        self.run(self.service.flush_audit())
        entries = self.run(self.registry.read_audit(AuditQuery(limit=100)))
        return [
            (e.event, e.reason, e.origin, e.message_id, e.consumer)
            for e in entries
            if e.event in ("drop", "defer")
        ]

    def consumer(self, address: str) -> str:
        """The audit log's hash of an address."""
        return consumer_hex(self.service.hasher.consumer_id(normalize(address)))


@pytest.fixture
def rig(valkey_server: RedisProcess, event_loop_runner: asyncio.Runner) -> Iterator[Rig]:
    """A running policy server: consent for jane, a refusal for bob (both sender acme)."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600)
    server = event_loop_runner.run(
        start_policy_server(("127.0.0.1", 0), service, ACCOUNTS, default_region="CN")
    )
    rig = Rig(event_loop_runner, valkey_server, registry, service, server)
    rig.record(JANE, Kind.CONSENT)
    rig.record(BOB, Kind.REFUSAL)
    yield rig
    server.close()
    event_loop_runner.run(asyncio.wait_for(server.wait_closed(), TIMEOUT))
    event_loop_runner.run(registry.close())


def test_consented_recipient_is_dunno(rig: Rig) -> None:
    """A recipient who consented to the account's sender gets action=DUNNO, no audit."""
    assert rig.ask(request(JANE)) == ["DUNNO"]
    assert rig.drops() == []


def test_refused_recipient_gets_550_and_audit(rig: Rig) -> None:
    """A refusal gives the SMTP relay's exact 550 text; the drop is audited with the
    reason, origin policy, Postfix's queue_id as message id and the consumer hash."""
    assert rig.ask(request(BOB, queue_id="3F2A1C0D")) == [REFUSED_BOB]
    assert rig.drops() == [("drop", "refused", "policy", "3F2A1C0D", rig.consumer(BOB))]


def test_no_consent_gets_550_and_audit(rig: Rig) -> None:
    """No fact at all gives the exact no-consent 550 text and one audit entry; an empty
    queue_id (Postfix's first recipient) means no message id."""
    assert rig.ask(request(CAROL)) == [NO_CONSENT_CAROL]
    assert rig.drops() == [("drop", "no_consent", "policy", None, rig.consumer(CAROL))]


def test_global_refusal_drops_for_every_sender(rig: Rig) -> None:
    """A global refusal newer than acme's consent drops for acme and for every other
    sender (here beta, through a network account)."""
    rig.record(JANE, Kind.REFUSAL, sender=ALL_SENDERS)
    refused = f"550 5.7.1 <{JANE}>: recipient has refused commercial messages"
    assert rig.ask(request(JANE)) == [refused]
    assert rig.ask(request(JANE, sasl_username="", client_address="10.1.2.7")) == [refused]


def test_transactional_account_is_dunno(rig: Rig) -> None:
    """A transactional account's recipients are delivered, refused or not; nothing audited."""
    answers = rig.ask(*(request(r, sasl_username="receipts") for r in (JANE, BOB, CAROL)))
    assert answers == ["DUNNO", "DUNNO", "DUNNO"]
    assert rig.drops() == []


def test_account_from_sasl_username_then_client_address(rig: Rig) -> None:
    """sasl_username picks the account (sender acme); when it is empty the client address
    picks a network account (sender beta, who has no consent from jane); neither → 554.
    An unknown sasl_username is not rescued by a known client address."""
    assert rig.ask(
        request(JANE, sasl_username="newsletter", client_address="192.0.2.1"),
        request(JANE, sasl_username="", client_address="10.1.2.7"),
        request(JANE, sasl_username="", client_address="::ffff:10.1.2.99"),
        request(JANE, sasl_username="", client_address="192.0.2.1"),
        request(JANE, sasl_username="intruder", client_address="10.1.2.7"),
        request(JANE, sasl_username="", client_address="unknown"),
    ) == [
        "DUNNO",
        f"550 5.7.1 <{JANE}>: no consent or request on record",
        f"550 5.7.1 <{JANE}>: no consent or request on record",
        NO_ACCOUNT,
        NO_ACCOUNT,
        NO_ACCOUNT,
    ]


@pytest.mark.parametrize(
    "state", ["CONNECT", "EHLO", "HELO", "MAIL", "DATA", "END-OF-MESSAGE", "VRFY", "ETRN"]
)
def test_other_protocol_states_are_dunno(rig: Rig, state: str) -> None:
    """Outside RCPT the answer is DUNNO, even for a refused recipient and without an
    account, and nothing is audited."""
    assert rig.ask(request(BOB, state=state, sasl_username="", client_address="192.0.2.1")) == [
        "DUNNO"
    ]
    assert rig.drops() == []


def test_empty_request_is_dunno(rig: Rig) -> None:
    """A bare empty line is answered DUNNO and the connection stays usable."""
    assert rig.ask(b"\n", request(BOB)) == ["DUNNO", REFUSED_BOB]


def test_many_requests_on_one_connection(rig: Rig) -> None:
    """One persistent connection carries many requests: sequentially, pipelined in one
    write, and split at every possible byte; replies come back in order."""
    order = [JANE, BOB, CAROL, JANE, BOB]
    expected = ["DUNNO", REFUSED_BOB, NO_CONSENT_CAROL, "DUNNO", REFUSED_BOB]

    async def go() -> None:
        client = await Client.connect(rig.port)
        for _ in range(3):
            assert [await client.ask(request(r)) for r in order] == expected
        await client.send(b"".join(request(r) for r in order))
        assert [await client.reply() for _ in order] == expected
        data = request(CAROL)
        for index in range(len(data)):
            await client.send(data[index : index + 1])
        assert await client.reply() == NO_CONSENT_CAROL
        await client.close()

    rig.run(go())


def test_many_concurrent_connections(rig: Rig) -> None:
    """Forty connections at once, twenty requests each, all answered correctly."""
    cycle = [(JANE, "DUNNO"), (BOB, REFUSED_BOB), (CAROL, NO_CONSENT_CAROL)]

    async def one(shift: int) -> list[bool]:
        client = await Client.connect(rig.port)
        results = []
        for index in range(20):
            recipient, expected = cycle[(index + shift) % 3]
            results.append(await client.ask(request(recipient)) == expected)
        await client.close()
        return results

    async def go() -> list[list[bool]]:
        return list(await asyncio.gather(*(one(n) for n in range(40))))

    assert all(all(r) for r in rig.run(go()))


@pytest.mark.parametrize(
    "garbage",
    [
        b"protocol_state=RCPT\nthis line has no equals sign\n\n",
        b"recipient=" + b"x" * (MAX_LINE + 1) + b"\n\n",
        b"recipient=" + b"x" * 100_000,
        b"".join(b"a%d=b\n" % n for n in range(MAX_ATTRIBUTES + 1)) + b"\n",
    ],
    ids=["no-equals", "overlong-line", "overlong-unterminated", "too-many-attributes"],
)
def test_malformed_input_closes_connection_only(rig: Rig, garbage: bytes) -> None:
    """Malformed input closes that connection without a reply; other connections, open
    before or after, keep working."""

    async def go() -> None:
        bystander = await Client.connect(rig.port)
        assert await bystander.ask(request(JANE)) == "DUNNO"
        offender = await Client.connect(rig.port)
        with contextlib.suppress(ConnectionError):
            await offender.send(garbage)
        assert await offender.closed_by_server()
        await offender.close()
        assert await bystander.ask(request(BOB)) == REFUSED_BOB
        fresh = await Client.connect(rig.port)
        assert await fresh.ask(request(CAROL)) == NO_CONSENT_CAROL
        await fresh.close()
        await bystander.close()

    rig.run(go())


def test_requests_before_garbage_are_answered(rig: Rig) -> None:
    """A request pipelined before a malformed line is answered, then the connection closes."""

    async def go() -> None:
        client = await Client.connect(rig.port)
        await client.send(request(BOB) + b"junk\n\n")
        assert await client.reply() == REFUSED_BOB
        assert await client.closed_by_server()
        await client.close()

    rig.run(go())


def test_client_leaving_mid_request(rig: Rig) -> None:
    """A client that disconnects halfway through a request costs nothing: the server goes
    on answering others."""

    async def go() -> None:
        for cut in (1, 50, len(request()) - 1):
            quitter = await Client.connect(rig.port)
            await quitter.send(request(BOB)[:cut])
            quitter.writer.transport.abort()
            await quitter.close()
        client = await Client.connect(rig.port)
        assert await client.ask(request(BOB)) == REFUSED_BOB
        await client.close()

    rig.run(go())


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        (b"not-an-address", "not an email address"),
        (b"jane@", "the domain must be a host name"),
        (b"@example.com", "an email address needs a local part and a domain"),
        (b"jane@localhost", "the domain needs at least two labels"),
        (b"ja ne@example.com", "empty, or has spaces or control characters"),
        (b"+8613800138000", "not an email address"),
        (b"", "not an email address"),
        (b"j\xffne@example.com", "not valid UTF-8"),
    ],
)
def test_invalid_recipient_gets_553(rig: Rig, recipient: bytes, reason: str) -> None:
    """An invalid recipient gets `553 5.1.3 <addr>: reason` (the relay's BAD_ADDRESS and
    admission rules), the address echoed ASCII-safe with undecodable bytes as `?`
    (never the client's raw bytes); nothing is looked up or audited."""
    shown = recipient.decode("ascii", "replace").replace("\ufffd", "?")
    assert rig.ask(request(recipient)) == [f"553 5.1.3 <{shown}>: {reason}"]
    assert rig.drops() == []


def test_registry_down_then_back(rig: Rig) -> None:
    """With the registry killed, RCPT gets the exact 451 and the connection stays open;
    after a restart the same server, connection and Service decide again, and the
    deferrals are in the audit log."""

    async def go() -> None:
        client = await Client.connect(rig.port)
        assert await client.ask(request(BOB)) == REFUSED_BOB
        await asyncio.to_thread(rig.registry_server.kill)
        assert await client.ask(request(BOB)) == UNAVAILABLE
        assert await client.ask(request(JANE)) == UNAVAILABLE
        assert await client.ask(request(JANE, state="MAIL")) == "DUNNO"
        assert await client.ask(request(JANE, sasl_username="receipts")) == "DUNNO"
        await asyncio.to_thread(rig.registry_server.start)
        assert await client.ask(request(JANE)) == "DUNNO"
        assert await client.ask(request(BOB)) == REFUSED_BOB
        await client.close()

    rig.run(go())
    # the deferrals made while the registry was down are audited once it is back; an entry
    # whose write was cut by the kill may be written twice (at least once, never lost)
    counts = collections.Counter(d[:2] for d in rig.drops())
    assert set(counts) == {("defer", "registry_unavailable"), ("drop", "refused")}
    assert counts[("defer", "registry_unavailable")] >= 2
    assert counts[("drop", "refused")] >= 2


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """filterd's logs as JSON lines in a buffer; logging configuration restored after."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_mail_level = logging.getLogger("mail.log").level
    stream = io.StringIO()
    logs.configure(stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger("mail.log").setLevel(saved_mail_level)
    structlog.configure(**saved_structlog)


def test_logs_mask_addresses(rig: Rig, captured_logs: io.StringIO) -> None:
    """Decisions, refusals and protocol errors are logged with masked addresses only."""
    rig.ask(request(BOB), request(CAROL, sasl_username="intruder"), request(b"jane@"))

    async def garbage() -> None:
        client = await Client.connect(rig.port)
        await client.send(b"recipient=" + BOB.encode() + b"\nno-equals\n\n")
        assert await client.closed_by_server()
        await client.close()

    rig.run(garbage())
    events = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    decision = next(e for e in events if e["event"] == "decision")
    assert (decision["recipient"], decision["origin"]) == ("b***@example.com", "policy")
    refused = [e for e in events if e["event"] == "policy_refused"]
    assert [(e["reply"], e["recipient"]) for e in refused] == [
        ("554", "c***@example.com"),
        ("553", "j***@"),
    ]
    error = next(e for e in events if e["event"] == "policy_protocol_error")
    assert error["error"] == "a line without '='"
    text = captured_logs.getvalue()
    for raw in (BOB, CAROL, 'jane@"'):
        assert raw not in text


class GatedService(Service):
    """A real Service whose screening (screen_soon, the policy service's path) waits for
    a gate: a request held in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.held: set[asyncio.Task[None]] = set()

    def screen_soon(self, *args: Any, **kwargs: Any) -> None:
        """Signal entry; screen for real once the gate opens."""
        self.entered.set()
        screen_soon = super().screen_soon

        async def when_open() -> None:
            await self.gate.wait()
            screen_soon(*args, **kwargs)

        task = asyncio.get_running_loop().create_task(when_open())
        self.held.add(task)
        task.add_done_callback(self.held.discard)


def test_close_finishes_the_request_in_flight(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """server.close() stops accepting and closes idle connections at once; the request
    in flight is answered, then its connection closes; wait_closed() returns only then."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = GatedService(registry, ConsumerHasher(SECRET), request_ttl_s=3600)

    async def go() -> None:
        server = await start_policy_server(("127.0.0.1", 0), service, ACCOUNTS, default_region=None)
        port = server.sockets[0].getsockname()[1]
        idle = await Client.connect(port)
        assert await idle.ask(request(state="CONNECT")) == "DUNNO"
        busy = await Client.connect(port)
        await busy.send(request(CAROL))
        await asyncio.wait_for(service.entered.wait(), TIMEOUT)
        server.close()
        closing = asyncio.create_task(server.wait_closed())
        assert await idle.closed_by_server()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        assert not closing.done()
        service.gate.set()
        assert await busy.reply() == NO_CONSENT_CAROL
        assert await busy.closed_by_server()
        await asyncio.wait_for(closing, TIMEOUT)
        await idle.close()
        await busy.close()

    try:
        event_loop_runner.run(go())
    finally:
        event_loop_runner.run(registry.close())


def test_async_with_closes_idle_connections(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Leaving `async with server` (close + wait_closed) returns promptly although a
    persistent connection is still open, and that connection is closed."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600)

    async def go() -> None:
        server = await start_policy_server(("127.0.0.1", 0), service, ACCOUNTS, default_region=None)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = await Client.connect(port)
            assert await client.ask(request(CAROL)) == NO_CONSENT_CAROL
        assert await client.closed_by_server()
        await client.close()

    try:
        event_loop_runner.run(asyncio.wait_for(go(), 3 * TIMEOUT))
    finally:
        event_loop_runner.run(registry.close())


# ---- a real Postfix smtpd driving the policy service --------------------------------

POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
QUEUE_DIRS = ("incoming", "active", "deferred", "bounce", "defer", "trace", "flush", "hold",
              "corrupt", "saved", "private")  # fmt: skip


def postfix_unusable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if not POSTFIX_MASTER.exists() or shutil.which("postconf") is None:
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its daemons drop to user postfix)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def listening_port(pid: int) -> int | None:
    """The TCP port process `pid` listens on (from /proc), or None yet."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            return int(fields[1].rsplit(":", 1)[1], 16)
    return None


@dataclass
class Postfix:
    """A private Postfix instance: own config, queue and data dirs, smtpd on 127.0.0.1
    (port chosen by the OS), mail discarded, logs in its own file. Stopped and removed
    at the end; nothing outside its directory is touched."""

    directory: Path
    policy_port: int
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def maillog(self) -> str:
        """Postfix's own log so far."""
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Postfix:
        """Write main.cf/master.cf, make the queue, start master, wait for its port."""
        d = self.directory
        d.chmod(0o755)
        conf, queue, data = d / "conf", d / "queue", d / "data"
        for path in (conf, queue, data, queue / "pid", queue / "public", queue / "maildrop"):
            path.mkdir()
        for name in QUEUE_DIRS:
            (queue / name).mkdir(mode=0o700)
            shutil.chown(queue / name, "postfix")
        shutil.chown(data, "postfix")
        data.chmod(0o700)
        for name, mode in (("public", 0o710), ("maildrop", 0o730)):
            shutil.chown(queue / name, "postfix", "postdrop")
            (queue / name).chmod(mode)
        (conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-test.localdomain
mydomain = localdomain
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8 10.0.0.0/8 192.0.2.0/24
alias_maps =
alias_database =
local_recipient_maps =
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{self.policy_port}
smtpd_policy_service_timeout = 20s
smtpd_client_connection_count_limit = 0
default_transport = discard
relay_transport = discard
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
"""
        )
        (conf / "master.cf").write_text(
            """127.0.0.1:0 inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""
        )
        self.process = subprocess.Popen(
            [str(POSTFIX_MASTER), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postfix master exited: {self.maillog[-2000:]}")
            port = listening_port(self.process.pid)
            if port is not None:
                self.port = port
                return self
            time.sleep(0.02)  # waiting for a child process to bind, not for our own code
        raise RuntimeError("postfix master did not listen")

    def stop(self) -> None:
        """SIGTERM master (it ends its children), then make sure its group is gone."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # master leads its own process group
        self.process = None


@pytest.fixture
def postfix(rig: Rig) -> Iterator[Postfix]:
    """A private Postfix whose smtpd asks the rig's policy server at RCPT."""
    reason = postfix_unusable()
    if reason is not None:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="pfx", dir="/tmp"))
    instance = Postfix(directory, rig.port)
    try:
        yield instance.start()
    finally:
        instance.stop()
        shutil.rmtree(directory, ignore_errors=True)


def smtp_session(port: int, xclient: str, recipients: Sequence[str]) -> list[tuple[int, str]]:
    """EHLO, XCLIENT (client address and SASL login as Postfix will report them), MAIL,
    one RCPT per recipient; the RCPT replies. Ends with RSET and QUIT (no DATA)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("tool.test")
        code, text = client.docmd("XCLIENT", xclient)
        assert code == 220, text
        client.ehlo("tool.test")
        assert client.mail("shop@acme.test")[0] == 250
        answers = [client.rcpt(r) for r in recipients]
        client.rset()
    return [(code, text.decode()) for code, text in answers]


def rejected(address: str, reason: str) -> str:
    """What Postfix's smtpd makes of `action=550 5.7.1 <addr>: reason` at RCPT: it keeps
    our codes and text but puts its own `<addr>: Recipient address rejected: ` before it."""
    return f"5.7.1 <{address}>: Recipient address rejected: <{address}>: {reason}"


def test_real_postfix_uses_the_policy_service(rig: Rig, postfix: Postfix) -> None:
    """A real Postfix smtpd with `check_policy_service inet:127.0.0.1:PORT` in
    smtpd_recipient_restrictions: consented recipients are accepted; refused and
    unconsented ones get filterd's 550 texts (behind Postfix's own prefix); the account
    comes from the SASL login or else the client address, no account → 554; a
    transactional login delivers; drops are audited with Postfix's queue id."""

    def sessions() -> list[list[tuple[int, str]]]:
        return [
            smtp_session(postfix.port, "ADDR=192.0.2.1 LOGIN=newsletter", [JANE, BOB, CAROL]),
            smtp_session(postfix.port, "ADDR=10.1.2.7", [JANE]),
            smtp_session(postfix.port, "ADDR=192.0.2.1", [JANE]),
            smtp_session(postfix.port, "ADDR=192.0.2.1 LOGIN=receipts", [BOB]),
        ]

    with_login, by_network, no_account, transactional = rig.run(
        asyncio.wait_for(asyncio.to_thread(sessions), 90)
    )
    assert with_login == [
        (250, "2.1.5 Ok"),
        (550, rejected(BOB, "recipient has refused commercial messages")),
        (550, rejected(CAROL, "no consent or request on record")),
    ], postfix.maillog
    assert by_network == [(550, rejected(JANE, "no consent or request on record"))]
    assert no_account == [
        (554, f"5.7.1 <{JANE}>: Recipient address rejected: " + NO_ACCOUNT.split(" ", 2)[2])
    ]
    assert transactional == [(250, "2.1.5 Ok")]
    drops = rig.drops()
    assert [(event, reason, origin) for event, reason, origin, _, _ in drops] == [
        ("drop", "no_consent", "policy"),
        ("drop", "no_consent", "policy"),
        ("drop", "refused", "policy"),
    ]
    # newest first: the by-network drop came before Postfix opened a queue file
    queue_ids = [message_id for _, _, _, message_id, _ in drops]
    assert queue_ids[0] is None
    assert queue_ids[1] is not None
    assert re.fullmatch(r"[0-9A-F]{6,}", queue_ids[1])
    assert queue_ids[1] == queue_ids[2]
    assert "sasl_username=newsletter" in postfix.maillog


def test_connection_caps_and_idle_timeout(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Beyond max_connections_per_address a new connection is closed at once with
    nothing said; a connection silent for idle_timeout is closed, one that keeps asking
    stays open past it; a closed connection frees its place."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600)
    limits = ListenerLimits(idle_timeout_s=1.0, max_connections=10, max_connections_per_address=2)

    async def go() -> None:
        server = await start_policy_server(
            ("127.0.0.1", 0), service, ACCOUNTS, default_region=None, limits=limits
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            quiet = await Client.connect(port)
            talker = await Client.connect(port)
            extra = await Client.connect(port)
            assert await extra.closed_by_server()  # the third from 127.0.0.1
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() - started < 2.0:  # twice the idle timeout, asking all along
                assert await talker.ask(request(state="CONNECT")) == "DUNNO"
                await asyncio.sleep(0.25)
            assert await quiet.closed_by_server()
            fresh = await Client.connect(port)  # quiet's place is free again
            assert await fresh.ask(request(CAROL)) == NO_CONSENT_CAROL
            for client in (quiet, talker, extra, fresh):
                await client.close()

    try:
        event_loop_runner.run(asyncio.wait_for(go(), 6 * TIMEOUT))
    finally:
        event_loop_runner.run(registry.close())


def test_quiet_hours_defer_with_the_time_sending_may_resume(rig: Rig) -> None:
    """With quiet hours holding the current time (America/New_York, an email
    recipient's configured zone), a consented recipient gets the 451 4.7.0 action
    naming when sending may resume, audited as defer/quiet_hours; a refused recipient
    is still dropped (quiet hours only hold back what would be delivered)."""
    zone = ZoneInfo("America/New_York")
    now = datetime.now(zone)
    window = parse_window(f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}")
    assert window is not None
    rig.service.quiet = QuietRule(window, "America/New_York")
    resume = f"{now + timedelta(hours=1):%H:%M} America/New_York"
    assert rig.ask(request(JANE), request(BOB)) == [
        f"451 4.7.0 <{JANE}>: outside sending hours in the recipient's time zone, "
        f"try again after {resume}",
        REFUSED_BOB,
    ]
    assert [d[:3] for d in rig.drops()] == [
        ("drop", "refused", "policy"),
        ("defer", "quiet_hours", "policy"),
    ]
