"""SMPP relay benchmark: submit_sm/s and latency of `filterd serve` [smpp], with baselines.

Run from the repository root:

    .venv/bin/python bench/smpp.py [--quick] [--submits N] [--rounds R] [--window W]
                                   [--connections C] [--seconds T] [--smpplib N]
                                   [--compliance-only]

`--quick`: N = 4,000 submits per side in R = 2 rounds, T = 4 s of paced load per side
and rate, 1,000 smpplib submits per side (~30 s). Default: N = 40,000 submits per side
in R = 4 rounds, T = 10 s, 8,000 smpplib submits per side (~2 min on a 2-core VM).
N is split over R alternating rounds. `--compliance-only`: figure 4 alone, with only
its two relays (~30 to 45 s; with --quick ~10 s). The load goes over C client connections
(default 1), each with at most W submit_sm outstanding (default 80). filterd's
`[smpp] window` is set to 200, so the client is never throttled for its window.

Why W = 80: it was chosen when each accepted submit held a connection of redis-py's
pool (at most 100) while it wrote the carrier's message id, so about 100 submits in
flight made some fail with ESME_RTHROTTLED. Consent reads now go out in batches on one
connection of their own, and the message-id routes are written in batches behind the
answer (`filterd.routebook`), so that limit no longer applies; W stays 80 so that
figures compare with earlier runs. `--window` and `--connections` change it.

Everything runs on loopback against processes this script starts itself, in a temp
dir made with `tempfile.mkdtemp(dir="/tmp")`, and everything is stopped and removed at
the end, on an error, on Ctrl-C and on SIGTERM:

- one Valkey registry server (the binary the embedded registry picks and its config,
  `filterd.storage.embedded.server_config`: AOF on with `appendfsync always`, unix socket
  only, no TCP port); the system Redis on 6379 is never touched;
- a fake carrier SMSC: this same script run as a child process with `--carrier`
  (its own interpreter and event loop, so it does not share a core's worth of Python
  with the client): an asyncio server on filterd's SMPP codec that accepts any bind
  with password "bench", answers every submit_sm at once with ESME_ROK and a unique
  message id, and counts, per bound system_id, the submits, the sum of the CRC-32
  of their bodies (the bytes after the 16-byte header) and the submits whose body
  holds the cancel text 回T退订 in UTF-16BE. Asked over a pipe, it prints its
  counters as JSON;
- four `filterd serve` processes (figure 4's two alone with `--compliance-only`), each
  with `[smpp] listen = "127.0.0.1:0"` (the port is read from the `listening` log
  line), `[smpp] window = 200`, and `[smpp.upstream]` = the fake carrier with
  `window = 200` (the submits filterd keeps outstanding at the carrier; the default
  is 50), one `[[smpp.accounts]]` of sender "acme":
  `commercial` (stream = "commercial": one consent read per submit) and `reference`
  (the same config but stream = "transactional": the same relay code, carrier link
  and per-submit message-id write, no registry read); and figure 4's two, both
  commercial with `[compliance] cancel_method = "add"`, `quiet_hours = ""` and the same
  `[http]` (`listen = "127.0.0.1:0"`, `public_url`, which "add" requires): `checked`
  with `[[compliance.senders]] sender = "acme", signature = "【Acme】",
  sms_cancel_text = "回T退订"`, and `unchecked` without that table (so no text rule
  applies). Logging stays at INFO (one JSON line per decision, to a file in the temp
  dir), as in production.

Consent of sender "acme" (channel sms) is written for 10,000 numbers
+86138xxxxxxxx (random, fixed seed) with `RedisRegistry.record_many` and the relays'
secret before anything is timed; submit number i goes to number i mod 10,000.

The client is this process: an asyncio protocol on filterd's SMPP codec (pre-encoded
submit_sm bodies, a header packed per send, responses read by their header) that
binds as a transceiver and keeps W submits outstanding per connection.

Checks, so that a relay that drops or refuses cannot look fast: before timing, via
each relay, a consented number → ESME_ROK, a number without consent → 0x401 from
`commercial` and ESME_ROK from `reference`, a refused number → 0x400 from
`commercial`, and the carrier counted exactly the submits answered ESME_ROK. Via
figure 4's relays, figure 4's text whole, without its signature and without its
cancel text: ESME_ROK, 0x403 (one drop decision no_signature logged) and ESME_ROK
from `checked`, which sends the carrier the first as it came and the third with
回T退订 appended (CRC sum and counts at the carrier); three times ESME_ROK from
`unchecked`, all three sent as they came. In every timed run (warm-up runs too),
every submit_sm must be answered, all with ESME_ROK; the carrier's submit counter
for that relay must grow by exactly N and its CRC sum by exactly the sum of the
CRCs of the bodies it must receive: the bodies sent (every submit arrived once,
byte for byte), for `checked-add` the bodies with 回T退订 appended; the submits
holding 回T退订 at the carrier must grow by N in figure 4 and by 0 elsewhere; and
the relay's log must hold exactly N `decision` lines with decision = deliver.
Figure 4's checks print what the carrier counted over the timed runs.

Figures (ratio = filterd ÷ baseline):

1. submit_sm/s end to end (first submit written → last submit_sm_resp read) through
   `commercial` into the fake carrier, beside `reference` (target ratio ≥ 0.9), and beside
   the harness limit: the same client straight into the fake carrier (target for the
   absolute rate: ≥ 1,000 submit_sm/s). Plus the CPU time filterd and the registry
   server spent per submit (from /proc), less disturbed by other load than the rates.
2. smpplib (the client DESIGN.md names; synchronous, one thread) with the same window:
   send while fewer than W are outstanding, else `read_once()`; `commercial` vs
   `reference`. It measures smpplib more than the relay (see the harness row).
3. Latency: the client sends on a schedule at half the `commercial` rate of figure 1
   (the same rate for both sides), over the same C connections; per submit, the time
   from writing it to reading its submit_sm_resp. p50/p99, `commercial` vs `reference`,
   T s per side. Again at a quarter of that rate: a submit arriving alone costs filterd
   about twice the CPU of one in a busy window, so at half the windowed maximum filterd
   is already close to one busy core (the notes give its load during each run).
4. Compliance (target ratio ≥ 0.95): commercial single-part submit_sm, UCS2
   (data_coding 8), the realistic case of a 【…】 signature: 10,000 Chinese promotions
   of 34 characters (one SMS) that start with 【Acme】 and end with 回T退订, a code
   in the middle the submit's index (`promotion`; the notes print one), sent
   windowed as in figure 1 through `checked` (the texts carry the signature and the
   cancel text: checked, then forwarded byte for byte) beside `unchecked` (the same
   texts, nothing checked), after their own warm-up; submit_sm/s and filterd's CPU
   µs per submit (the steadier figure). Second row: `checked-add`, the same texts
   without 回T退订 through `checked`, which appends it under "add" and forwards the
   rewritten submit (then the same bytes as the baseline's at the carrier), beside
   the same `unchecked` runs. The three sides alternate in R rounds (checked,
   checked-add, unchecked, then the reverse) of N/R submits each; the notes give
   each round's ratios.

The notes give, per side, CPU µs/submit of filterd, the registry, the fake carrier and
the client, and the load on the machine that was not ours (machine CPU from
/proc/stat minus every process of this bench).

The report (markdown table, command, machine facts, checks, notes) goes to stdout;
progress lines go to stderr, so `... > result.md` keeps just the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import _common
import smpplib.client  # type: ignore[import-untyped]

from filterd import logs
from filterd.identity import ConsumerHasher
from filterd.model import Action, BulkRow, Channel, FactRequest, Kind, MessageClass
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.framer import MAX_PDU_LENGTH
from filterd.smpp.header import GENERIC_NACK, HEADER, HEADER_LENGTH, SUBMIT_SM, SUBMIT_SM_RESP
from filterd.smpp.pdu import (
    AnyPdu,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    EnquireLink,
    Pdu,
    SubmitSm,
    Unbind,
    UnbindResp,
    UnknownPdu,
    response_to,
)
from filterd.smpp.status import (
    ESME_RINVBNDSTS,
    ESME_RINVPASWD,
    ESME_ROK,
    FILTERD_NO_CONSENT,
    FILTERD_NO_SIGNATURE,
    FILTERD_REFUSED,
)
from filterd.smpp.text import DATA_CODING_UCS2
from filterd.storage.embedded import ServerBinary, find_binary
from filterd.storage.redis import RedisRegistry

SENDER = "acme"
NUMBERS = 10_000
SOURCE_ADDR = "10690001"
ACCOUNT_ID, ACCOUNT_PASSWORD = "tool", "tool-pw1"
CARRIER_PASSWORD = "bench"  # noqa: S105 (the fake carrier's)
RELAY_WINDOW = 200
UPSTREAM_WINDOW = 200
WARMUP_SUBMITS = 1_000
LATENCY_SHARES = (0.5, 0.25)
LOAD_BATCH = 5_000
TARGET_RATIO = 0.9
TARGET_RATE = 1_000.0
SIDES = ("commercial", "reference")
COMPLIANCE_SIDES = ("checked", "checked-add", "unchecked")
"""Figure 4's sides, in the order of even rounds (odd rounds reverse it)."""
RELAY_OF = {"checked-add": "checked"}
"""The relay of a side not named after its relay."""
UPSTREAM_IDS = {
    "commercial": "fd-commercial",
    "reference": "fd-reference",
    "checked": "fd-checked",
    "unchecked": "fd-unchecked",
}
DIRECT_ID = "direct"
SIGNATURE = "【Acme】"
CANCEL_TEXT = "回T退订"
MARKER = CANCEL_TEXT.encode("utf-16-be")
"""The cancel text as it travels in a UCS2 text; the fake carrier counts the submits
holding it."""
PUBLIC_URL = "https://filterd.bench"
TARGET_COMPLIANCE = 0.95
FILTERD = str(Path(sys.executable).parent / "filterd")
progress = _common.progress


