"""Hostile-network benchmark (SPEC §11): a legitimate client's latency and success rate
on a quiet `filterd serve`, beside the same while idle connections and a wrong-password
storm hit it, in the same run.

Run from the repository root:

    .venv/bin/python bench/hostile.py [--quick] [--requests N] [--rounds R] [--idle I]
        [--storm-addresses A] [--storm-workers W] [--storm-patience S]

`--quick`: N = 1,000 requests per figure and side, R = 1 round, I = 200 idle connections
per listener (~35 s). Default: N = 4,000 in R = 2 rounds, I = 500 (~2 min). The other
defaults: A = 4 storm addresses, W = 32 storm workers per protocol, S = 0.1 s, the load
child at nice 19 (`--attacker-nice`).

Everything runs on loopback against processes this script starts itself, in a temp dir
made with `tempfile.mkdtemp(dir="/tmp")`, and everything is stopped and the dir removed
at the end, on an error, on Ctrl-C and on SIGTERM (the two helper children also end by
themselves when their stdin closes, should this process be killed outright):

- a registry server with the embedded registry's config and binary
  (`filterd.storage.embedded.server_config`: unix socket only, AOF on), never the system Redis;
  consent of sender `acme` for jane@example.com (email) and +8613800138000 (sms);
- the peers child (`bench/hostile.py peers`): an aiosmtpd sink that accepts and counts
  every message, and a fake SMPP carrier (on filterd's SMPP codec) that accepts any bind
  and answers every submit_sm ESME_ROK with a message id, counting them;
- `filterd serve` with all four front ends on 127.0.0.1, ports from the OS: the SMTP
  relay (to the sink, one commercial account with a password), the SMPP relay (to the
  carrier, one commercial account), the Postfix policy service and HTTP. Every SPEC §11
  setting at its default: `idle_timeout` 300 s / 120 s / 300 s / 10 s, 1,000 connections
  per listener, 100 per client address, `http.status_networks` loopback. Logging at INFO
  to a file, as in production;
- for the hostile side, the load child (`bench/hostile.py load`), in a process of its
  own so it does not share this process's interpreter with the measuring client:
  (a) I idle connections per listener, from 127.0.0.10, .11, ... (at most 100 per
  address, the default per-address cap), each sending nothing; one the server closes
  (HTTP after its 10 s idle timeout) is opened again at once; (b) a storm from
  127.0.0.2 ... 127.0.0.(1+A): W workers against SMTP and W against SMPP, each opening
  a connection per guess, sending AUTH PLAIN (after EHLO) or bind_transceiver with a
  wrong password and dropping the connection if nothing came back within S seconds
  (the per-connection guessing attack of SPEC §11), again and again.

The legitimate client is this process, from 127.0.0.1 (so the storm's back-off never
applies to it), one request at a time, the figures interleaved (one of each per step),
every request with a 10 s socket timeout:

1. SMTP session: connect → 220 → EHLO → AUTH PLAIN → MAIL, RCPT (consented) → DATA
   → 250 → QUIT, on a new connection each time;
2. SMTP message on an authenticated session kept open: MAIL → 250 after DATA;
3. SMPP submit_sm → submit_sm_resp ESME_ROK on a bind kept open;
4. SMPP bind: connect → bind_transceiver → ESME_ROK (then unbind) on a new connection;
5. policy request → `action=DUNNO` on a connection kept open;
6. policy request on a new connection;
7. GET /healthz → 200 on a new connection.

A request succeeds only with the reply named; anything else (another reply, a timeout, a
closed connection) is a failure and its connection is opened again for the next. Per
figure and side: p50 and p99 of the successful requests' latencies and the success rate.
Target: on the hostile side 100 % success and p99 at most twice the quiet p99. Rounds alternate
the order of the sides (quiet, hostile; then hostile, quiet); a round's hostile side
starts the load child, waits until its idle connections are all open, measures, then
stops it.

Checks (reported, never enforced): the sink received exactly as many messages as the
client saw 250 for, the carrier exactly as many submit_sm as the client saw ESME_ROK
for; the storm's answers within S seconds are counted (after a first failure per
address none should come: a right password is never answered faster than a wrong one).

The report (markdown table, command, machine facts, notes) goes to stdout; progress
lines go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import itertools
import json
import math
import os
import select
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import _common
from aiosmtpd.smtp import SMTP, Envelope, Session

from filterd import logs
from filterd.identity import ConsumerHasher
from filterd.model import FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smpp.decode import SmppProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import (
    AnyPdu,
    BindTransceiver,
    BindTransceiverResp,
    EnquireLink,
    Pdu,
    SubmitSm,
    Unbind,
    response_to,
)
from filterd.smpp.status import ESME_ROK
from filterd.storage.embedded import ServerBinary, find_binary
from filterd.storage.redis import RedisRegistry

FILTERD = str(Path(sys.executable).parent / "filterd")
HERE = Path(__file__).resolve()
FRONT_ENDS = ("smtp", "smpp", "policy", "http")
SENDER = "acme"
JANE = "jane@example.com"
JANE_SMS = "8613800138000"
NUMBER = "10690001"
SMTP_USER, SMTP_PASSWORD = "bench", "bench-pw"
SMPP_SYSTEM_ID, SMPP_PASSWORD = "bench", "bench-pw"
WRONG = "wrong-pw"
"""The storm's password (SMPP passwords have at most 8 octets)."""
CARRIER_ID, CARRIER_PASSWORD = "filterd", "carrier"
CLIENT = "127.0.0.1"
STORM_FIRST = 2
"""The storm's addresses are 127.0.0.2, .3, ..."""
IDLE_FIRST = 10
"""The idle connections come from 127.0.0.10, .11, ..."""
PER_ADDRESS = 100
"""filterd's default max_connections_per_address: idle connections per source address."""
MAX_CONNECTIONS = 1000
"""filterd's default max_connections per listener."""
TIMEOUT_S = 10.0
"""Socket timeout of every request of the legitimate client."""
TARGET_P99 = 2.0
"""Target: hostile p99 ≤ this × quiet p99."""

