"""CMPP relay benchmark: CMPP_SUBMIT/s and latency of `filterd serve` [cmpp], with baselines.

Run from the repository root:

    .venv/bin/python bench/cmpp.py [--quick] [--submits N] [--rounds R] [--window W]
                                   [--seconds T] [--paced-rate P] [--version 2.0|3.0]

`--quick`: N = 4,000 submits per side in R = 2 rounds, T = 4 s of paced load per side
(~40 s). Default: N = 30,000 submits per side in R = 3 rounds, T = 10 s (~2 min on a
2-core VM). The client keeps at most W submits outstanding (default 64) on one
connection, in CMPP `--version` (default 3.0, the ISMG link's too).

Everything runs on loopback against processes this script starts itself, in a temp
dir under /tmp, all stopped and removed at the end, on an error, on Ctrl-C and SIGTERM:

- one Valkey registry server (the embedded registry's binary and config: AOF with
  `appendfsync always`, unix socket only);
- a fake ISMG: this script run with `--ismg` (its own interpreter and event loop): an
  asyncio server on filterd's CMPP codec that accepts any SP's CONNECT (answered with
  the AuthenticatorISMG of the secret "bench"), answers every CMPP_SUBMIT at once with
  Result 0 and a unique Msg_Id, and counts per SP (Source_Addr) the submits, the
  destinations and the sum of the CRC-32 of their bodies after the Msg_Id field (the
  octets the client wrote, if the submit was passed on unchanged). Asked over a pipe,
  it prints its counters as JSON;
- `filterd serve` with `[cmpp]` (listen on an OS port, `window` 200), `[cmpp.upstream]`
  = the fake ISMG as SP 901001 (window 200), one commercial `[[cmpp.accounts]]` of
  sender "acme": one consent read (and one Msg_Id route write) per submit; logging at
  INFO, one JSON line per decision, to a file, as in production;
- `filterd serve` "transactional": the same with SP 901003 at the ISMG and the account
  `stream = "transactional"` (no consent read; the same relay path, the same Msg_Id
  route write);
- the reference: a pass-through CMPP relay, this script run with `--passthrough`,
  built from the same codec and filterd's own ISMG link (`IsmgClient`, SP 901002,
  window 200): it checks the client's CONNECT authenticator, passes every CMPP_SUBMIT
  on as it came and answers with the ISMG's Msg_Id and Result. No registry, no log.

Consent of sender "acme" (channel sms) is written for 10,000 numbers 86138xxxxxxxx
(random, fixed seed) before anything is timed; submit i goes to number i mod 10,000.
The client is this process: an asyncio protocol on the codec (pre-encoded bodies, a
header packed per send, answers read by their header).

Checks, so that a relay that drops or refuses cannot look fast: before timing, via
filterd a consented number → Result 0, a number without consent → 65, a refused
number → 64 (nothing of the last two at the ISMG); via the transactional filterd and
the pass-through all three → 0. In every timed run (warm-up too) every submit must be
answered with Result 0, the ISMG's count for that side's SP must grow by exactly N,
and its CRC sum by the sum of the CRCs of the bodies that must arrive (every submit
arrived once, byte for byte as sent, but for the Msg_src filterd writes: its own SP
code at the ISMG).

Figures (ratio = filterd ÷ baseline):

1. CMPP_SUBMIT/s end to end (first submit written → last CMPP_SUBMIT_RESP read) through
   filterd beside the pass-through (target ratio ≥ 0.9; absolute ≥ 1,000/s) and beside
   the transactional filterd (what the consent read costs), sides alternating over R
   rounds; and the harness limit: the client straight into the ISMG.
2. Latency: the client sends on a schedule at half filterd's rate of figure 1 (or
   `--paced-rate` P, to compare two versions at one rate; the same rate for every
   side) for T s; per submit, writing it → reading its answer; p50 and p99 through
   filterd, the transactional filterd, the pass-through and straight to the ISMG.
   "p99 added" is filterd's p99 minus the direct path's (target ≤ 5 ms), and minus
   the pass-through's. Submits arriving one by one cost a relay more than a window's
   worth arriving together (a loop turn, a read and a write each, where a window
   shares them): a filterd whose 200 submits in flight are all taken answers Result 8
   (flow control); those are counted in the notes (✘) and left out of the latencies,
   any other Result fails the run.
3. CPU µs per submit of filterd and the registry server (each filterd side), and of
   the pass-through, during figure 1's runs and during the latency runs.

The report (markdown) goes to stdout, progress lines to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
from _common import progress

from filterd import logs
from filterd.cmpp.auth import authenticator_ismg, connect_for, connect_is_authentic
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import ACTIVE_TEST, HEADER, SUBMIT, SUBMIT_RESP, V20, V30
from filterd.cmpp.ismg import IsmgClient
from filterd.cmpp.msgid import MsgIdGenerator
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.result import FLOW_CONTROL
from filterd.identity import ConsumerHasher
from filterd.model import BulkRow, Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import CmppUpstream
from filterd.storage.embedded import find_binary
from filterd.storage.redis import RedisRegistry

FILTERD = str(Path(sys.executable).with_name("filterd"))
SECRET = "bench"  # noqa: S105 (the fake ISMG's and the account's)
ACCOUNT, FILTERD_SP, PASS_SP, TRANSACTIONAL_SP = "900001", "901001", "901002", "901003"
SENDER = "acme"
NUMBERS = 10_000
RELAY_WINDOW = UPSTREAM_WINDOW = 200
NO_CONSENT, REFUSED = "8613900000000", "8613900000001"
MSG_SRC_AT = {V20: 8 + 4 + 10 + 1 + 21 + 3, V30: 8 + 4 + 10 + 1 + 32 + 1 + 3}
"""Where Msg_src starts in a SUBMIT body."""
FILTERDS = ("filterd", "transactional")
"""The sides through `filterd serve` (their CPU counts the registry's too)."""
TEXT = b"Acme spring sale: 20% off all week. Reply TD to unsubscribe."


def _tcp(transport: asyncio.BaseTransport) -> asyncio.Transport:
    """A connection's transport, typed."""
    if not isinstance(transport, asyncio.Transport):
        raise TypeError(f"not a stream transport: {transport!r}")
    return transport


def _temp(cleanup: _common.Cleanup) -> Path:
    """The run's temp dir."""
    if cleanup.temp_dir is None:
        raise RuntimeError("no temp dir yet")
    return cleanup.temp_dir


# ---- the fake ISMG (child process) ---------------------------------------------------


class IsmgCounters:
    """Per SP: logins, submits, destinations, CRC sum of bodies."""

    def __init__(self) -> None:
        self.by_sp: dict[str, dict[str, int]] = {}

    def sp(self, sp_id: str) -> dict[str, int]:
        """The counters of one SP."""
        return self.by_sp.setdefault(sp_id, {"logins": 0, "submits": 0, "crc": 0})


class IsmgLink(asyncio.Protocol):
    """One SP's connection to the fake ISMG: CONNECT, then SUBMITs answered at once."""

    def __init__(self, counters: IsmgCounters) -> None:
        self.counters = counters
        self.buffer = bytearray()
        self.version = V30
        self.sp: dict[str, int] | None = None
        self.ids = MsgIdGenerator(7)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = _tcp(transport)

    def data_received(self, data: bytes) -> None:
        """Cut frames by Total_Length; CONNECT decoded, SUBMIT read by its header."""
        self.buffer += data
        out = bytearray()
        while len(self.buffer) >= 12:
            length, command, sequence = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < length:
                break
            frame = bytes(self.buffer[:length])
            del self.buffer[:length]
            if command == SUBMIT and self.sp is not None:
                self.sp["submits"] += 1
                self.sp["crc"] += zlib.crc32(frame[20:])
                answer = SubmitResp(sequence, msg_id=self.ids.issue(datetime.now()), result=0)
                out += encode(answer, self.version)
            else:
                out += self._other(frame)
        if out and self.transport is not None:
            self.transport.write(bytes(out))

    def _other(self, frame: bytes) -> bytes:
        framer = Framer(self.version)
        framer.feed(frame)
        pdu = framer.next_pdu()
        if isinstance(pdu, Connect):
            self.version = pdu.version if pdu.version in (V20, V30) else V30
            self.sp = self.counters.sp(pdu.source_addr)
            self.sp["logins"] += 1
            auth = authenticator_ismg(0, pdu.authenticator_source, SECRET, self.version)
            return encode(ConnectResp(pdu.sequence_id, 0, auth, self.version), self.version)
        if isinstance(pdu, ActiveTest):
            return encode(ActiveTestResp(pdu.sequence_id), self.version)
        if isinstance(pdu, Terminate) and self.transport is not None:
            self.transport.write(encode(TerminateResp(pdu.sequence_id), self.version))
            self.transport.close()
        return b""


async def ismg_main() -> None:
    """Serve on an OS port (printed first), answer "counts" lines on stdin with JSON."""
    counters = IsmgCounters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: IsmgLink(counters), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"counts":
            print(json.dumps(counters.by_sp), flush=True)


# ---- the pass-through relay (child process) ------------------------------------------


class PassThroughSession(asyncio.Protocol):
    """One client of the pass-through: CONNECT checked, SUBMITs passed on as they came."""

    def __init__(self, ismg: IsmgClient) -> None:
        self.ismg = ismg
        self.framer = Framer(V30)
        self.version: int | None = None
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = _tcp(transport)

    def data_received(self, data: bytes) -> None:
        """Decode with the codec and dispatch."""
        self.framer.feed(data)
        while (pdu := self.framer.next_pdu()) is not None:
            self.handle(pdu)

    def send(self, pdu: Pdu) -> None:
        """Write one message in the session's version."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(pdu, self.version or V30))

    def handle(self, pdu: Pdu) -> None:
        """CONNECT, SUBMIT, ACTIVE_TEST, TERMINATE."""
        if isinstance(pdu, Connect):
            ok = pdu.source_addr == ACCOUNT and connect_is_authentic(pdu, SECRET)
            self.version = pdu.version
            self.framer.version = pdu.version
            status = 0 if ok else 3
            auth = authenticator_ismg(status, pdu.authenticator_source, SECRET, pdu.version)
            self.send(ConnectResp(pdu.sequence_id, status, auth, pdu.version))
        elif isinstance(pdu, Submit) and self.version is not None:
            task = asyncio.get_running_loop().create_task(self.forward(pdu))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(pdu, ActiveTest):
            self.send(ActiveTestResp(pdu.sequence_id))
        elif isinstance(pdu, Terminate):
            self.send(TerminateResp(pdu.sequence_id))

    async def forward(self, pdu: Submit) -> None:
        """Pass the submit on; answer with the ISMG's Msg_Id and Result (8 if unavailable)."""
        try:
            answer = await self.ismg.submit(pdu)
            msg_id, result = answer.msg_id, answer.result
        except Exception:
            msg_id, result = 0, 8
        self.send(SubmitResp(pdu.sequence_id, msg_id=msg_id, result=result))


async def passthrough_main(ismg_port: int, version: int) -> None:
    """The pass-through relay: link to the ISMG, listen (port printed once linked)."""

    async def no_deliveries(pdu: Deliver) -> int:
        return 0

    upstream = CmppUpstream(
        "127.0.0.1", ismg_port, PASS_SP, SECRET, version, window=UPSTREAM_WINDOW
    )
    ismg = IsmgClient(upstream, no_deliveries)
    stop = asyncio.Event()
    link = asyncio.create_task(ismg.run(stop))
    await asyncio.wait_for(ismg.wait_connected(), 30)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PassThroughSession(ismg), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await link


# ---- the client (this process) -------------------------------------------------------


class Client(asyncio.Protocol):
    """One logged-in SP connection that sends pre-encoded SUBMIT bodies."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sequence = 1
        self.sent_at: dict[int, int] = {}
        self.latencies: list[int] = []
        self.results: dict[int, int] = {}
        self.answered = 0
        self.room: asyncio.Event = asyncio.Event()
        self.done: asyncio.Event = asyncio.Event()
        self.expect = 0
        self.window = 1
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.result_size = 4 if version == V30 else 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Log in as ACCOUNT."""
        self.transport = _tcp(transport)
        connect = connect_for(1, ACCOUNT, SECRET, datetime.now(), self.version)
        transport.write(encode(connect, self.version))

    def data_received(self, data: bytes) -> None:
        """Count answers by their header (and the CONNECT_RESP status); answer the
        relay's CMPP_ACTIVE_TEST."""
        self.buffer += data
        now = time.perf_counter_ns()
        while len(self.buffer) >= 12:
            length, command, sequence = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < length:
                break
            frame = bytes(self.buffer[:length])
            del self.buffer[:length]
            if command == SUBMIT_RESP:
                result = int.from_bytes(frame[20 : 20 + self.result_size], "big")
                self.results[result] = self.results.get(result, 0) + 1
                started = self.sent_at.pop(sequence, None)
                if started is not None and result == 0:  # not a refusal: window full
                    self.latencies.append(now - started)
                self.answered += 1
                self.room.set()
                if self.answered >= self.expect:
                    self.done.set()
            elif command == ACTIVE_TEST and self.transport is not None:
                # answered, so that a relay idle while the other sides run keeps the link
                self.transport.write(encode(ActiveTestResp(sequence), self.version))
            elif not self.connected.done():
                status_size = 4 if self.version == V30 else 1
                self.connected.set_result(int.from_bytes(frame[12 : 12 + status_size], "big"))

    def submit(self, body: bytes) -> None:
        """Write one SUBMIT (a header packed onto a pre-encoded body)."""
        if self.transport is None:
            raise RuntimeError("not connected")
        self.sequence += 1
        self.sent_at[self.sequence] = time.perf_counter_ns()
        self.transport.write(HEADER.pack(12 + len(body), SUBMIT, self.sequence) + body)

    def reset(self, expect: int) -> None:
        """Start counting a new run of `expect` answers."""
        self.answered, self.expect = 0, expect
        self.results, self.latencies = {}, []
        self.done.clear()


async def open_client(port: int, version: int) -> Client:
    """A client logged in on `port`."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(version), "127.0.0.1", port)
    status = await asyncio.wait_for(client.connected, 30)
    if status != 0:
        raise RuntimeError(f"CONNECT to port {port} refused with Status {status}")
    return client


def bodies(numbers: Sequence[str], version: int, msg_src: str = ACCOUNT) -> list[bytes]:
    """One pre-encoded SUBMIT body per number, from the SP `msg_src`."""
    out = []
    for number in numbers:
        pdu = Submit(
            0,
            msg_src=msg_src,
            src_id="10690001",
            service_id="bench",
            dest_terminal_ids=(number,),
            msg_content=TEXT,
        )
        out.append(encode(pdu, version)[12:])
    return out


async def windowed(client: Client, load: Sequence[bytes], window: int) -> float:
    """Send all of `load` keeping `window` outstanding; seconds from first write to last answer."""
    client.reset(len(load))
    started = time.perf_counter()
    for index, body in enumerate(load):
        while index - client.answered >= window:
            client.room.clear()
            await client.room.wait()
        client.submit(body)
    await asyncio.wait_for(client.done.wait(), 120)
    return time.perf_counter() - started


async def paced(client: Client, load: Sequence[bytes], rate: float, seconds: float) -> None:
    """Send at `rate` per second for `seconds` (cycling through `load`); wait for answers."""
    total = int(rate * seconds)
    client.reset(total)
    started = time.perf_counter()
    for index in range(total):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        client.submit(load[index % len(load)])
    await asyncio.wait_for(client.done.wait(), 120)


# ---- set-up -------------------------------------------------------------------------


@dataclass
class Child:
    """A child of this script (fake ISMG or pass-through) and the port it printed."""

    process: Any
    port: int

    def ask(self, line: str) -> Any:
        """Write a line, read one JSON line back."""
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())


def start_child(cleanup: _common.Cleanup, args: list[str], name: str) -> Child:
    """This script as a child; waits for the port it prints."""
    temp = _temp(cleanup)
    command = [sys.executable, __file__, *args]
    process = cleanup.spawn(command, log=None, cwd=temp, pipes=True)
    line = process.stdout.readline() if process.stdout else b""
    if not line.strip().isdigit():
        raise RuntimeError(f"{name} did not start: {line!r}")
    return Child(process, int(line))


def start_filterd(
    cleanup: _common.Cleanup,
    registry_url: str,
    secret: Path,
    ismg: int,
    version: int,
    *,
    stream: str = "commercial",
    sp_id: str = FILTERD_SP,
) -> tuple[Any, int, Path]:
    """`filterd serve` with [cmpp], one account of `stream`, SP `sp_id` at the ISMG; its
    process, port and log, once linked to the ISMG."""
    temp = _temp(cleanup)
    config, log = temp / f"{stream}.toml", temp / f"{stream}.log"
    config.write_text(f"""[registry]
url = "{registry_url}"
secret_file = "{secret}"
default_region = "CN"

[cmpp]
listen = "127.0.0.1:0"
window = {RELAY_WINDOW}

[cmpp.upstream]
host = "127.0.0.1"
port = {ismg}
sp_id = "{sp_id}"
shared_secret = "{SECRET}"
version = "{version >> 4}.0"
window = {UPSTREAM_WINDOW}

[[cmpp.accounts]]
sp_id = "{ACCOUNT}"
shared_secret = "{SECRET}"
sender = "{SENDER}"
stream = "{stream}"
""")
    process = cleanup.spawn([FILTERD, "serve", "--config", str(config)], log=log, cwd=temp)
    port, linked, deadline = 0, False, time.monotonic() + 60
    while not (port and linked):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"filterd did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
        for line in log.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "listening" and record.get("front_end") == "cmpp":
                port = int(record["port"])
            linked = linked or record.get("event") == "ismg_connected"
    return process, port, log


async def load_consent(url: str, secret: bytes, numbers: Sequence[str]) -> None:
    """Consent of SENDER for every number; a refusal for REFUSED."""
    hasher = ConsumerHasher(secret)
    registry = RedisRegistry.from_url(url)
    service = Service(registry, hasher, request_ttl_s=3600)
    now = int(time.time() * 1000)
    try:
        for start in range(0, len(numbers), 2000):
            rows = [
                BulkRow(
                    hasher.consumer_id(normalize("+" + n)),
                    Kind.CONSENT,
                    SENDER,
                    Channel.SMS,
                    now,
                    "bench",
                )
                for n in numbers[start : start + 2000]
            ]
            await service.record_bulk(rows)
        request = FactRequest(normalize("+" + REFUSED), Kind.REFUSAL, SENDER, Channel.SMS, "bench")
        await service.record(request, origin="bench")
    finally:
        await service.close()
        await registry.close()


# ---- the runs -----------------------------------------------------------------------


@dataclass
class Side:
    """One way into the ISMG: its client, the SP the ISMG counts it under, its figures."""

    name: str
    client: Client
    sp: str
    msg_src: str | None = None
    """The Msg_src the relay writes in place of the client's (filterd: its own SP code)."""
    version: int = V30
    seconds: float = 0.0
    submits: int = 0
    cpu: float = 0.0
    latencies: list[int] = field(default_factory=list)

    def arriving(self, load: list[bytes]) -> list[bytes]:
        """The bodies the ISMG must receive for `load` sent this way."""
        if self.msg_src is None:
            return load
        at = MSG_SRC_AT[self.version]
        new = self.msg_src.encode()
        return [body[:at] + new + body[at + len(new) :] for body in load]


def counted(ismg: Child, sp: str) -> tuple[int, int]:
    """(submits, CRC sum) the ISMG counted for `sp`."""
    found = ismg.ask("counts").get(sp, {"submits": 0, "crc": 0})
    return found["submits"], found["crc"]


async def checked_run(side: Side, ismg: Child, load: list[bytes], window: int) -> float:
    """A windowed run; every answer Result 0, the ISMG got each body once, byte for byte."""
    return await _checked(side, ismg, load, side.arriving(load), window)


async def _checked(
    side: Side, ismg: Child, load: list[bytes], arriving: list[bytes], window: int
) -> float:
    """checked_run, the ISMG to receive `arriving` for `load`."""
    before = await asyncio.to_thread(counted, ismg, side.sp)
    seconds = await windowed(side.client, load, window)
    after = await asyncio.to_thread(counted, ismg, side.sp)
    crc = sum(zlib.crc32(body[8:]) for body in arriving)
    if side.client.results != {0: len(load)}:
        raise RuntimeError(f"{side.name}: results {side.client.results}")
    if (after[0] - before[0], after[1] - before[1]) != (len(load), crc):
        raise RuntimeError(
            f"{side.name}: the ISMG counted {after[0] - before[0]} of {len(load)} or other bytes"
        )
    return seconds


async def checks(sides: dict[str, Side], version: int, number: str) -> list[str]:
    """Consented / no consent / refused: through filterd (0, 65, 64), the transactional
    filterd and the pass-through (0, 0, 0)."""
    lines = []
    for name, expected in (
        ("filterd", [0, 65, 64]),
        ("transactional", [0, 0, 0]),
        ("pass-through", [0, 0, 0]),
    ):
        client = sides[name].client
        got = []
        for destination in (number, NO_CONSENT, REFUSED):
            await windowed(client, bodies([destination], version), 1)
            got.append(next(iter(client.results)))
        ok = got == expected
        lines.append(
            f"- {_common.mark(ok)} {name}: consented / no consent / refused → "
            f"Result {got} (expected {expected})"
        )
        if not ok:
            raise RuntimeError(lines[-1])
    return lines


async def bench(
    *,
    args: argparse.Namespace,
    ismg: Child,
    ports: dict[str, int],
    pids: dict[str, int],
    numbers: list[str],
) -> tuple[_common.Table, list[str]]:
    """Figures 1 to 3."""
    version = args.version
    sides = {
        "filterd": Side(
            "filterd",
            await open_client(ports["filterd"], version),
            FILTERD_SP,
            FILTERD_SP,
            version,
        ),
        "transactional": Side(
            "transactional",
            await open_client(ports["transactional"], version),
            TRANSACTIONAL_SP,
            TRANSACTIONAL_SP,
            version,
        ),
        "pass-through": Side("pass-through", await open_client(ports["pass"], version), PASS_SP),
        "direct": Side("direct", await open_client(ismg.port, version), ACCOUNT),
    }
    notes = await checks(sides, version, numbers[0])
    load = bodies([numbers[i % len(numbers)] for i in range(args.submits // args.rounds)], version)
    progress("warm-up ...")
    for side in sides.values():
        await checked_run(side, ismg, load[: min(len(load), 2000)], args.window)
    order = list(sides)
    for round_number in range(args.rounds):
        progress(f"round {round_number + 1}/{args.rounds}: {', '.join(order)}")
        for name in order:
            side = sides[name]
            cpu_pids = [pids[name]] + ([pids["registry"]] if name in FILTERDS else [])
            cpu_before = _common.cpu_seconds(cpu_pids)
            side.seconds += await checked_run(side, ismg, load, args.window)
            side.cpu += _common.cpu_seconds(cpu_pids) - cpu_before
            side.submits += len(load)
        order.reverse()
    rates = {name: side.submits / side.seconds for name, side in sides.items()}
    table = _common.Table()
    fast = rates["filterd"] >= 1000 and rates["filterd"] >= 0.9 * rates["pass-through"]
    table.add(
        "CMPP_SUBMIT/s, windowed (filterd ÷ pass-through)",
        rates["filterd"],
        rates["pass-through"],
        f"≥ 0.9×, ≥ 1,000/s {_common.mark(fast)}",
    )
    table.add(
        "CMPP_SUBMIT/s, windowed (filterd ÷ filterd transactional)",
        rates["filterd"],
        rates["transactional"],
    )
    table.add("CMPP_SUBMIT/s, harness limit (client → ISMG)", rates["direct"], None)
    half = args.paced_rate or rates["filterd"] / 2
    progress(f"latency at {half:,.0f}/s for {args.seconds:.0f} s per side ...")
    paced_cpu: dict[str, float] = {}
    for name, side in sides.items():
        cpu_pids = [pids[name]] + ([pids["registry"]] if name in FILTERDS else [])
        cpu_before = _common.cpu_seconds(cpu_pids)
        await paced(side.client, load, half, args.seconds)
        paced_cpu[name] = (_common.cpu_seconds(cpu_pids) - cpu_before) / int(half * args.seconds)
        side.latencies = list(side.client.latencies)
        results = side.client.results
        sent = int(half * args.seconds)
        if set(results) - {0, FLOW_CONTROL} or sum(results.values()) != sent:
            raise RuntimeError(f"{name} paced: results {results}")
        full = results.get(FLOW_CONTROL, 0)
        notes.append(
            f"- {_common.mark(full == 0)} {name} at half rate: {full:,} of {sent:,} submits "
            "answered Result 8 (the relay's window of 200 in flight was full)"
        )
    p = {
        name: (
            _common.percentile(s.latencies, 0.5, 1e6),
            _common.percentile(s.latencies, 0.99, 1e6),
        )
        for name, s in sides.items()
    }
    table.add(
        "p50 ms at half rate (filterd ÷ pass-through)",
        p["filterd"][0],
        p["pass-through"][0],
        digits=2,
    )
    table.add(
        "p99 ms at half rate (filterd ÷ pass-through)",
        p["filterd"][1],
        p["pass-through"][1],
        digits=2,
    )
    added = p["filterd"][1] - p["direct"][1]
    table.add(
        "p99 ms added over client → ISMG direct",
        added,
        p["direct"][1],
        f"≤ 5 ms {_common.mark(added <= 5)}",
        digits=2,
    )
    table.add(
        "p99 ms added over the pass-through", p["filterd"][1] - p["pass-through"][1], None, digits=2
    )
    table.add(
        "p99 ms at half rate (filterd ÷ filterd transactional)",
        p["filterd"][1],
        p["transactional"][1],
        digits=2,
    )
    cpu = {name: sides[name].cpu / sides[name].submits * 1e6 for name in sides}
    table.add("CPU µs per submit, filterd + registry", cpu["filterd"], cpu["pass-through"])
    table.add("CPU µs per submit, transactional + registry", cpu["transactional"], None)
    table.add(
        "CPU µs per submit at half rate, filterd + registry",
        paced_cpu["filterd"] * 1e6,
        paced_cpu["pass-through"] * 1e6,
    )
    notes.append(
        f"- {args.submits:,} submits per side in {args.rounds} rounds (sides "
        f"alternating), window {args.window}, CMPP {version >> 4}.0; paced "
        f"{half:,.0f}/s for {args.seconds:.0f} s per side"
    )
    for name in ("transactional", "direct"):
        notes.append(f"- {name} p50/p99: {p[name][0]:.2f} / {p[name][1]:.2f} ms")
    return table, notes


def main() -> int:
    """Parse, set up, run, report."""
    args = parse_args(sys.argv[1:])
    if args.ismg:
        asyncio.run(ismg_main())
        return 0
    if args.passthrough is not None:
        logs.configure(sys.stderr, "WARNING")  # stdout carries the port
        asyncio.run(passthrough_main(args.passthrough, args.version))
        return 0
    _common.sigterm_as_interrupt()
    logs.configure(sys.stderr, "WARNING")  # the consent loader's lines stay out of the report
    started = time.monotonic()
    binary = find_binary()
    cleanup = _common.Cleanup(temp_dir=Path(tempfile.mkdtemp(prefix="cmpp-bench-", dir="/tmp")))
    with _common.cleaning_up(cleanup.run):
        temp = _temp(cleanup)
        progress(f"temp dir {temp}; registry, consent for {NUMBERS:,} numbers ...")
        url, registry = _common.start_registry(binary, temp / "r", cleanup)
        secret_file = temp / "secret"
        secret = _common.write_secret(secret_file)
        rng = random.Random(16)
        numbers = sorted({f"86138{rng.randrange(10**8):08d}" for _ in range(NUMBERS)})
        asyncio.run(load_consent(url, secret, numbers))
        progress("fake ISMG, pass-through, filterd ...")
        ismg = start_child(cleanup, ["--ismg"], "the fake ISMG")
        version_arg = ["--version", f"{args.version >> 4}.0"]
        passthrough = start_child(
            cleanup, ["--passthrough", str(ismg.port), *version_arg], "the pass-through"
        )
        process, port, _ = start_filterd(cleanup, url, secret_file, ismg.port, args.version)
        other, other_port, _ = start_filterd(
            cleanup, url, secret_file, ismg.port, args.version,
            stream="transactional", sp_id=TRANSACTIONAL_SP,
        )  # fmt: skip
        ports = {"filterd": port, "transactional": other_port, "pass": passthrough.port}
        pids = {
            "filterd": process.pid,
            "transactional": other.pid,
            "pass-through": passthrough.process.pid,
            "direct": ismg.process.pid,
            "registry": registry.pid,
        }
        table, notes = asyncio.run(
            bench(args=args, ismg=ismg, ports=ports, pids=pids, numbers=numbers)
        )
        facts = [
            f"- code: {_common.code_version()}",
            _common.machine_line(),
            _common.python_line(("filterd", "redis", "hiredis", "structlog")),
            _common.environment_line(),
            _common.loadavg_line("end"),
            _common.wall_line(started),
        ]
        command = _common.bench_command("bench/cmpp.py", sys.argv[1:])
        print("\n".join(_common.report_head("CMPP relay benchmark", command, facts)))
        print("\n" + table.markdown() + "\n")
        print("\n".join(["Checks and notes:", *notes]))
        print("\nFigures on a shared, busy machine are noisy; the ratios are the steadier part.")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--quick, --submits, --rounds, --window, --seconds, --version (and the children's)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4,000 submits per side, 4 s paced")
    p.add_argument("--submits", type=int, help="windowed submits per side (default 30,000)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 3; --quick 2)")
    p.add_argument("--window", type=int, default=64, help="outstanding submits (default 64)")
    p.add_argument("--seconds", type=float, help="paced load per latency side (default 10)")
    p.add_argument(
        "--paced-rate", type=float, help="submits/s of the latency runs (default: half filterd's)"
    )
    p.add_argument("--version", choices=["2.0", "3.0"], default="3.0", help="CMPP version")
    p.add_argument("--ismg", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--passthrough", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.version = V20 if args.version == "2.0" else V30
    args.submits = args.submits or (4_000 if args.quick else 30_000)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.rounds < 1 or args.submits < 100 * args.rounds or not 1 <= args.window <= 200:
        p.error("need --rounds ≥ 1, --submits ≥ 100 × rounds, 1 ≤ --window ≤ 200")
    return args


if __name__ == "__main__":
    _common.run_main(main, "the bench's processes and temp dir are removed")