# ---- CPU accounting ------------------------------------------------------------------


@dataclass
class Usage:
    """CPU seconds spent during measured intervals."""

    relay: float = 0.0
    registry: float = 0.0
    carrier: float = 0.0
    client: float = 0.0
    foreign: float = 0.0
    wall: float = 0.0

    def add(self, other: Usage) -> None:
        """Accumulate another interval."""
        for name in ("relay", "registry", "carrier", "client", "foreign", "wall"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Meter:
    """Measures one interval: the relay's CPU, the registry's, the carrier's, the client's,
    and everyone else's."""

    def __init__(self, bench: Bench, relay: Relay | None) -> None:
        self.relay_pids = [relay.process.pid] if relay else []
        self.registry_pid = bench.registry_pid
        self.carrier_pid = bench.carrier.process.pid
        self.ours = bench.all_pids()
        self.started = self._snapshot()

    def _snapshot(self) -> tuple[float, ...]:
        return (
            time.perf_counter(),
            _common.cpu_seconds(self.relay_pids),
            _common.cpu_seconds([self.registry_pid]),
            _common.cpu_seconds([self.carrier_pid]),
            _common.own_cpu_seconds(),
            _common.cpu_seconds(self.ours),
            _common.machine_busy_seconds(),
        )

    def stop(self) -> Usage:
        """The usage since construction."""
        wall, relay, registry, carrier, client, ours, machine = (
            b - a for a, b in zip(self.started, self._snapshot(), strict=True)
        )
        foreign = max(0.0, machine - ours - client)
        return Usage(relay, registry, carrier, client, foreign, wall)


# ---- children ----------------------------------------------------------------------


# ---- the fake carrier SMSC (child process) -------------------------------------------


@dataclass
class CarrierAccount:
    """What the fake carrier counted for one bound system_id."""

    binds: int = 0
    submits: int = 0
    crc: int = 0
    marked: int = 0
    """Submits whose body holds MARKER (the cancel text in UTF-16BE)."""
    unbinds: int = 0


@dataclass
class CarrierState:
    """The fake carrier's counters, shared by its connections."""

    accounts: dict[str, CarrierAccount] = field(default_factory=dict)
    ids: int = 0
    unbound_submits: int = 0
    refused_binds: int = 0
    protocol_errors: int = 0
    other: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        """The counters as one JSON line."""
        return json.dumps(
            {
                "accounts": {k: dataclasses.asdict(v) for k, v in self.accounts.items()},
                "unbound_submits": self.unbound_submits,
                "refused_binds": self.refused_binds,
                "protocol_errors": self.protocol_errors,
                "other": dict(self.other),
            }
        )


class CarrierProtocol(asyncio.Protocol):
    """One connection to the fake carrier: submit_sm answered at once (header-only fast
    path), everything else decoded and answered through the codec."""

    def __init__(self, state: CarrierState) -> None:
        self.state = state
        self.account: CarrierAccount | None = None
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Answer every whole PDU received, in one write."""
        buf = self.buffer
        buf += data
        out = bytearray()
        pos, size = 0, len(buf)
        state, account = self.state, self.account
        with memoryview(buf) as view:
            while size - pos >= HEADER_LENGTH and not self.closing:
                length, command_id, _, sequence = HEADER.unpack_from(buf, pos)
                if not HEADER_LENGTH <= length <= MAX_PDU_LENGTH:
                    state.protocol_errors += 1
                    self.closing = True
                    break
                if size - pos < length:
                    break
                if command_id == SUBMIT_SM and account is not None:
                    account.submits += 1
                    account.crc += zlib.crc32(view[pos + HEADER_LENGTH : pos + length])
                    if buf.find(MARKER, pos + HEADER_LENGTH, pos + length) >= 0:
                        account.marked += 1
                    state.ids += 1
                    message_id = b"%x\x00" % state.ids
                    out += HEADER.pack(
                        HEADER_LENGTH + len(message_id), SUBMIT_SM_RESP, ESME_ROK, sequence
                    )
                    out += message_id
                else:
                    reply = self._handle(bytes(view[pos : pos + length]))
                    account = self.account
                    if reply is not None:
                        out += encode(reply)
                pos += length
        del buf[:pos]
        if self.transport is not None:
            if out:
                self.transport.write(out)
            if self.closing:
                self.transport.close()

    def _handle(self, frame: bytes) -> Pdu | None:
        try:
            pdu = decode(frame)
        except SmppProtocolError as exc:
            self.state.protocol_errors += 1
            self.closing = exc.close
            return exc.reply()
        reply: Pdu | None = None
        if isinstance(pdu, BindTransceiver | BindTransmitter | BindReceiver):
            if pdu.password == CARRIER_PASSWORD:
                self.account = self.state.accounts.setdefault(pdu.system_id, CarrierAccount())
                self.account.binds += 1
                reply = response_to(pdu, ESME_ROK, system_id="smsc")
            else:
                self.state.refused_binds += 1
                self.closing = True
                reply = response_to(pdu, ESME_RINVPASWD)
        elif isinstance(pdu, SubmitSm):
            self.state.unbound_submits += 1
            reply = response_to(pdu, ESME_RINVBNDSTS)
        elif isinstance(pdu, Unbind):
            if self.account is not None:
                self.account.unbinds += 1
            self.closing = True
            reply = UnbindResp(sequence_number=pdu.sequence_number)
        elif not pdu.is_response:
            if not isinstance(pdu, EnquireLink):
                self.state.other[type(pdu).__name__] += 1
            reply = response_to(pdu)
        return reply


async def carrier_main() -> None:
    """The fake carrier: print `port N`, then a JSON line of counters per `stats` line
    read on stdin; stop at EOF on stdin."""
    loop = asyncio.get_running_loop()
    state = CarrierState()
    server = await loop.create_server(lambda: CarrierProtocol(state), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()

    def answer() -> None:
        sys.stdout.write(state.report() + "\n")
        sys.stdout.flush()

    def control() -> None:
        for line in sys.stdin.buffer:
            if line.strip() == b"stats":
                loop.call_soon_threadsafe(answer)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=control, daemon=True).start()
    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()


@dataclass
class Carrier:
    """The fake carrier child process, seen from the bench."""

    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, directory: Path, cleanup: _common.Cleanup) -> Carrier:
        """`python bench/smpp.py --carrier`; returns once it listens."""
        command = [sys.executable, str(Path(__file__).resolve()), "--carrier"]
        child = cleanup.spawn(command, log=None, cwd=directory, pipes=True)
        if child.stdout is None:
            raise RuntimeError("no pipe to the carrier")
        line = child.stdout.readline().decode()
        if not line.startswith("port "):
            raise RuntimeError(f"the fake carrier did not start: {line!r}")
        return cls(child, int(line.split()[1]))

    def stats(self) -> dict[str, Any]:
        """The carrier's counters now."""
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("no pipe to the carrier")
        self.process.stdin.write(b"stats\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake carrier exited ({self.process.poll()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def account(self, system_id: str) -> CarrierAccount:
        """The counters of one bound system_id (zeros before its first bind)."""
        raw = self.stats()["accounts"].get(system_id)
        return CarrierAccount(**raw) if raw else CarrierAccount()


# ---- the load: numbers and submit_sm bodies ------------------------------------------


@dataclass(frozen=True)
class Load:
    """The destination numbers, the submit_sm body for each, and the CRC-32 of each body
    as the carrier must receive it."""

    numbers: list[str]
    bodies: list[bytes]
    crcs: list[int]
    marked: bool = False
    """Whether every body reaches the carrier holding MARKER (the cancel text)."""

    @classmethod
    def build(cls, count: int) -> Load:
        """`count` distinct numbers 86138xxxxxxxx (fixed seed) and a submit_sm body each."""
        rng = random.Random(20_260_115)
        numbers = [f"86138{n:08d}" for n in rng.sample(range(10**8), count)]
        bodies = [body(number, index) for index, number in enumerate(numbers)]
        return cls(numbers, bodies, [zlib.crc32(b) for b in bodies])

    def promotions(self, *, cancel_text: bool) -> Load:
        """Figure 4's load: the same numbers, each with `promotion_body`, with or without
        the cancel text; the carrier must receive it with the cancel text either way."""
        full = [promotion_body(n, i) for i, n in enumerate(self.numbers)]
        sent = full
        if not cancel_text:
            sent = [promotion_body(n, i, cancel_text=False) for i, n in enumerate(self.numbers)]
        return Load(self.numbers, sent, [zlib.crc32(b) for b in full], marked=True)

    def slice(self, offset: int, count: int) -> tuple[list[bytes], int]:
        """The bodies of submits offset..offset+count-1 and the sum of their CRCs."""
        n = len(self.bodies)
        indexes = [(offset + i) % n for i in range(count)]
        return [self.bodies[i] for i in indexes], sum(self.crcs[i] for i in indexes)


def text(index: int) -> bytes:
    """A marketing text of ~90 GSM characters."""
    return (
        f"ACME: spring sale, 20% off everything this week with code B{index:05d}. "
        "Reply STOP to opt out"
    ).encode()


def promotion(index: int, *, signature: bool = True, cancel_text: bool = True) -> str:
    """Figure 4's text: a Chinese promotion of 34 characters (one UCS2 SMS) that starts
    with the signature and ends with the cancel text (either left out on request)."""
    words = f"双十一大促，全场五折，凭码B{index:05d}到店使用。"
    return (SIGNATURE if signature else "") + words + (CANCEL_TEXT if cancel_text else "")


def submit_pdu(number: str, short_message: bytes, data_coding: int = 0) -> SubmitSm:
    """The submit_sm for one destination (international number, no receipt asked)."""
    return SubmitSm(
        sequence_number=0, source_addr_ton=0, source_addr_npi=1, source_addr=SOURCE_ADDR,
        dest_addr_ton=1, dest_addr_npi=1, destination_addr=number, data_coding=data_coding,
        short_message=short_message,
    )  # fmt: skip


def body(number: str, index: int) -> bytes:
    """The submit_sm body (after the header), encoded by filterd's codec."""
    return encode(submit_pdu(number, text(index)))[HEADER_LENGTH:]


def promotion_body(
    number: str, index: int, *, signature: bool = True, cancel_text: bool = True
) -> bytes:
    """The body of a submit_sm of `promotion(...)` in UCS2 (data_coding 8)."""
    text_ = promotion(index, signature=signature, cancel_text=cancel_text)
    message = text_.encode("utf-16-be")
    return encode(submit_pdu(number, message, DATA_CODING_UCS2))[HEADER_LENGTH:]


# ---- the client (this process) ---------------------------------------------------------


class SmppError(RuntimeError):
    """An unexpected answer or a lost connection."""


class Session(asyncio.Protocol):
    """One ESME connection on the codec: bind, windowed submit_sm, unbind.

    submit_sm frames are the pre-encoded body behind a header packed per send;
    submit_sm_resp are read by their header alone. Anything else is decoded.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.out = bytearray()
        self.sequence = itertools.count(1)
        self.pending: dict[int, int] = {}
        self.latencies: list[int] = []
        self.statuses: Counter[int] = Counter()
        self.answered = 0
        self.last_answer_ns = 0
        self.other: Counter[str] = Counter()
        self.on_answers: Callable[[], None] | None = None
        self.waiter: asyncio.Future[Pdu] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake whoever waits."""
        if not self.lost.done():
            self.lost.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(SmppError(f"connection lost: {exc}"))

    def reset(self) -> None:
        """Forget the answers counted so far."""
        self.latencies, self.statuses, self.answered = [], Counter(), 0

    def queue(self, body_bytes: bytes, now_ns: int) -> None:
        """Add one submit_sm to the next write."""
        sequence = next(self.sequence)
        self.out += HEADER.pack(HEADER_LENGTH + len(body_bytes), SUBMIT_SM, 0, sequence)
        self.out += body_bytes
        self.pending[sequence] = now_ns

    def flush(self) -> None:
        """Write what is queued."""
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        """Count every submit_sm_resp; hand anything else to `_other`."""
        now = time.perf_counter_ns()
        buf = self.buffer
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= HEADER_LENGTH:
            length, command_id, status, sequence = HEADER.unpack_from(buf, pos)
            if length < HEADER_LENGTH:
                self.other["bad command_length"] += 1
                if self.transport is not None:
                    self.transport.close()
                return
            if size - pos < length:
                break
            if command_id == SUBMIT_SM_RESP and sequence in self.pending:
                self.latencies.append(now - self.pending.pop(sequence))
                self.statuses[status] += 1
                self.answered += 1
                self.last_answer_ns = now
            else:
                self._other(bytes(buf[pos : pos + length]), now)
            pos += length
        del buf[:pos]
        if self.on_answers is not None:
            self.on_answers()
        self.flush()

    def _other(self, frame: bytes, now: int) -> None:
        try:
            pdu: AnyPdu = decode(frame)
        except SmppProtocolError as exc:
            self.other[f"undecodable: {exc.reason}"] += 1
            return
        if pdu.command_id == GENERIC_NACK and pdu.sequence_number in self.pending:
            self.latencies.append(now - self.pending.pop(pdu.sequence_number))
            self.statuses[pdu.command_status] += 1
            self.answered += 1
            self.other["generic_nack"] += 1
        elif isinstance(pdu, Pdu) and pdu.is_response:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(pdu)
            else:
                self.other[type(pdu).__name__] += 1
        elif isinstance(pdu, UnknownPdu):
            self.other[f"command {pdu.command_id:#x}"] += 1
            self.out += encode(response_to(pdu))
        else:
            if not isinstance(pdu, EnquireLink):
                self.other[type(pdu).__name__] += 1
            self.out += encode(response_to(pdu))
            if isinstance(pdu, Unbind) and self.transport is not None:
                self.flush()
                self.transport.close()

    async def request(self, pdu: Pdu, wait_s: float = 15.0) -> Pdu:
        """Send one request (bind, unbind) and wait for its response."""
        if self.transport is None:
            raise SmppError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        pdu = dataclasses.replace(pdu, sequence_number=next(self.sequence))
        self.transport.write(encode(pdu))
        try:
            return await asyncio.wait_for(self.waiter, wait_s)
        finally:
            self.waiter = None

    async def close(self) -> None:
        """Unbind and close."""
        with contextlib.suppress(SmppError, TimeoutError):
            await self.request(Unbind(sequence_number=0), 5.0)
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), 5.0)