FIGURES = {
    "smtp_session": "SMTP session on a new connection: connect → AUTH → MAIL/RCPT/DATA 250 → QUIT",
    "smtp_message": "SMTP message on an open session: MAIL → 250 after DATA",
    "smpp_submit": "SMPP submit_sm → ESME_ROK on an open bind",
    "smpp_bind": "SMPP bind_transceiver → ESME_ROK on a new connection",
    "policy": "policy request → DUNNO on an open connection",
    "policy_new": "policy request → DUNNO on a new connection",
    "healthz": "GET /healthz → 200 on a new connection",
}

progress = _common.progress


# ---- shared helpers -------------------------------------------------------------------------


def plain_auth(user: str, password: str) -> bytes:
    """`AUTH PLAIN <initial response>` for `user` / `password`."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"AUTH PLAIN {token}\r\n".encode()


POLICY_REQUEST = (
    f"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username={SMTP_USER}\n"
    f"recipient={JANE}\n\n"
).encode()
MESSAGE = (
    f"From: shop@acme.test\r\nTo: {JANE}\r\nSubject: offer\r\n"
    "Message-ID: <bench@hostile.test>\r\n\r\nHello.\r\n"
).encode()


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    """A child's stdin or stdout pipe (spawned with pipes=True, so never None)."""
    if stream is None:
        raise RuntimeError("the child has no pipe")
    return stream