async def connect(port: int, system_id: str, password: str) -> Session:
    """A bound transceiver session."""
    loop = asyncio.get_running_loop()
    _, session = await loop.create_connection(Session, "127.0.0.1", port)
    answer = await session.request(
        BindTransceiver(sequence_number=0, system_id=system_id, password=password)
    )
    if answer.command_status != ESME_ROK:
        await session.close()
        raise SmppError(f"bind as {system_id} refused: status {answer.command_status:#x}")
    return session


@dataclass
class ClientRun:
    """What one client run saw: answers by status, latencies (ns), time taken."""

    submits: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[int] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    crc: int = 0
    late: list[float] = field(default_factory=list)
    window_full: int = 0

    def add(self, other: ClientRun) -> None:
        """Accumulate another run."""
        self.submits += other.submits
        self.seconds += other.seconds
        self.statuses += other.statuses
        self.latencies += other.latencies
        self.other += other.other
        self.crc += other.crc
        self.late += other.late
        self.window_full += other.window_full

    @property
    def rate(self) -> float:
        """Submits per second."""
        return self.submits / self.seconds if self.seconds else 0.0

    def percentile_ms(self, share: float) -> float:
        """The latency at `share` (0..1), in ms."""
        return _common.percentile(self.latencies, share, 1e6)