def read_json_line(child: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line a child writes on its stdout (bounded)."""
    stdout = _pipe(child.stdout)
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"no {what} from pid {child.pid} in {timeout:.0f} s")
    line = stdout.readline()
    if not line:
        raise RuntimeError(f"pid {child.pid} ended before its {what} ({child.poll()})")
    value: dict[str, Any] = json.loads(line)
    return value


async def until_stdin_closes() -> None:
    """Return when this process's stdin reaches EOF (the parent closed it or died)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


# ---- the peers child: SMTP sink and SMPP carrier -------------------------------------------


class SinkHandler:
    """aiosmtpd handler: accept and count every message."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Count the message, answer 250."""
        self.messages += 1
        return "250 2.0.0 Ok: queued"


class Carrier:
    """A fake SMSC: any bind with CARRIER_PASSWORD, every submit_sm ESME_ROK."""

    def __init__(self) -> None:
        self.submits = 0
        self._ids = itertools.count(1)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One carrier connection."""
        framer = Framer()
        try:
            while data := await reader.read(65536):
                framer.feed(data)
                while (pdu := framer.next_pdu()) is not None:
                    if isinstance(pdu, BindTransceiver):
                        ok = pdu.password == CARRIER_PASSWORD
                        writer.write(encode(response_to(pdu, ESME_ROK if ok else 0x0E,
                                                        system_id="carrier")))  # fmt: skip
                    elif isinstance(pdu, SubmitSm):
                        self.submits += 1
                        message_id = f"c{next(self._ids)}"
                        writer.write(encode(response_to(pdu, ESME_ROK, message_id=message_id)))
                    elif isinstance(pdu, EnquireLink | Unbind):
                        writer.write(encode(response_to(pdu)))
        except (ConnectionError, SmppProtocolError):
            pass
        finally:
            writer.close()


async def peers_main() -> None:
    """`bench/hostile.py peers`: print the ports; on each stdin line print the counters;
    end at stdin EOF."""
    loop = asyncio.get_running_loop()
    handler = SinkHandler()
    sink = await loop.create_server(
        lambda: SMTP(handler, hostname="sink", enable_SMTPUTF8=True), CLIENT, 0
    )
    carrier = Carrier()
    smsc = await asyncio.start_server(carrier.serve, CLIENT, 0)
    ports = {"sink": sink.sockets[0].getsockname()[1], "carrier": smsc.sockets[0].getsockname()[1]}
    print(json.dumps(ports), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        print(json.dumps({"messages": handler.messages, "submits": carrier.submits}), flush=True)


class Peers:
    """The peers child, seen from the bench."""

    def __init__(self, cleanup: _common.Cleanup, directory: Path) -> None:
        self.child = cleanup.spawn(
            [sys.executable, str(HERE), "peers"], log=None, cwd=directory, pipes=True
        )
        ports = read_json_line(self.child, 30, "ports")
        self.sink_port, self.carrier_port = int(ports["sink"]), int(ports["carrier"])

    def counts(self) -> tuple[int, int]:
        """(messages at the sink, submit_sm at the carrier) so far."""
        stdin = _pipe(self.child.stdin)
        stdin.write(b"count\n")
        stdin.flush()
        found = read_json_line(self.child, 10, "counters")
        return int(found["messages"]), int(found["submits"])


# ---- the load child: idle connections and the storm -------------------------------------------


@dataclass
class LoadStats:
    """What the load child did, by key (`listener event` or `storm-proto event`)."""

    counts: Counter[str] = field(default_factory=Counter)
    open: Counter[str] = field(default_factory=Counter)
    answer_after: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an idle connection opens."""
    stopping: bool = False
    """Set at the end: every loop returns (cancelling alone can be lost in a wait_for)."""

    async def all_open(self, idle: int) -> None:
        """Return once every listener has `idle` idle connections open."""
        while min(self.open[name] for name in FRONT_ENDS) < idle:
            self.changed.clear()
            await self.changed.wait()


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from `source` (10 s at most to connect)."""
    return await asyncio.wait_for(asyncio.open_connection(CLIENT, port, local_addr=(source, 0)), 10)


async def hold(name: str, port: int, source: str, stats: LoadStats) -> None:
    """Keep one idle connection to `port` open from `source`, opening it again whenever
    the server closes it (a quick close, as at a cap, costs a 0.2 s pause)."""
    while not stats.stopping:
        try:
            reader, writer = await _connect(port, source)
        except (OSError, TimeoutError):
            stats.counts[f"{name} connect failed"] += 1
            await asyncio.sleep(0.2)  # pace the retries of a refused connect
            continue
        stats.counts[f"{name} opened"] += 1
        stats.open[name] += 1
        stats.changed.set()
        opened = time.monotonic()
        try:
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass  # the SMTP greeting (or a 421 / 503 at a cap): read and ignore
        finally:
            stats.open[name] -= 1
            writer.close()
        stats.counts[f"{name} closed by server"] += 1
        if time.monotonic() - opened < 1.0:
            await asyncio.sleep(0.2)  # pace the retries when refused at once


async def _smtp_guess(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Read the greeting, EHLO, send a wrong AUTH; False if refused on the way."""
    greeting = await asyncio.wait_for(reader.readline(), 10)
    if not greeting.startswith(b"220"):
        return False
    writer.write(b"EHLO storm.test\r\n")
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line.startswith(b"250"):
            return False
        if line[3:4] != b"-":
            break
    writer.write(plain_auth(SMTP_USER, WRONG))
    return True


async def _guess(
    proto: str, port: int, source: str, patience: float, stats: LoadStats, *, sequence: int
) -> None:
    """One wrong guess on a new connection from `source`, dropped after `patience` s."""
    key = f"storm-{proto}"
    try:
        reader, writer = await _connect(port, source)
    except (OSError, TimeoutError):
        stats.counts[f"{key} connect failed"] += 1
        return
    try:
        if proto == "smtp":
            if not await _smtp_guess(reader, writer):
                stats.counts[f"{key} refused before AUTH"] += 1
                return
        else:
            bind = BindTransceiver(sequence_number=sequence, system_id=SMPP_SYSTEM_ID,
                                   password=WRONG)  # fmt: skip
            writer.write(encode(bind))
        sent = time.monotonic()
        stats.counts[f"{key} guesses"] += 1
        try:
            data = await asyncio.wait_for(reader.read(65536), patience)
        except TimeoutError:
            stats.counts[f"{key} dropped unanswered"] += 1
            return
        if data:
            stats.counts[f"{key} answered within patience"] += 1
            stats.answer_after.append(time.monotonic() - sent)
        else:
            stats.counts[f"{key} closed unanswered"] += 1
    except (OSError, TimeoutError):
        stats.counts[f"{key} errors"] += 1
    finally:
        writer.close()


async def storm(proto: str, port: int, source: str, patience: float, stats: LoadStats) -> None:
    """Guess passwords from `source` until stopped, a connection per guess, each dropped
    when nothing came back within `patience` seconds; one guess per `patience` at most
    (a guess refused at once waits out the rest, so the storm's rate is bounded)."""
    for sequence in itertools.count(1):
        if stats.stopping:
            return
        began = time.monotonic()
        await _guess(proto, port, source, patience, stats, sequence=sequence)
        rest = patience - (time.monotonic() - began)
        if rest > 0:
            await asyncio.sleep(rest)  # the storm's pace


async def load_main(args: argparse.Namespace) -> None:
    """`bench/hostile.py load ...`: hold the idle connections, run the storm; print a
    `ready` line once every idle connection is open (or after 60 s), and the stats when
    stdin closes."""
    ports = json.loads(args.ports)
    stats = LoadStats()
    tasks = []
    for name in FRONT_ENDS:
        for index in range(args.idle):
            source = f"127.0.0.{IDLE_FIRST + index // PER_ADDRESS}"
            tasks.append(asyncio.create_task(hold(name, ports[name], source, stats)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stats.all_open(args.idle), 60)
    for proto in ("smtp", "smpp"):
        for index in range(args.storm_workers):
            source = f"127.0.0.{STORM_FIRST + index % args.storm_addresses}"
            coroutine = storm(proto, ports[proto], source, args.storm_patience, stats)
            tasks.append(asyncio.create_task(coroutine))
    print(json.dumps({"ready": dict(stats.open)}), flush=True)
    await until_stdin_closes()
    stats.stopping = True
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    answered = sorted(stats.answer_after)
    print(json.dumps({"counts": dict(stats.counts), "answer_after": answered[:20]}), flush=True)


class Load:
    """The load child, seen from the bench."""

    def __init__(
        self, args: argparse.Namespace, ports: dict[str, int], cleanup: _common.Cleanup,
        directory: Path,
    ) -> None:  # fmt: skip
        command = [
            sys.executable, str(HERE), "load", "--ports", json.dumps(ports),
            "--idle", str(args.idle), "--storm-addresses", str(args.storm_addresses),
            "--storm-workers", str(args.storm_workers),
            "--storm-patience", str(args.storm_patience),
        ]  # fmt: skip
        started = time.monotonic()
        self.child = cleanup.spawn(command, log=None, cwd=directory, pipes=True)
        os.setpriority(os.PRIO_PROCESS, self.child.pid, args.attacker_nice)
        self.ready = read_json_line(self.child, 90, "ready line")["ready"]
        self.ramp_s = time.monotonic() - started
        self.cpu_at_ready = _common.cpu_seconds([self.child.pid])

    def stop(self) -> dict[str, Any]:
        """Close its stdin; its stats."""
        cpu = _common.cpu_seconds([self.child.pid]) - self.cpu_at_ready
        _pipe(self.child.stdin).close()
        stats = read_json_line(self.child, 60, "stats")
        _common.stop_child(self.child)
        stats["cpu_s"] = cpu
        return stats


# ---- the legitimate client ------------------------------------------------------------------


@dataclass
class Figure:
    """Latencies (s) of one figure's successful requests, and the failures by reason."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        """Requests made."""
        return len(self.latencies) + sum(self.failures.values())

    def success(self) -> float:
        """Share of requests that succeeded, in %."""
        return 100.0 * len(self.latencies) / self.requests if self.requests else float("nan")

    def percentile_ms(self, share: float) -> float:
        """The latency at `share` of the successful requests, in ms."""
        return _common.percentile([round(x * 1e9) for x in self.latencies], share, 1e6)


class Failed(Exception):
    """A request got another reply than the one named."""


class SmppClient:
    """A blocking SMPP client connection from CLIENT."""

    _sequence = itertools.count(1)

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((CLIENT, port), TIMEOUT_S, source_address=(CLIENT, 0))
        self.framer = Framer()

    def request(self, pdu: Pdu) -> AnyPdu:
        """Send `pdu`; its response (enquire_links from the server are answered)."""
        self.sock.sendall(encode(pdu))
        while True:
            while (answer := self.framer.next_pdu()) is None:
                data = self.sock.recv(65536)
                if not data:
                    raise Failed("closed")
                self.framer.feed(data)
            if isinstance(answer, EnquireLink):
                self.sock.sendall(encode(response_to(answer)))
            elif answer.sequence_number == pdu.sequence_number:
                return answer

    def bind(self) -> None:
        """bind_transceiver with the right password; Failed unless ESME_ROK."""
        bind = BindTransceiver(sequence_number=next(self._sequence), system_id=SMPP_SYSTEM_ID,
                               password=SMPP_PASSWORD)  # fmt: skip
        answer = self.request(bind)
        if not isinstance(answer, BindTransceiverResp) or answer.command_status != ESME_ROK:
            raise Failed(f"bind status {answer.command_status:#x}")

    def submit(self) -> None:
        """One submit_sm to JANE_SMS; Failed unless ESME_ROK."""
        submit = SubmitSm(
            sequence_number=next(self._sequence), source_addr_ton=0, source_addr=NUMBER,
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=JANE_SMS,
            short_message=b"hello",
        )  # fmt: skip
        answer = self.request(submit)
        if answer.command_status != ESME_ROK:
            raise Failed(f"submit status {answer.command_status:#x}")

    def close(self, unbind: bool = False) -> None:
        """Unbind (if asked, answer awaited) and close."""
        with contextlib.suppress(OSError, Failed):
            if unbind:
                self.request(Unbind(sequence_number=next(self._sequence)))
        self.sock.close()


def smtp_client(port: int) -> smtplib.SMTP:
    """An authenticated SMTP session from CLIENT."""
    client = smtplib.SMTP(CLIENT, port, timeout=TIMEOUT_S, source_address=(CLIENT, 0))
    client.ehlo("tool.test")
    client.login(SMTP_USER, SMTP_PASSWORD)
    return client


def send_message(client: smtplib.SMTP) -> None:
    """One message to JANE; Failed unless every reply was positive."""
    refused = client.sendmail("shop@acme.test", [JANE], MESSAGE)
    if refused:
        raise Failed(f"refused {refused}")


def policy_request(sock: socket.socket) -> None:
    """One policy request on `sock`; Failed unless `action=DUNNO`."""
    sock.sendall(POLICY_REQUEST)
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("closed")
        data += chunk
    if data != b"action=DUNNO\n\n":
        raise Failed(data.decode(errors="replace").strip()[:40])


class Client:
    """The legitimate client: one request of each figure per step, open connections kept
    across steps and opened again after a failure."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.smtp: smtplib.SMTP | None = None
        self.smpp: SmppClient | None = None
        self.policy: socket.socket | None = None
        self._unbind_later: SmppClient | None = None
        """The new-connection bind of figure 4, unbound after its timing."""

    def close(self) -> None:
        """Close the open connections."""
        if self.smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.smtp.quit()
            self.smtp.close()
        if self.smpp is not None:
            self.smpp.close(unbind=True)
        if self.policy is not None:
            self.policy.close()
        self.smtp = self.smpp = self.policy = None

    def smtp_session(self) -> None:
        """Figure 1."""
        client = smtp_client(self.ports["smtp"])
        try:
            send_message(client)
            client.quit()
        finally:
            client.close()

    def smtp_message(self) -> None:
        """Figure 2 (the session is opened outside the timing, see `step`)."""
        if self.smtp is None:
            raise Failed("no session")
        send_message(self.smtp)

    def smpp_submit(self) -> None:
        """Figure 3."""
        if self.smpp is None:
            raise Failed("no bind")
        self.smpp.submit()

    def smpp_bind(self) -> None:
        """Figure 4 (the unbind is outside the timing, see `step`)."""
        session = SmppClient(self.ports["smpp"])
        try:
            session.bind()
        finally:
            self._unbind_later = session

    def policy_open(self) -> None:
        """Figure 5."""
        if self.policy is None:
            raise Failed("no connection")
        policy_request(self.policy)

    def policy_new(self) -> None:
        """Figure 6."""
        sock = socket.create_connection(
            (CLIENT, self.ports["policy"]), TIMEOUT_S, source_address=(CLIENT, 0)
        )
        with sock:
            policy_request(sock)

    def healthz(self) -> None:
        """Figure 7."""
        connection = http.client.HTTPConnection(
            CLIENT, self.ports["http"], timeout=TIMEOUT_S, source_address=(CLIENT, 0)
        )
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise Failed(f"HTTP {response.status}")
        finally:
            connection.close()

    def _take_unbind(self) -> SmppClient | None:
        """The bind of figure 4 still to unbind (outside its timing), if any."""
        pending, self._unbind_later = self._unbind_later, None
        return pending

    def _ensure_open(self, name: str) -> None:
        """Open the kept connection a figure needs (outside its timing)."""
        if name == "smtp_message" and self.smtp is None:
            self.smtp = smtp_client(self.ports["smtp"])
        elif name == "smpp_submit" and self.smpp is None:
            session = SmppClient(self.ports["smpp"])
            session.bind()
            self.smpp = session
        elif name == "policy" and self.policy is None:
            self.policy = socket.create_connection(
                (CLIENT, self.ports["policy"]), TIMEOUT_S, source_address=(CLIENT, 0)
            )

    def _drop(self, name: str) -> None:
        """After a failure: close the kept connection of the figure (opened again next)."""
        if name == "smtp_message" and self.smtp is not None:
            self.smtp.close()
            self.smtp = None
        elif name == "smpp_submit" and self.smpp is not None:
            self.smpp.close()
            self.smpp = None
        elif name == "policy" and self.policy is not None:
            self.policy.close()
            self.policy = None

    def step(self, into: dict[str, Figure]) -> None:
        """One request of every figure, timed; failures counted by reason."""
        actions: dict[str, Callable[[], None]] = {
            "smtp_session": self.smtp_session, "smtp_message": self.smtp_message,
            "smpp_submit": self.smpp_submit, "smpp_bind": self.smpp_bind,
            "policy": self.policy_open, "policy_new": self.policy_new, "healthz": self.healthz,
        }  # fmt: skip
        for name, action in actions.items():
            figure = into.setdefault(name, Figure())
            self._unbind_later = None
            try:
                self._ensure_open(name)
            except (OSError, smtplib.SMTPException, Failed, SmppProtocolError) as exc:
                figure.failures[f"open: {_reason(exc)}"] += 1
                self._drop(name)
                continue
            started = time.perf_counter()
            try:
                action()
            except (OSError, smtplib.SMTPException, Failed, SmppProtocolError) as exc:
                figure.failures[_reason(exc)] += 1
                self._drop(name)
            else:
                figure.latencies.append(time.perf_counter() - started)
            pending = self._take_unbind()
            if pending is not None:
                pending.close(unbind=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "SMTP RCPT refused"
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text[:40] if text else ''}"


# ---- setup -----------------------------------------------------------------------------------


def write_config(path: Path, registry_url: str, sink: int, carrier: int) -> None:
    """filterd's config: four front ends, every SPEC §11 key at its default."""
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink}"
hostname = "filterd.bench"

[[smtp.accounts]]
username = "{SMTP_USER}"
password = "{SMTP_PASSWORD}"
sender = "{SENDER}"
stream = "commercial"

[smpp]
listen = "127.0.0.1:0"

[smpp.upstream]
host = "127.0.0.1"
port = {carrier}
system_id = "{CARRIER_ID}"
password = "{CARRIER_PASSWORD}"

[[smpp.accounts]]
system_id = "{SMPP_SYSTEM_ID}"
password = "{SMPP_PASSWORD}"
sender = "{SENDER}"
stream = "commercial"

[[smpp.numbers]]
address = "{NUMBER}"
sender = "{SENDER}"

[policy]
listen = "127.0.0.1:0"

[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
""")


async def load_consent(url: str, secret: bytes) -> None:
    """Consent of SENDER for JANE (email) and +JANE_SMS (sms)."""
    registry = RedisRegistry.from_url(url)
    service = Service(registry, ConsumerHasher(secret), request_ttl_s=3600)
    try:
        for address in (JANE, "+" + JANE_SMS):
            normalised = normalize(address)
            request = FactRequest(normalised, Kind.CONSENT, SENDER, normalised.channel, "bench")
            await service.record(request, origin="bench")
    finally:
        await registry.close()


@dataclass
class Daemon:
    """The `filterd serve` under test."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path


def start_filterd(config: Path, cleanup: _common.Cleanup, log: Path) -> Daemon:
    """`filterd serve`, logging to `log` (a new file); returns once every front end
    logged `listening`."""
    child = cleanup.spawn([FILTERD, "serve", "--config", str(config)], log=log, cwd=config.parent)
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(ports) < len(FRONT_ENDS):
        if child.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"filterd did not start ({child.poll()}): {tail}")
        time.sleep(0.05)  # poll the log for the listening lines
        for line in log.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "listening":
                    ports[str(record["front_end"])] = int(record["port"])
    return Daemon(child, ports, log)


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (0 if gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def close_wait(ports: dict[str, int]) -> dict[str, int]:
    """Sockets in CLOSE-WAIT (the peer closed, the server has not yet) on each listener's
    port, from /proc/net/tcp: connections a client dropped that filterd still holds."""
    found = dict.fromkeys(ports, 0)
    by_port = {port: name for name, port in ports.items()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "08" and port in by_port:  # 08: TCP_CLOSE_WAIT
                found[by_port[port]] += 1
    return found


def open_fds(pid: int) -> int:
    """Descriptors `pid` holds (0 if gone)."""
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


# ---- phases ----------------------------------------------------------------------------------


@dataclass
class Side:
    """Everything measured on one side (quiet or hostile), over all its rounds."""

    figures: dict[str, Figure] = field(default_factory=dict)
    acknowledged: list[int] = field(default_factory=lambda: [0, 0])
    """Messages answered 250 and submits answered ESME_ROK."""
    delivered: list[int] = field(default_factory=lambda: [0, 0])
    """Messages the sink and submits the carrier counted meanwhile."""
    wall_s: float = 0.0
    filterd_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    """Machine CPU used by processes not of this bench during the steps."""
    storm_guesses: int = 0
    storm_answered: int = 0
    """Storm guesses answered within the patience (the attack's signal)."""
    storm_rounds: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Bench:
    """The running setup."""

    args: argparse.Namespace
    cleanup: _common.Cleanup
    directory: Path
    peers: Peers
    config: Path
    registry_pid: int
    stops: list[str] = field(default_factory=list)
    """One line per `filterd serve` stopped: its exit code and drain time."""
    starts: int = 0


WARMUP_STEPS = 20


def run_side(bench: Bench, side: str, steps: int, into: Side, round_number: int) -> None:
    """`steps` steps of the client on a fresh `filterd serve` (after WARMUP_STEPS), quiet
    or with the load child running; the daemon is stopped (SIGTERM) at the end."""
    bench.starts += 1
    log = bench.directory / f"filterd-{bench.starts}.log"
    daemon = start_filterd(bench.config, bench.cleanup, log)
    try:
        warm = Client(daemon.ports)
        try:
            for _ in range(WARMUP_STEPS):
                warm.step({})
        finally:
            warm.close()
        _measure(bench, daemon, side, steps, into, round_number=round_number)
    finally:
        started = time.monotonic()
        code = _common.stop_child(daemon.process)
        bench.stops.append(
            f"- {_common.mark(code == 0)} `filterd serve` of round {round_number}, {side}: "
            f"SIGTERM → exit {code} in {time.monotonic() - started:.2f} s"
        )


def _measure(
    bench: Bench, daemon: Daemon, side: str, steps: int, into: Side, *, round_number: int
) -> None:
    """The timed steps of one side on `daemon` (the load child around them if hostile)."""
    load = None
    if side == "hostile":
        progress(f"round {round_number}: hostile load (idle {bench.args.idle}/listener, storm) ...")
        load = Load(bench.args, daemon.ports, bench.cleanup, bench.directory)
        pid = daemon.process.pid
        into.notes.append(
            f"- round {round_number}: idle connections open at the start {load.ready} after "
            f"{load.ramp_s:.1f} s; filterd then held {open_fds(pid):,} descriptors, "
            f"{rss_mb(pid):.0f} MB"
        )
    progress(f"round {round_number}: {side}, {steps} steps × {len(FIGURES)} figures ...")
    before = bench.peers.counts()
    figures = {name: Figure() for name in FIGURES}
    client = Client(daemon.ports)
    ours = [os.getpid(), bench.peers.child.pid, bench.registry_pid, daemon.process.pid]
    if load is not None:
        ours.append(load.child.pid)
    cpu = _common.cpu_seconds([daemon.process.pid])
    all_ours, busy = _common.cpu_seconds(ours), _common.machine_busy_seconds()
    started = time.monotonic()
    try:
        for _ in range(steps):
            client.step(figures)
    finally:
        client.close()
    wall = time.monotonic() - started
    cpu = _common.cpu_seconds([daemon.process.pid]) - cpu
    other = (_common.machine_busy_seconds() - busy) - (_common.cpu_seconds(ours) - all_ours)
    into.other_cpu_s += max(other, 0.0)
    pid = daemon.process.pid
    waiting = close_wait(daemon.ports)
    state = (
        f"filterd then held {open_fds(pid):,} descriptors, {rss_mb(pid):.0f} MB; sockets in "
        f"CLOSE-WAIT (dropped by the client, still open in filterd) {waiting}"
    )
    if load is not None:
        stats = load.stop()
        counts = Counter[str](stats["counts"])
        into.storm_guesses += counts["storm-smtp guesses"] + counts["storm-smpp guesses"]
        answered = counts["storm-smtp answered within patience"]
        answered += counts["storm-smpp answered within patience"]
        into.storm_answered += answered
        into.storm_rounds += 1
        listed = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        answer_ms = ", ".join(f"{x * 1000:.1f}" for x in stats["answer_after"][:8])
        into.notes.append(
            f"- round {round_number}: load child ({stats['cpu_s'] / wall:.2f} cores): {listed}; "
            f"storm answers within patience came after (ms): {answer_ms or '—'}; {state}"
        )
    else:
        into.notes.append(f"- round {round_number}: {state}")
    after = bench.peers.counts()
    for name, figure in figures.items():
        total = into.figures.setdefault(name, Figure())
        total.latencies += figure.latencies
        total.failures += figure.failures
    into.acknowledged[0] += len(figures["smtp_session"].latencies)
    into.acknowledged[0] += len(figures["smtp_message"].latencies)
    into.acknowledged[1] += len(figures["smpp_submit"].latencies)
    into.delivered[0] += after[0] - before[0]
    into.delivered[1] += after[1] - before[1]
    into.wall_s += wall
    into.filterd_cpu_s += cpu


# ---- report ----------------------------------------------------------------------------------


def _cell(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"  # NaN: no data


def table(quiet: Side, hostile: Side) -> list[str]:
    """figure | quiet | hostile | ratio | target."""
    lines = ["| figure | quiet | hostile | ratio | target |", "|---|---|---|---|---|"]
    for name, title in FIGURES.items():
        q, h = quiet.figures[name], hostile.figures[name]
        n = f"{h.requests:,} requests per side"
        for label, share in (("p50", 0.5), ("p99", 0.99)):
            qv, hv = q.percentile_ms(share), h.percentile_ms(share)
            known = not math.isnan(qv) and not math.isnan(hv)
            ratio = f"{hv / qv:.2f}×" if known and qv else "—"
            target = "—"
            if label == "p99":
                ok = known and hv <= TARGET_P99 * qv
                target = f"≤ {TARGET_P99:g}× quiet {_common.mark(ok)}"
            lines.append(
                f"| {title}: {label} ms ({n}) | {_cell(qv, 2)} | {_cell(hv, 2)} | {ratio} | "
                f"{target} |"
            )
        qs, hs = q.success(), h.success()
        ok = hs == 100.0
        lines.append(
            f"| {title}: success % | {_cell(qs, 1)} | {_cell(hs, 1)} | "
            f"{hs / qs if qs else float('nan'):.2f}× | 100 % {_common.mark(ok)} |"
        )
    return lines


def failures_notes(sides: dict[str, Side]) -> list[str]:
    """The failures of the legitimate client, by side, figure and reason."""
    lines = []
    for side_name, side in sides.items():
        for name, figure in side.figures.items():
            if figure.failures:
                reasons = ", ".join(f"{r} ×{n}" for r, n in figure.failures.most_common())
                lines.append(f"- {side_name} {name} failures: {reasons}")
    return lines or ["- the legitimate client had no failure on either side"]


def check_notes(sides: dict[str, Side]) -> list[str]:
    """Acknowledged vs delivered, per side."""
    lines = []
    for name, side in sides.items():
        smtp_ok = side.acknowledged[0] == side.delivered[0]
        smpp_ok = side.acknowledged[1] == side.delivered[1]
        lines.append(
            f"- {_common.mark(smtp_ok)} {name}: {side.acknowledged[0]:,} messages answered 250, "
            f"{side.delivered[0]:,} at the sink; {_common.mark(smpp_ok)} "
            f"{side.acknowledged[1]:,} submits answered ESME_ROK, {side.delivered[1]:,} at "
            f"the carrier"
        )
    return lines


def storm_note(args: argparse.Namespace, hostile: Side) -> str:
    """The storm's guesses and how many were answered within the patience: at most one
    per storm address and round may be (an address's first failure is answered at once;
    after it every attempt, right or wrong, SMTP or SMPP, waits the back-off)."""
    allowed = args.storm_addresses * hostile.storm_rounds
    ok = hostile.storm_answered <= allowed
    rate = hostile.storm_guesses / hostile.wall_s if hostile.wall_s else 0.0
    return (
        f"- {_common.mark(ok)} storm: {hostile.storm_guesses:,} wrong guesses ({rate:,.0f}/s), "
        f"{hostile.storm_answered:,} answered within {args.storm_patience:g} s (at most "
        f"{allowed}: the first failure of each storm address per round; after it every "
        "attempt from the address waits the back-off, SMTP and SMPP alike)"
    )


def storm_cpu_note(quiet: Side, hostile: Side) -> str:
    """filterd's CPU beyond the quiet side's, per storm guess: what the attack costs the
    daemon, a figure less at the mercy of the machine's other load than latencies."""
    rate = hostile.storm_guesses / hostile.wall_s if hostile.wall_s else 0.0
    extra = hostile.filterd_cpu_s / hostile.wall_s - quiet.filterd_cpu_s / quiet.wall_s
    if not rate:
        return "no storm guesses"
    return f"{extra * 1e6 / rate:,.0f} µs more per storm guess"


def machine_facts(binary: ServerBinary) -> list[str]:
    """The code, machine, Python, libraries, registry server, environment, load."""
    names = ("filterd", "aiosmtpd", "aiohttp", "redis", "hiredis", "structlog")
    return [
        f"- code: {_common.code_version()}",
        _common.machine_line(),
        _common.python_line(names),
        f"- registry server: {binary.path} ({_common.command_version([binary.path, '--version'])})",
        _common.environment_line(),
        _common.loadavg_line("start"),
    ]


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--quick, --requests, --rounds, --idle, --storm-addresses, --storm-workers,
    --storm-patience, --attacker-nice."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 requests, 1 round, 200 idle")
    p.add_argument("--requests", type=int, help="requests per figure and side (default 4,000)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 2; --quick 1)")
    p.add_argument("--idle", type=int, help="idle connections per listener (default 500)")
    p.add_argument("--storm-addresses", type=int, default=4, help="storm sources (default 4)")
    p.add_argument("--storm-workers", type=int, default=32, help="per protocol (default 32)")
    p.add_argument("--storm-patience", type=float, default=0.1, help="seconds (default 0.1)")
    p.add_argument(
        "--attacker-nice",
        type=int,
        default=19,
        help="nice value of the load child (default 19: its CPU is another machine's in the "
        "field; 0 lets it compete with filterd and the client for this machine's cores)",
    )
    args = p.parse_args(argv)
    if args.requests is None:
        args.requests = 1000 if args.quick else 4000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.idle is None:
        args.idle = 200 if args.quick else 500
    if not 1 <= args.storm_addresses <= IDLE_FIRST - STORM_FIRST:
        p.error(f"--storm-addresses must be 1 to {IDLE_FIRST - STORM_FIRST}")
    if args.idle < 0 or args.idle + args.storm_workers + 4 > MAX_CONNECTIONS:
        p.error(f"--idle + --storm-workers + 4 must stay within {MAX_CONNECTIONS} (the cap)")
    if args.requests < args.rounds or args.rounds < 1 or args.storm_workers < 0:
        p.error("need --rounds ≥ 1, --requests ≥ rounds, --storm-workers ≥ 0")
    return args


def child_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options of `bench/hostile.py load`."""
    p = argparse.ArgumentParser()
    p.add_argument("--ports", required=True)
    p.add_argument("--idle", type=int, required=True)
    p.add_argument("--storm-addresses", type=int, required=True)
    p.add_argument("--storm-workers", type=int, required=True)
    p.add_argument("--storm-patience", type=float, required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sides, print the report on stdout, clean up whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    if raw_argv[:1] == ["peers"]:
        asyncio.run(peers_main())
        return 0
    if raw_argv[:1] == ["load"]:
        asyncio.run(load_main(child_args(raw_argv[1:])))
        return 0
    args = parse_args(raw_argv)
    _common.sigterm_as_interrupt()
    logs.configure(sys.stderr, "WARNING")
    cleanup = _common.Cleanup()
    wall = time.monotonic()
    with _common.cleaning_up(cleanup.run):
        binary = find_binary()
        header = machine_facts(binary)
        temp = Path(tempfile.mkdtemp(prefix="fdh-", dir="/tmp"))
        cleanup.temp_dir = temp
        progress(f"temp dir {temp}; registry server, peers ...")
        url, registry = _common.start_registry(binary, temp / "r", cleanup)
        secret = _common.write_secret(temp / "secret")
        asyncio.run(load_consent(url, secret))
        peers = Peers(cleanup, temp)
        config = temp / "filterd.toml"
        write_config(config, url, peers.sink_port, peers.carrier_port)
        bench = Bench(args, cleanup, temp, peers, config, registry.pid)
        sides = {"quiet": Side(), "hostile": Side()}
        per_round = args.requests // args.rounds
        for number in range(args.rounds):
            order = ["quiet", "hostile"] if number % 2 == 0 else ["hostile", "quiet"]
            for side in order:
                run_side(bench, side, per_round, sides[side], number + 1)
        quiet, hostile = sides["quiet"], sides["hostile"]
        command = _common.bench_command("bench/hostile.py", raw_argv)
        out = [
            *_common.report_head(
                "filterd hostile-network benchmark (SPEC §11)",
                command,
                [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
            ),
            "",
            *table(quiet, hostile),
            "",
            f"hostile = {args.idle:,} idle connections held per listener (from "
            f"{-(-args.idle // PER_ADDRESS)} addresses 127.0.0.{IDLE_FIRST}…, reopened when "
            f"closed) + a storm of {args.storm_workers} workers each against SMTP AUTH and "
            f"SMPP bind from {args.storm_addresses} addresses 127.0.0.{STORM_FIRST}…, a "
            f"connection per wrong guess, dropped after {args.storm_patience:g} s without "
            f"an answer; the load child runs at nice {args.attacker_nice} (an attacker's "
            "CPU is another machine's in the field; this machine has few cores). The "
            "legitimate client is 127.0.0.1, one request at a time, the "
            f"figures interleaved; {args.rounds} round(s), side order reversed every round; "
            "ratio = hostile ÷ quiet.",
            "",
            "checks (reported, not enforced):",
            *check_notes(sides),
            storm_note(args, hostile),
            *bench.stops,
            "",
            "notes:",
            *failures_notes(sides),
            f"- filterd CPU during the client's steps: quiet "
            f"{quiet.filterd_cpu_s / quiet.wall_s:.2f} cores, hostile "
            f"{hostile.filterd_cpu_s / hostile.wall_s:.2f} cores "
            f"({storm_cpu_note(quiet, hostile)}); "
            "other load (machine CPU from /proc/stat minus every process of this bench): quiet "
            f"{quiet.other_cpu_s / quiet.wall_s:.2f} cores, hostile "
            f"{hostile.other_cpu_s / hostile.wall_s:.2f} cores",
            *(f"- quiet {line[2:]}" for line in quiet.notes),
            *(f"- hostile {line[2:]}" for line in hostile.notes),
            "- every process shares the machine's cores: the client (this process), the "
            "load child, the peers child, Valkey and filterd.",
        ]
        print("\n".join(out), flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "processes stopped and temp files removed")