async def _sessions(port: int, system_id: str, password: str, count: int) -> list[Session]:
    return list(await asyncio.gather(*(connect(port, system_id, password) for _ in range(count))))


async def _finish(sessions: list[Session], run: ClientRun, done: asyncio.Future[None]) -> None:
    """Wait for `done` (or a lost connection), then collect the sessions' answers."""
    timeout = 60 + run.submits / 100
    lost = [asyncio.ensure_future(asyncio.shield(s.lost)) for s in sessions]
    try:
        finished, _ = await asyncio.wait(
            [done, *lost], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for future in lost:
            future.cancel()
    answered = sum(s.answered for s in sessions)
    if done not in finished:
        why = "a connection was lost" if finished else f"timed out after {timeout:.0f} s"
        raise SmppError(f"{why}: {answered} of {run.submits} submits answered")
    for s in sessions:
        run.statuses += s.statuses
        run.latencies += s.latencies
        run.other += s.other
    await asyncio.gather(*(s.close() for s in sessions))


async def windowed(
    port: int, system_id: str, password: str, *, bodies: list[bytes], window: int,
    connections: int,
) -> ClientRun:  # fmt: skip
    """Send `bodies` over `connections` sessions, each keeping `window` outstanding."""
    sessions = await _sessions(port, system_id, password, connections)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    run = ClientRun(submits=len(bodies))
    remaining = [len(sessions)]

    def driver(session: Session, share: list[bytes]) -> Callable[[], None]:
        feed = iter(share)
        total = len(share)
        finished = [total == 0]

        def pump() -> None:
            now = time.perf_counter_ns()
            while len(session.pending) < window:
                item = next(feed, None)
                if item is None:
                    break
                session.queue(item, now)
            if not finished[0] and session.answered >= total:
                finished[0] = True
                remaining[0] -= 1
                if remaining[0] == 0 and not done.done():
                    done.set_result(None)

        return pump

    shares = [bodies[i :: len(sessions)] for i in range(len(sessions))]
    pumps = [driver(s, share) for s, share in zip(sessions, shares, strict=True)]
    for session, pump in zip(sessions, pumps, strict=True):
        session.reset()
        session.on_answers = pump
    started = time.perf_counter_ns()
    for session, pump in zip(sessions, pumps, strict=True):
        pump()
        session.flush()
    await _finish(sessions, run, done)
    run.seconds = (max(s.last_answer_ns for s in sessions) - started) / 1e9
    return run


async def paced(
    port: int, system_id: str, password: str, *, bodies: list[bytes], window: int,
    connections: int, rate: float,
) -> ClientRun:  # fmt: skip
    """Send `bodies` on a schedule (`rate` per second), round robin over the sessions."""
    sessions = await _sessions(port, system_id, password, connections)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    run = ClientRun(submits=len(bodies))
    total = len(bodies)

    def check() -> None:
        if sum(s.answered for s in sessions) >= total and not done.done():
            done.set_result(None)

    for session in sessions:
        session.reset()
        session.on_answers = check
    started = time.perf_counter_ns()
    start = loop.time() + 0.05
    index = 0
    while index < total:
        now = loop.time()
        due = min(total, int((now - start) * rate) + 1)
        stamp = time.perf_counter_ns()
        while index < due:
            session = sessions[index % len(sessions)]
            if len(session.pending) >= window:
                run.window_full += 1
                break
            run.late.append(now - (start + index / rate))
            session.queue(bodies[index], stamp)
            index += 1
        for session in sessions:
            session.flush()
        delay = start + index / rate - loop.time()
        await asyncio.sleep(max(0.001 if index < due else 0.0, delay))
    await _finish(sessions, run, done)
    run.seconds = (max(s.last_answer_ns for s in sessions) - started) / 1e9
    return run


async def probe(port: int, system_id: str, password: str, bodies: list[bytes]) -> list[int]:
    """One submit_sm per body, one after another; the status of each answer."""
    session = await connect(port, system_id, password)
    statuses: list[int] = []
    try:
        for index, body_bytes in enumerate(bodies):
            session.reset()
            session.queue(body_bytes, time.perf_counter_ns())
            session.flush()
            deadline = time.monotonic() + 15
            while not session.answered:
                if time.monotonic() > deadline or session.lost.done():
                    raise SmppError(f"no answer to submit_sm {index} of the probe")
                await asyncio.sleep(0.002)
            statuses.extend(session.statuses.elements())
    finally:
        await session.close()
    return statuses


# ---- smpplib -------------------------------------------------------------------------


def smpplib_run(port: int, numbers: list[str], count: int, window: int) -> ClientRun:
    """smpplib (synchronous) with a window: send while < window outstanding, else read."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=30, allow_unknown_opt_params=True)
    run = ClientRun(submits=count)
    client.set_message_sent_handler(lambda pdu, **kw: run.statuses.update([pdu.status]))
    client.set_error_pdu_handler(lambda pdu: None)  # counted by status above
    client.connect()
    try:
        client.bind_transceiver(system_id=ACCOUNT_ID, password=ACCOUNT_PASSWORD)
        sent = 0
        started = time.perf_counter()
        while run.statuses.total() < count:
            while sent < count and sent - run.statuses.total() < window:
                client.send_message(
                    source_addr_ton=0, source_addr_npi=1, source_addr=SOURCE_ADDR,
                    dest_addr_ton=1, dest_addr_npi=1,
                    destination_addr=numbers[sent % len(numbers)], short_message=text(sent),
                )  # fmt: skip
                sent += 1
            client.read_once()
        run.seconds = time.perf_counter() - started
        client.unbind()
    finally:
        client.disconnect()
    return run


# ---- relays ------------------------------------------------------------------------


def write_config(
    path: Path, *, registry_url: str, secret_file: Path, carrier: int, stream: str,
    upstream_id: str, extra: str = "",
) -> None:  # fmt: skip
    """The relay config: one account, the fake carrier upstream; `extra`: more tables
    (figure 4's [http] and [compliance])."""
    config = f"""[registry]
url = "{registry_url}"
secret_file = "{secret_file}"
default_region = "CN"

[smpp]
listen = "127.0.0.1:0"
window = {RELAY_WINDOW}

[smpp.upstream]
host = "127.0.0.1"
port = {carrier}
system_id = "{upstream_id}"
password = "{CARRIER_PASSWORD}"
window = {UPSTREAM_WINDOW}

[[smpp.accounts]]
system_id = "{ACCOUNT_ID}"
password = "{ACCOUNT_PASSWORD}"
sender = "{SENDER}"
stream = "{stream}"
{extra}"""
    path.write_text(config, encoding="utf-8")


def compliance_tables(*, senders: bool) -> str:
    """Figure 4's [http] (any free port) and [compliance] (cancel_method = "add", no quiet
    hours), the same on both relays; `senders`: with the [[compliance.senders]] table
    giving SENDER its signature and cancel text."""
    tables = f"""
[http]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"

[compliance]
cancel_method = "add"
quiet_hours = ""
"""
    if senders:
        tables += f"""
[[compliance.senders]]
sender = "{SENDER}"
signature = "{SIGNATURE}"
sms_cancel_text = "{CANCEL_TEXT}"
"""
    return tables


@dataclass
class Relay:
    """A `filterd serve` child with its config and log."""

    name: str
    upstream_id: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes]
    port: int = 0
    offset: int = 0

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written since the last call."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "(not JSON)", "level": "?"})
        return out

    def tally(self) -> Counter[str]:
        """Log events since the last call: `decision:deliver/None`, `level:event`, ..."""
        found: Counter[str] = Counter()
        for record in self.records():
            event = record.get("event")
            if event == "decision":
                found[f"decision:{record.get('decision')}/{record.get('reason')}"] += 1
            else:
                found[f"{record.get('level')}:{event}"] += 1
        return found


def start_relay(
    name: str, stream: str, *, carrier: Carrier, registry_url: str, secret_file: Path,
    cleanup: _common.Cleanup, extra: str = "",
) -> Relay:  # fmt: skip
    """`filterd serve --config CFG`; returns once it listens and is bound to the carrier."""
    directory = cleanup.temp_dir
    if directory is None:
        raise RuntimeError("no temp dir yet")
    config = directory / f"{name}.toml"
    upstream_id = UPSTREAM_IDS[name]
    write_config(
        config, registry_url=registry_url, secret_file=secret_file, carrier=carrier.port,
        stream=stream, upstream_id=upstream_id, extra=extra,
    )  # fmt: skip
    log = directory / f"{name}.log"
    child = cleanup.spawn([FILTERD, "serve", "--config", str(config)], log=log, cwd=directory)
    relay = Relay(name, upstream_id, config, log, child)
    bound = False
    deadline = time.monotonic() + 60
    while not (relay.port and bound):
        if child.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"filterd {name} did not start ({child.poll()}): {tail}")
        time.sleep(0.05)
        for record in relay.records():
            if record.get("event") == "listening" and record.get("front_end") == "smpp":
                relay.port = int(record["port"])
            elif record.get("event") == "carrier_bound":
                bound = True
    if carrier.account(upstream_id).binds < 1:
        raise RuntimeError(f"filterd {name} logged carrier_bound, the carrier saw no bind")
    return relay


# ---- consent ---------------------------------------------------------------------


async def load_consent(url: str, secret: bytes, load: Load, extra: dict[str, str]) -> float:
    """Consent of SENDER (sms) for every number of the load; a refusal for extra["refused"].
    Seconds taken by the consents; checks a sample with Service.screen."""
    hasher = ConsumerHasher(secret)
    registry = RedisRegistry.from_url(url)
    service = Service(registry, hasher, request_ttl_s=3600)
    now = int(time.time() * 1000)
    try:
        started = time.perf_counter()
        addresses = [normalize("+" + n) for n in load.numbers]
        for start in range(0, len(addresses), LOAD_BATCH):
            rows = [
                BulkRow(hasher.consumer_id(a), Kind.CONSENT, SENDER, Channel.SMS, now, "bench")
                for a in addresses[start : start + LOAD_BATCH]
            ]
            await service.record_bulk(rows)
        seconds = time.perf_counter() - started
        refused = normalize("+" + extra["refused"])
        await service.record(
            FactRequest(refused, Kind.REFUSAL, SENDER, Channel.SMS, "bench"), origin="bench"
        )
        sample = [addresses[0], addresses[len(addresses) // 2], addresses[-1]]
        sample += [normalize("+" + extra["no_consent"]), refused]
        decisions = await service.screen(SENDER, MessageClass.COMMERCIAL, sample, origin="bench")
        actions = [d.action for d in decisions]
        if actions != [Action.DELIVER] * 3 + [Action.DROP] * 2:
            raise RuntimeError(f"consent not as loaded: {actions}")
        return seconds
    finally:
        await registry.close()


# ---- the bench -----------------------------------------------------------------------


@dataclass
class Bench:
    """The shared set-up and parameters."""

    carrier: Carrier
    relays: dict[str, Relay]
    registry_pid: int
    load: Load
    window: int
    connections: int
    offset: int = 0
    loads: dict[str, Load] = field(default_factory=dict)
    """The load of a side that does not send `load` (figure 4's)."""
    at_carrier: dict[str, Counter[str]] = field(default_factory=dict)
    """Per side, what the carrier counted in its checked runs: submits, marked."""
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_pids(self) -> list[int]:
        """Every long-running child of the bench (registry, carrier, relays)."""
        return [
            self.registry_pid,
            self.carrier.process.pid,
            *(r.process.pid for r in self.relays.values()),
        ]

    def load_of(self, side: str) -> Load:
        """What a side sends."""
        return self.loads.get(side, self.load)

    def relay_of(self, side: str) -> Relay | None:
        """The relay a side goes through (None: straight into the carrier)."""
        return self.relays.get(RELAY_OF.get(side, side))

    def next_bodies(self, side: str, count: int) -> tuple[list[bytes], int]:
        """The next `count` submits' bodies of a side's load (numbers in turn) and the sum
        of their CRCs at the carrier."""
        bodies, crc = self.load_of(side).slice(self.offset, count)
        self.offset += count
        return bodies, crc


def target(side: str, bench: Bench) -> tuple[int, str, str]:
    """(port, system_id, password) the client binds to for a side."""
    relay = bench.relay_of(side)
    if relay is None:
        return bench.carrier.port, DIRECT_ID, CARRIER_PASSWORD
    return relay.port, ACCOUNT_ID, ACCOUNT_PASSWORD


def verify_run(bench: Bench, side: str, run: ClientRun, before: CarrierAccount) -> None:
    """Every submit answered ESME_ROK, counted once at the carrier byte for byte (as the
    side's load says it must arrive), holding the cancel text where the load says so, and
    (through a relay) logged as one deliver decision."""
    relay = bench.relay_of(side)
    upstream_id = relay.upstream_id if relay else DIRECT_ID
    after = bench.carrier.account(upstream_id)
    marked = after.marked - before.marked
    problems = []
    if run.statuses != Counter({ESME_ROK: run.submits}):
        shown = {f"{k:#x}": v for k, v in run.statuses.items()}
        problems.append(f"answers by status {shown}, expected {{0x0: {run.submits}}}")
    if run.other:
        problems.append(f"other PDUs {dict(run.other)}")
    if after.submits - before.submits != run.submits:
        problems.append(f"carrier counted {after.submits - before.submits} of {run.submits}")
    if after.crc - before.crc != run.crc:
        problems.append("the CRC sum at the carrier differs from the bodies expected there")
    if marked != (run.submits if bench.load_of(side).marked else 0):
        problems.append(f"{marked} of {run.submits} submits at the carrier hold {CANCEL_TEXT}")
    seen = bench.at_carrier.setdefault(side, Counter())
    seen.update(submits=after.submits - before.submits, marked=marked)
    if relay is not None:
        tally = relay.tally()
        delivered = tally.pop("decision:deliver/None", 0)
        for key in ("info:bound",):
            tally.pop(key, None)
        if delivered != run.submits:
            problems.append(f"{delivered} deliver decisions logged for {run.submits} submits")
        if tally:
            bench.notes.append(f"- {side}: other log events during a run: {dict(tally)}")
    if problems:
        raise RuntimeError(f"{side}: " + "; ".join(problems))


def client_run(bench: Bench, side: str, count: int, *, rate: float | None = None) -> ClientRun:
    """One checked run of the codec client into a side (windowed, or paced at `rate`)."""
    port, system_id, password = target(side, bench)
    bodies, crc = bench.next_bodies(side, count)
    relay = bench.relay_of(side)
    before = bench.carrier.account(relay.upstream_id if relay else DIRECT_ID)
    if rate is None:
        coro = windowed(
            port, system_id, password, bodies=bodies, window=bench.window,
            connections=bench.connections,
        )  # fmt: skip
    else:
        coro = paced(
            port, system_id, password, bodies=bodies, window=bench.window,
            connections=bench.connections, rate=rate,
        )  # fmt: skip
    run = asyncio.run(coro)
    run.crc = crc
    verify_run(bench, side, run, before)
    return run


@dataclass
class Side:
    """One side's runs of one kind, with the CPU they cost."""

    run: ClientRun = field(default_factory=ClientRun)
    usage: Usage = field(default_factory=Usage)
    rounds: list[tuple[float, float]] = field(default_factory=list)
    """Per run: submit_sm/s and filterd's CPU µs per submit."""

    def cpu_us(self, *names: str) -> float:
        """CPU µs per submit of the named parts (relay, registry, carrier, client)."""
        seconds = sum(getattr(self.usage, n) for n in names)
        return seconds * 1e6 / self.run.submits if self.run.submits else float("nan")

    def other_cores(self) -> float:
        """Cores busy with processes not of this bench, on average."""
        return self.usage.foreign / self.usage.wall if self.usage.wall else float("nan")


@dataclass
class Results:
    """Every measurement, by side (paced: by share of the windowed rate, then side)."""

    rates: dict[str, Side] = field(default_factory=dict)
    smpplib: dict[str, Side] = field(default_factory=dict)
    compliance: dict[str, Side] = field(default_factory=dict)
    paced: dict[float, dict[str, Side]] = field(default_factory=dict)
    paced_rate: dict[float, float] = field(default_factory=dict)


def measured(bench: Bench, side: str, into: Side, run: Callable[[], ClientRun]) -> ClientRun:
    """Run and meter one run; add it to `into`."""
    meter = Meter(bench, bench.relay_of(side))
    result = run()
    usage = meter.stop()
    into.run.add(result)
    into.usage.add(usage)
    cpu_us = usage.relay * 1e6 / result.submits if result.submits else float("nan")
    into.rounds.append((result.rate, cpu_us))
    return result


def checks(bench: Bench, extra: dict[str, str]) -> None:
    """Statuses of single submits via each relay; the carrier counts only what passed."""
    consented = bench.load.numbers[0]
    cases = [consented, extra["no_consent"], extra["refused"]]
    expected = {
        "commercial": [ESME_ROK, FILTERD_NO_CONSENT, FILTERD_REFUSED],
        "reference": [ESME_ROK, ESME_ROK, ESME_ROK],
    }
    for side, wanted in expected.items():
        relay = bench.relays[side]
        before = bench.carrier.account(relay.upstream_id).submits
        bodies = [body(number, index) for index, number in enumerate(cases)]
        got = asyncio.run(probe(relay.port, ACCOUNT_ID, ACCOUNT_PASSWORD, bodies))
        counted = bench.carrier.account(relay.upstream_id).submits - before
        relay.tally()
        if got != wanted or counted != wanted.count(ESME_ROK):
            raise RuntimeError(
                f"{side}: statuses {[hex(s) for s in got]} (expected "
                f"{[hex(s) for s in wanted]}), carrier counted {counted}"
            )
        bench.checks.append(
            f"- via {side}: consented +{consented} → {got[0]:#x}, no consent "
            f"+{extra['no_consent']} → {got[1]:#x}, refused +{extra['refused']} → "
            f"{got[2]:#x}; the carrier counted {counted} submit(s)"
        )


def compliance_checks(bench: Bench) -> None:
    """Figure 4's relays before timing: the signature and cancel text are checked (and the
    cancel text appended) via `checked` only, and the carrier gets what each must send."""
    numbers = bench.load.numbers[:3]
    sent = [
        promotion_body(numbers[0], 0),
        promotion_body(numbers[1], 1, signature=False),
        promotion_body(numbers[2], 2, cancel_text=False),
    ]
    appended = promotion_body(numbers[2], 2)
    expected = {  # statuses; at the carrier: submits, holding the cancel text, CRC sum
        "checked": ([ESME_ROK, FILTERD_NO_SIGNATURE, ESME_ROK], 2, 2,
                    zlib.crc32(sent[0]) + zlib.crc32(appended)),
        "unchecked": ([ESME_ROK] * 3, 3, 2, sum(zlib.crc32(b) for b in sent)),
    }  # fmt: skip
    for name, (wanted, submits, marked, crc) in expected.items():
        relay = bench.relays[name]
        before = bench.carrier.account(relay.upstream_id)
        got = asyncio.run(probe(relay.port, ACCOUNT_ID, ACCOUNT_PASSWORD, sent))
        after = bench.carrier.account(relay.upstream_id)
        found = (after.submits - before.submits, after.marked - before.marked)
        refusals = relay.tally().get("decision:drop/no_signature", 0)
        if got != wanted or found != (submits, marked) or after.crc - before.crc != crc:
            raise RuntimeError(
                f"{name}: statuses {[hex(s) for s in got]} (expected "
                f"{[hex(s) for s in wanted]}); at the carrier {found[0]} submit(s), "
                f"{found[1]} with {CANCEL_TEXT} (expected {submits}, {marked}); CRC sum "
                f"{'as' if after.crc - before.crc == crc else 'not as'} expected"
            )
        if refusals != wanted.count(FILTERD_NO_SIGNATURE):
            raise RuntimeError(f"{name}: {refusals} drop decisions no_signature logged")
        bench.checks.append(
            f"- figure 4 via {name}: the promotion whole → {got[0]:#x}, without "
            f"{SIGNATURE} → {got[1]:#x}, without {CANCEL_TEXT} → {got[2]:#x}; the carrier "
            f"counted {found[0]} submit(s), {found[1]} holding {CANCEL_TEXT}, byte for byte "
            + ("as sent but the last with it appended" if name == "checked" else "as sent")
            + f"; {refusals} drop decision(s) no_signature logged"
        )


def phase_throughput(bench: Bench, per_run: int, rounds: int, res: Results) -> None:
    """Figure 1: the windowed client into each side, order reversed every round."""
    for number in range(rounds):
        order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
        for side in [DIRECT_ID, *order]:
            into = res.rates.setdefault(side, Side())
            run = measured(bench, side, into, functools.partial(client_run, bench, side, per_run))
            progress(
                f"  {side:10} {run.rate:8,.0f} submit_sm/s ({run.submits:,} in "
                f"{run.seconds:.2f} s, p50 {run.percentile_ms(0.5):.1f} ms)"
            )


def phase_compliance(bench: Bench, per_run: int, rounds: int, res: Results) -> None:
    """Figure 4: the windowed client into `checked` (texts carrying the signature and the
    cancel text, then texts without the cancel text) and `unchecked`, order reversed every
    round; what the carrier counted goes into the checks."""
    for side in COMPLIANCE_SIDES:
        bench.at_carrier.pop(side, None)
    for number in range(rounds):
        order = COMPLIANCE_SIDES if number % 2 == 0 else COMPLIANCE_SIDES[::-1]
        for side in order:
            into = res.compliance.setdefault(side, Side())
            run = measured(bench, side, into, functools.partial(client_run, bench, side, per_run))
            progress(
                f"  {side:11} {run.rate:8,.0f} submit_sm/s ({run.submits:,} in "
                f"{run.seconds:.2f} s, filterd {into.rounds[-1][1]:,.0f} CPU µs/submit)"
            )
    seen = {side: bench.at_carrier[side] for side in COMPLIANCE_SIDES}
    bench.checks.append(
        f"- figure 4, every timed run: checked: {res.compliance['checked'].run.submits:,} "
        f"submits, all answered ESME_ROK (none refused); the carrier got "
        f"{seen['checked']['submits']:,}, {seen['checked']['marked']:,} holding "
        f"{CANCEL_TEXT}, CRC sum = that of the bodies sent (texts unchanged). checked-add: "
        f"{res.compliance['checked-add'].run.submits:,} submits without {CANCEL_TEXT}, all "
        f"ESME_ROK; the carrier got {seen['checked-add']['submits']:,}, "
        f"{seen['checked-add']['marked']:,} holding {CANCEL_TEXT}, CRC sum = that of the "
        f"bodies with {CANCEL_TEXT} appended. unchecked: "
        f"{res.compliance['unchecked'].run.submits:,} submits, all ESME_ROK; the carrier got "
        f"{seen['unchecked']['submits']:,}, {seen['unchecked']['marked']:,} holding "
        f"{CANCEL_TEXT}, CRC sum as sent"
    )


def phase_smpplib(bench: Bench, count: int, rounds: int, res: Results) -> None:
    """Figure 2: smpplib into each relay, counted at the carrier."""
    for number in range(rounds):
        order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
        for side in order:
            relay = bench.relays[side]
            into = res.smpplib.setdefault(side, Side())
            before = bench.carrier.account(relay.upstream_id).submits
            job = functools.partial(
                smpplib_run, relay.port, bench.load.numbers, count // rounds, bench.window
            )
            run = measured(bench, side, into, job)
            counted = bench.carrier.account(relay.upstream_id).submits - before
            delivered = relay.tally().get("decision:deliver/None", 0)
            if run.statuses != Counter({ESME_ROK: run.submits}) or not (
                counted == delivered == run.submits
            ):
                raise RuntimeError(
                    f"smpplib via {side}: statuses {dict(run.statuses)}, carrier counted "
                    f"{counted}, {delivered} deliver decisions, {run.submits} sent"
                )
            progress(f"  smpplib {side:10} {run.rate:8,.0f} submit_sm/s")


def phase_latency(bench: Bench, seconds: float, rounds: int, res: Results) -> None:
    """Figure 3: the paced client at shares of the commercial rate, commercial vs reference
    (and, at the first share, the harness: the client straight into the carrier)."""
    for share in LATENCY_SHARES:
        rate = res.rates["commercial"].run.rate * share
        res.paced_rate[share] = rate
        count = max(100, int(rate * seconds / rounds))
        sides = res.paced.setdefault(share, {})
        for number in range(rounds):
            order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
            if number == 0 and share == LATENCY_SHARES[0]:
                order.append(DIRECT_ID)
            for side in order:
                into = sides.setdefault(side, Side())
                job = functools.partial(client_run, bench, side, count, rate=rate)
                run = measured(bench, side, into, job)
                progress(
                    f"  {side:10} at {rate:,.0f}/s: p50 {run.percentile_ms(0.5):.2f} ms, "
                    f"p99 {run.percentile_ms(0.99):.2f} ms ({run.rate:,.0f} submit_sm/s)"
                )


# ---- report ----------------------------------------------------------------------


def build_table(bench: Bench, res: Results, per_run: int, rounds: int) -> _common.Table:
    """The final table from the measurements (figures 1-3 unless --compliance-only)."""
    t = _common.Table()
    if res.rates:
        figures_1_to_3(t, bench, res, rounds)
    if res.compliance:
        figure_4(t, bench, res, rounds)
    return t


def figures_1_to_3(t: _common.Table, bench: Bench, res: Results, rounds: int) -> None:
    """The rows of figures 1-3."""
    com, ref, direct = (res.rates[s] for s in ("commercial", "reference", DIRECT_ID))
    load = (
        f"window {bench.window} × {bench.connections} connection(s), "
        f"{com.run.submits:,} submits in {rounds} round(s)"
    )
    ratio_ok = com.run.rate / ref.run.rate >= TARGET_RATIO
    t.add(
        f"1. submit_sm/s end to end, {load} (baseline: reference = transactional account, "
        "no registry read)",
        com.run.rate,
        ref.run.rate,
        f"≥ {TARGET_RATIO}× {_common.mark(ratio_ok)}",
    )
    t.add(
        "1. submit_sm/s end to end (baseline: harness limit = the same client straight into "
        "the fake carrier)",
        com.run.rate,
        direct.run.rate,
        f"≥ {TARGET_RATE:,.0f}/s {_common.mark(com.run.rate >= TARGET_RATE)}",
    )
    t.add(
        "1. CPU µs/submit of filterd + registry (baseline: reference)",
        com.cpu_us("relay", "registry"),
        ref.cpu_us("relay", "registry"),
    )
    if res.smpplib:
        s_com, s_ref = res.smpplib["commercial"], res.smpplib["reference"]
        t.add(
            f"2. submit_sm/s with smpplib {smpplib_version()}, window {bench.window}, 1 "
            f"connection, {s_com.run.submits:,} submits (baseline: reference)",
            s_com.run.rate,
            s_ref.run.rate,
        )
    for load_share, sides in res.paced.items():
        p_com, p_ref = sides["commercial"], sides["reference"]
        rate = res.paced_rate[load_share]
        busy = p_com.usage.relay / p_com.usage.wall
        for label, share in (("p50", 0.5), ("p99", 0.99)):
            ours, base = p_com.run.percentile_ms(share), p_ref.run.percentile_ms(share)
            t.add(
                f"3. latency {label}, ms, submit_sm → submit_sm_resp at {rate:,.0f}/s "
                f"({_fraction(load_share)} of figure 1; filterd {busy:.2f} cores busy), "
                f"{p_com.run.submits:,} submits (baseline: reference)",
                ours,
                base,
                f"added {ours - base:+.2f} ms",
                2,
            )


def figure_4(t: _common.Table, bench: Bench, res: Results, rounds: int) -> None:
    """The rows of figure 4: checked vs unchecked, then checked-add vs unchecked."""
    checked, add, unchecked = (res.compliance[s] for s in COMPLIANCE_SIDES)
    ratio = checked.run.rate / unchecked.run.rate
    load = (
        f"window {bench.window} × {bench.connections} connection(s), "
        f"{checked.run.submits:,} submits in {rounds} round(s)"
    )
    t.add(
        f"4. submit_sm/s, commercial, one UCS2 SMS carrying signature {SIGNATURE} and cancel "
        f"text {CANCEL_TEXT}, {load}, through `[[compliance.senders]]` with both (baseline: "
        "the same relay config without that table)",
        checked.run.rate,
        unchecked.run.rate,
        f"≥ {TARGET_COMPLIANCE}× {_common.mark(ratio >= TARGET_COMPLIANCE)} ({ratio:.3f}×)",
    )
    t.add(
        "4. CPU µs/submit of filterd, the same (baseline: the same)",
        checked.cpu_us("relay"),
        unchecked.cpu_us("relay"),
    )
    t.add(
        f"4. submit_sm/s, the same texts without {CANCEL_TEXT}, appended by filterd "
        '(`cancel_method = "add"`) (baseline: the same as above, the texts with it)',
        add.run.rate,
        unchecked.run.rate,
    )
    t.add(
        f"4. CPU µs/submit of filterd, {CANCEL_TEXT} appended (baseline: the same)",
        add.cpu_us("relay"),
        unchecked.cpu_us("relay"),
    )


def _fraction(share: float) -> str:
    return {0.5: "½", 0.25: "¼"}.get(share, f"{share:g}×")


def diagnostics(res: Results) -> list[str]:
    """CPU per submit of every part, other load, pacing accuracy."""
    lines = []
    groups = [("windowed", res.rates), ("smpplib", res.smpplib)]
    groups += [(f"paced at {_fraction(k)}", v) for k, v in res.paced.items()]
    groups += [("figure 4", res.compliance)]
    for kind, sides in groups:
        for side, s in sides.items():
            run = s.run
            text_ = (
                f"- {kind} {side}: {run.submits:,} submits in {run.seconds:.2f} s "
                f"({run.rate:,.0f}/s); CPU µs/submit filterd {s.cpu_us('relay'):,.0f}, "
                f"registry {s.cpu_us('registry'):,.0f}, carrier {s.cpu_us('carrier'):,.0f}, "
                f"client {s.cpu_us('client'):,.0f}; other load {s.other_cores():.2f} cores"
            )
            if run.latencies:
                text_ += (
                    f"; latency p50 {run.percentile_ms(0.5):.2f} ms, "
                    f"p99 {run.percentile_ms(0.99):.2f} ms"
                )
            if s.usage.relay:
                text_ += f"; filterd {s.usage.relay / s.usage.wall:.2f} cores busy"
            if run.late:
                late = sorted(run.late)
                text_ += (
                    f"; sends behind schedule p50 {statistics.median(late) * 1000:.2f} ms, max "
                    f"{late[-1] * 1000:.1f} ms; window full {run.window_full} time(s)"
                )
            lines.append(text_)
    if res.compliance:
        checked, add, unchecked = (res.compliance[s].rounds for s in COMPLIANCE_SIDES)
        runs = ", ".join(
            f"{a[0] / b[0]:.2f}× ({a[1]:,.0f} vs {b[1]:,.0f} µs)"
            for a, b in zip(checked, unchecked, strict=True)
        )
        runs_add = ", ".join(
            f"{a[0] / b[0]:.2f}× ({a[1]:,.0f} vs {b[1]:,.0f} µs)"
            for a, b in zip(add, unchecked, strict=True)
        )
        lines.append(
            f"- figure 4 by round, submit_sm/s ratio (filterd CPU µs/submit): checked ÷ "
            f"unchecked {runs}; checked-add ÷ unchecked {runs_add}"
        )
    return lines


def smpplib_version() -> str:
    """The installed smpplib version."""
    try:
        return importlib.metadata.version("smpplib")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _filesystem(path: Path) -> str:
    """The file system type and device holding `path` (from /proc/mounts)."""
    best, found = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, found = mount, f"{kind} ({device} on {mount})"
    return found


def machine_facts(binary: ServerBinary) -> list[str]:
    """nproc, CPU, Python, libraries, server version, file system of the AOF."""
    names = ("filterd", "redis", "hiredis", "structlog", "smpplib")
    version = _common.command_version([binary.path, "--version"])
    return [
        f"- code: {_common.code_version()}",
        _common.machine_line(),
        _common.python_line(names),
        f"- registry server: {binary.path} ({version}); AOF "
        f"with appendfsync always on {_filesystem(Path(tempfile.gettempdir()))}",
        _common.environment_line(),
        _common.loadavg_line("start"),
    ]


# ---- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--quick, --submits, --rounds, --window, --connections, --seconds, --smpplib,
    --compliance-only."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4,000 submits per side, 4 s paced")
    p.add_argument("--submits", type=int, help="windowed submits per side (default 40,000)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 4; --quick 2)")
    p.add_argument("--window", type=int, default=80, help="outstanding per connection (80)")
    p.add_argument("--connections", type=int, default=1, help="client connections (default 1)")
    p.add_argument("--seconds", type=float, help="paced load per latency side (default 10)")
    p.add_argument("--smpplib", type=int, help="smpplib submits per side (default 8,000; 0: off)")
    p.add_argument(
        "--compliance-only",
        action="store_true",
        help="figure 4 alone: signature and cancel text checked vs not",
    )
    p.add_argument("--carrier", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.submits is None:
        args.submits = 4_000 if args.quick else 40_000
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 10.0
    if args.smpplib is None:
        args.smpplib = 1_000 if args.quick else 8_000
    if args.rounds is None:
        args.rounds = 2 if args.quick else 4
    if (
        args.rounds < 1
        or args.submits < 100 * args.rounds
        or not 1 <= args.window <= RELAY_WINDOW
        or args.connections < 1
        or args.smpplib < 0
    ):
        p.error(
            f"need --rounds ≥ 1, --submits ≥ 100 × rounds, 1 ≤ --window ≤ {RELAY_WINDOW}, "
            "--connections ≥ 1, --smpplib ≥ 0"
        )
    return args


def setup(args: argparse.Namespace, binary: ServerBinary, cleanup: _common.Cleanup) -> Bench:
    """Registry, consent, carrier, relays, then the checks."""
    temp = cleanup.temp_dir
    if temp is None:
        raise RuntimeError("no temp dir yet")
    progress(f"temp dir {temp}; registry server ...")
    url, registry = _common.start_registry(binary, temp / "r", cleanup)
    secret_file = temp / "secret"
    secret = _common.write_secret(secret_file)
    load = Load.build(NUMBERS)
    taken = set(load.numbers)
    extra = {"no_consent": "8613900000000", "refused": "8613900000001"}
    if taken & set(extra.values()):
        raise RuntimeError("a check number is in the load")
    progress(f"consent for {NUMBERS:,} numbers ...")
    load_seconds = asyncio.run(load_consent(url, secret, load, extra))
    kinds: list[tuple[str, str, bool | None]] = [
        ("checked", "commercial", True),
        ("unchecked", "commercial", False),
    ]
    if not args.compliance_only:
        kinds[:0] = [("commercial", "commercial", None), ("reference", "transactional", None)]
    progress(f"fake carrier and {len(kinds)} filterd relays ...")
    carrier = Carrier.start(temp, cleanup)
    relays = {
        name: start_relay(
            name, stream, carrier=carrier, registry_url=url, secret_file=secret_file,
            cleanup=cleanup, extra="" if senders is None else compliance_tables(senders=senders),
        )
        for name, stream, senders in kinds
    }  # fmt: skip
    bench = Bench(carrier, relays, registry.pid, load, args.window, args.connections)
    carrying = load.promotions(cancel_text=True)
    bench.loads = {
        "checked": carrying,
        "checked-add": load.promotions(cancel_text=False),
        "unchecked": carrying,
    }
    bench.notes.append(
        f"- consent (sender {SENDER}, channel sms) loaded for {NUMBERS:,} numbers "
        f"(+{load.numbers[0]}, +{load.numbers[1]}, …) with Service.record_bulk in "
        f"{load_seconds:.2f} s; submit i goes to number i mod {NUMBERS:,}"
    )
    progress("checks ...")
    if not args.compliance_only:
        checks(bench, extra)
    compliance_checks(bench)
    return bench


def stop_relays(bench: Bench) -> None:
    """SIGTERM each relay; note its exit code and drain time, and the carrier's unbinds."""
    for relay in bench.relays.values():
        started = time.perf_counter()
        code = _common.stop_child(relay.process)
        seconds = time.perf_counter() - started
        unbinds = bench.carrier.account(relay.upstream_id).unbinds
        bench.notes.append(
            f"- {_common.mark(code == 0)} `filterd serve` {relay.name}: SIGTERM → exit {code} in "
            f"{seconds:.2f} s; unbinds at the carrier: {unbinds}"
        )


def report(
    args: argparse.Namespace, raw_argv: list[str], *, header: list[str], bench: Bench,
    res: Results, wall: float,
) -> str:  # fmt: skip
    """The whole report."""
    per_run = args.submits // args.rounds
    table = build_table(bench, res, per_run, args.rounds)
    command = _common.bench_command("bench/smpp.py", raw_argv)
    return "\n".join(
        [
            *_common.report_head(
                "filterd SMPP relay benchmark",
                command,
                [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
            ),
            "",
            table.markdown(),
            "",
            f"load (figure {'4' if args.compliance_only else '1 and 4'}): the bench's own "
            f"asyncio client on filterd's SMPP codec, bound as transceiver `{ACCOUNT_ID}`, "
            f"{bench.connections} connection(s) × window {bench.window}, {per_run:,} "
            f"submit_sm per run, {args.rounds} round(s) with the order of the sides reversed "
            f"every round, after {WARMUP_SUBMITS:,} warm-up submits per side; rate = all "
            "submits ÷ the sum of the runs' times (first submit written → last "
            f"submit_sm_resp read). filterd: `[smpp] window = {RELAY_WINDOW}`, "
            f"`[smpp.upstream] window = {UPSTREAM_WINDOW}`, rate unlimited.",
            "",
            "checks (all passed, or the bench stops with an error):",
            *bench.checks,
            "- every timed run: every submit_sm answered ESME_ROK (none throttled, none "
            "lost, none refused); the fake carrier's counter for that relay grew by exactly "
            "the submits sent and its CRC-32 sum by exactly that of the bodies it must get "
            f"(figure 4's `checked-add`: with {CANCEL_TEXT} appended; every other run: the "
            f"bodies sent), holding {CANCEL_TEXT} in every figure 4 submit and in none "
            "other; the relay logged one deliver decision per submit",
            "",
            "notes:",
            *([] if args.compliance_only else [FIGURE_1_NOTE]),
            *compliance_notes(),
            "- every process shares the machine's cores: the client (this process), the fake "
            "carrier (a child process), Valkey and filterd. 'other load' = machine CPU "
            "(/proc/stat) minus every process of this bench, in cores, during the runs.",
            *bench.notes,
            *diagnostics(res),
        ]
    )


FIGURE_1_NOTE = (
    "- ratio = filterd ÷ baseline. filterd = the `commercial` account: one consent read per "
    "submit_sm. reference = the same relay config with the account's stream = transactional. "
    "Both also write the carrier's message id to the registry (`remember_message`, a SET "
    "fsynced by `appendfsync always`) per accepted submit."
)


def compliance_notes() -> list[str]:
    """What figure 4 compares."""
    return [
        "- figure 4: filterd = `checked`, a `filterd serve` with the commercial account, "
        f'`[compliance] cancel_method = "add"`, `quiet_hours = ""` and `[[compliance.senders]] '
        f'sender = "{SENDER}", signature = "{SIGNATURE}", sms_cancel_text = "{CANCEL_TEXT}"`; '
        "baseline = `unchecked`, the same config without the `[[compliance.senders]]` table "
        "(so no text rule applies). Both have the same `[http]` (listen on any free port, "
        f"public_url {PUBLIC_URL}). The load is one single-part UCS2 (data_coding 8) "
        f"submit_sm per number, e.g. `{promotion(42)}` (34 characters, one SMS), the "
        "promotion code differing per submit: `checked` finds the signature and the cancel "
        "text and forwards the submit byte for byte (the pass-through check, the row with "
        f"the target). `checked-add` = `checked` sent the same texts without {CANCEL_TEXT}: "
        "filterd appends it (no separator after UCS2) and forwards the rewritten submit, "
        "which is then the same as the baseline's at the carrier. The per-round ratios "
        "(below) show the spread; the CPU µs/submit are the steadier figure.",
    ]


def warm_up(bench: Bench, sides: Sequence[str]) -> None:
    """WARMUP_SUBMITS checked submits into each side, just before its figures."""
    progress(f"warm-up ({WARMUP_SUBMITS:,} submits per side) ...")
    for side in sides:
        client_run(bench, side, WARMUP_SUBMITS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every phase, print the report on stdout, clean up whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.carrier:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(carrier_main())
        return 0
    _common.sigterm_as_interrupt()
    logs.configure(sys.stderr, "WARNING")  # this process's own filterd calls stay quiet
    cleanup = _common.Cleanup()
    wall = time.monotonic()
    with _common.cleaning_up(cleanup.run):
        binary = find_binary()
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fdp-", dir="/tmp"))
        bench = setup(args, binary, cleanup)
        res = Results()
        per_run = args.submits // args.rounds
        if not args.compliance_only:
            warm_up(bench, [DIRECT_ID, *SIDES])
            progress(f"figure 1: {per_run:,} submits per run, {args.rounds} round(s) ...")
            phase_throughput(bench, per_run, args.rounds, res)
            if args.smpplib:
                progress(f"figure 2: smpplib, {args.smpplib:,} submits per side ...")
                phase_smpplib(bench, args.smpplib, args.rounds, res)
            progress(f"figure 3: paced, {args.seconds:g} s per side and rate ...")
            phase_latency(bench, args.seconds, args.rounds, res)
        warm_up(bench, COMPLIANCE_SIDES)
        progress(f"figure 4: {per_run:,} submits per run, {args.rounds} round(s) ...")
        phase_compliance(bench, per_run, args.rounds, res)
        stop_relays(bench)
        print(report(args, raw_argv, header=header, bench=bench, res=res, wall=wall), flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "processes stopped and temp files removed")
