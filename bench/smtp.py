"""SMTP relay benchmark: msg/s, latency, workers, one-click headers; each with a baseline.

Run from the repository root:

    .venv/bin/python bench/smtp.py [--quick] [--messages M] [--rounds R] [--sessions S]
                                   [--seconds T] [--compliance-only]

`--quick`: M = 2,000 messages per side, 4 s of paced load per side (~1 min).
Default: M = 20,000 messages per side, 10 s per side (6 to 11 min on a 2-core VM).
M is split over R alternating rounds (default 2): each smtp-source run sends M/R.
`--compliance-only`: figure 4 alone, without the other relays, the verification
pass and figures 1-3 (~20 s; with --quick ~5 s).

Everything runs on loopback against processes this script starts itself, in a
temp dir made with `tempfile.mkdtemp(dir="/tmp")`, and everything is stopped
and removed at the end, on an error, on Ctrl-C and on SIGTERM:

- one Valkey registry server (the binary the embedded registry picks and its
  config, `filterd.storage.embedded.server_config`: AOF on, unix socket only, no TCP
  port); the system Redis on 6379 is never touched;
- Postfix `smtp-sink -c 127.0.0.1:PORT 1000` as the upstream (`-c` prints a
  message counter, which the bench reads); a second smtp-sink with `-D FILE`
  (a dump of every transaction) for the verification pass;
- three `filterd serve` processes, each with its own config and a fixed free
  port, all relaying to the same counting sink and reading the same registry:
  `commercial` (workers = 1), `reference` (the same config but the account's
  stream = "transactional": the same relay code and upstream pool, no registry
  read) and `commercial-w2` (workers = 2, one port, SO_REUSEPORT); plus
  `plain`, the issue's reference: this script run as `bench/smtp.py plain-relay
  PORT UPSTREAM`, an aiosmtpd relay that passes MAIL/RCPT/DATA on in real time
  through filterd's own UpstreamPool and does nothing else (no account, no
  address normalisation, no commercial-signal scan, no registry). The one
  account of each is chosen by the client's address (`networks =
  ["127.0.0.1/32"]`): smtp-source cannot AUTH. Logging stays at INFO (one JSON
  line per decision and per relayed message, to a file in the temp dir), as in
  production; the environment (e.g. PYTHONUNBUFFERED) is passed on unchanged;
- for figure 4, two more `filterd serve` (workers = 1, the commercial account),
  identical but for one value: `compliance-add` with `[compliance] cancel_method
  = "add"` and `compliance-off` with `"off"`, both with `quiet_hours = ""` and the
  same `[http]` (`public_url = "https://filterd.bench"`, the token key derived
  from the registry secret; each its own free `listen` port), relaying into a
  third smtp-sink of their own, `-c -D FILE`, whose dump the bench reads after
  each run.

The load is `smtp-source -s S -m M/R -d -N -r RCPTS -M bench.test -f
shop@acme.test -t rcpt@example.com 127.0.0.1:PORT` for RCPTS = 1 and 10 (figure
4: 1 only). With `-N`, smtp-source prepends one global sequence number to each
recipient, so a run's recipients are exactly `1rcpt@example.com` …
`{(M/R)*RCPTS}rcpt@example.com` (checked at start against the dumping sink;
without -N, `-r 10` would send the same 10 addresses `10rcpt`, …, `2rcpt`,
`rcpt` in every message). Consent of sender "acme" (email) is written for all
of them with `RedisRegistry.record_many` and the relays' secret before anything
is timed.

Checks, so that a relay that drops or refuses mail cannot look fast: every
smtp-source run must exit 0 with nothing on stderr (it aborts on any reply it
does not expect), the sink's counter must grow by exactly the messages sent,
and the relay's `relayed` log lines must add up to the messages and to messages
x recipients. The verification pass relays 200 messages x 10 recipients through
a commercial filterd into the dumping sink and compares every recipient with
what smtp-source sends straight into the same sink; a recipient without consent
must get 550 from `commercial` and 250 from `reference`. A second RCPT in one
transaction must get `452 4.5.3` from `compliance-add` (a commercial transaction
takes one recipient under add) and 250 from `compliance-off`. After each figure 4
run the bench reads every message the run left in the dump: under add each must
carry `List-Unsubscribe: <https://filterd.bench/unsubscribe/TOKEN>`, TOKEN
verifying with that key for sender acme, email and the consumer of the message's
own recipient, and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; under
off none may carry either. A run where that fails stops the bench with an error
naming the run and the counts; the counts of all runs are printed in the checks.

Figures:

1. msg/s = messages ÷ smtp-source wall time, through `commercial` vs `reference`
   and vs `plain` (target ratio ≥ 0.9 for each; `reference` is the transactional
   account, which still scans each message's header for commercial signals, so
   `plain` is the stricter baseline) and vs the limit (smtp-source straight into smtp-sink),
   for 1 and 10 recipients per message; plus the CPU time filterd and the
   registry server spent per message (from /proc), which is less disturbed by
   other load on the machine than the rates.
2. Added latency: a paced client in this script (asyncio, raw sockets, no
   pipelining, like smtp-source) opens 8 connections and starts one message
   every 1/rate s, rate = half the commercial msg/s of figure 1 for the same
   RCPTS; per message, the time from writing MAIL to reading the 250 after the
   final dot. p50/p99 through `commercial`, `reference` and `plain`, T s per side
   split over the rounds; target: p99 added (commercial - baseline) ≤ 5 ms.
3. Workers: the smtp-source load of figure 1 through `commercial-w2` vs
   `commercial` (workers = 1), in the same alternating rounds; target ≥ 1.6x.
   smtp-source, smtp-sink, Valkey and every filterd process share the cores.
4. Compliance: the smtp-source load of figure 1 with 1 recipient per message
   (smtp-source's messages have no List-Unsubscribe) through `compliance-add`
   vs `compliance-off`, alternating in R rounds of M/R messages each; msg/s and
   CPU µs/msg of filterd + registry; target add ÷ off ≥ 0.9. Both relay into
   the dumping sink, which writes every message to a file: compare figure 4's
   rates with each other, not with figure 1's.

The notes give, per side, CPU µs/msg of filterd and of the registry server,
the load on the machine that was not ours (machine CPU from /proc/stat minus
every process of this bench), how the w2 relay's messages split over its two
processes, how far behind schedule the paced client started messages, the add
÷ off ratio of each round of figure 4, and the workers ceiling: the cores every
process of the bench kept busy during the `workers = 1` run, and so the most any
number of workers could add on this machine at the same CPU per message (the
load generator and the sink share it).

The report (markdown table, command, machine facts, checks, notes) goes to
stdout; progress lines go to stderr, so `... > result.md` keeps just the report.
Needs `smtp-source` and `smtp-sink` (Debian package `postfix`) on PATH or in
/usr/sbin; as root, smtp-sink gets `-u root` (it refuses root without -u).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
from aiosmtpd.smtp import SMTP

from filterd import logs
from filterd.identity import ConsumerHasher
from filterd.model import Action, BulkRow, Channel, Kind, MessageClass
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smtp.outbound import UpstreamConnection, UpstreamPool, UpstreamReply
from filterd.storage.embedded import ServerBinary, find_binary
from filterd.storage.redis import RedisRegistry
from filterd.tokens import TokenError, TokenKeys, derive_key, sender_table

SENDER = "acme"
HELO = "bench.test"
MAIL_FROM = "shop@acme.test"
RCPT_LOCAL = "rcpt"
RCPT_DOMAIN = "example.com"
RCPT_COUNTS = (1, 10)
MAX_RCPTS = max(RCPT_COUNTS)
LOAD_BATCH = 5_000
PACED_CONNECTIONS = 8
VERIFY_MESSAGES = 200
VERIFY_SESSIONS = 4
WARMUP_MESSAGES = 200
TARGET_RATIO = 0.9
TARGET_ADDED_P99_MS = 5.0
TARGET_WORKERS = 1.6
SIDES = ("reference", "plain", "commercial", "commercial-w2")
"""Run order of the relays in a round (reversed every other round): commercial sits
between plain (the issue's reference) and its own `workers = 2`, so the runs compared
in figures 1 and 3 are back to back."""
RELAYS = (
    ("commercial", "commercial", 1),
    ("reference", "transactional", 1),
    ("plain", "plain", 1),
    ("commercial-w2", "commercial", 2),
)
"""Figures 1-3's relays: name, the account's stream ("plain": the plain relay), workers."""
COMPLIANCE_SIDES = ("compliance-add", "compliance-off")
"""Figure 4's relays, by their `[compliance] cancel_method`; run order as for SIDES."""
PUBLIC_URL = "https://filterd.bench"
"""`[http] public_url` of figure 4's relays: the added List-Unsubscribe URLs start with it."""
FILTERD = str(Path(sys.executable).parent / "filterd")
progress = _common.progress


def recipient(sequence: int) -> str:
    """The address `smtp-source -N -t rcpt@example.com` uses for sequence number n."""
    return f"{sequence}{RCPT_LOCAL}@{RCPT_DOMAIN}"


# ---- CPU accounting ------------------------------------------------------------------


@dataclass
class Usage:
    """CPU seconds spent during one measured interval."""

    relay: float = 0.0
    registry: float = 0.0
    foreign: float = 0.0
    wall: float = 0.0
    ours: float = 0.0
    """Every process of this bench: relay, registry, sink, smtp-source, this script."""

    def add(self, other: Usage) -> None:
        """Accumulate another interval."""
        self.relay += other.relay
        self.registry += other.registry
        self.foreign += other.foreign
        self.wall += other.wall
        self.ours += other.ours


class Meter:
    """Measures one interval: the relay's CPU, the registry's, and everyone else's."""

    def __init__(self, bench: Bench, relay: Relay | None) -> None:
        self.relay_pids = relay.pids if relay else []
        self.registry_pid = bench.registry_pid
        self.ours = bench.all_pids()
        self.started = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, float, float]:
        return (
            time.perf_counter(),
            _common.cpu_seconds(self.relay_pids),
            _common.cpu_seconds([self.registry_pid]),
            _common.cpu_seconds(self.ours) + _common.own_cpu_seconds(),
            _common.machine_busy_seconds(),
        )

    def stop(self) -> Usage:
        """The usage since construction."""
        wall, relay, registry, ours, machine = (
            b - a for a, b in zip(self.started, self._snapshot(), strict=True)
        )
        return Usage(relay, registry, max(0.0, machine - ours), wall, ours)


# ---- relays --------------------------------------------------------------------------


@dataclass
class LogTally:
    """What a relay's log says happened since the last read."""

    relayed: int = 0
    recipients: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)
    log_bytes: int = 0
    merged_lines: int = 0


def _records(data: bytes, tally: LogTally) -> list[dict[str, Any]]:
    """The JSON objects in `data`, also where two processes' lines ran together.

    Each log line is one write; with PYTHONUNBUFFERED=1 its newline is a second
    write, so the processes of one filterd with workers can produce `{A}{B}`
    followed by two newlines. Such lines are counted in `tally.merged_lines`.
    """
    decoder = json.JSONDecoder()
    records = []
    for line in data.decode(errors="replace").splitlines():
        position, found = 0, 0
        while position < len(line):
            if line[position].isspace():
                position += 1
                continue
            try:
                record, position = decoder.raw_decode(line, position)
            except ValueError:
                tally.other["(not JSON)"] = tally.other.get("(not JSON)", 0) + 1
                break
            records.append(record)
            found += 1
        if found > 1:
            tally.merged_lines += 1
    return records


@dataclass
class Relay:
    """A `filterd serve` child with its config, log and fixed port."""

    name: str
    port: int
    stream: str
    workers: int
    log: Path
    process: subprocess.Popen[bytes]
    worker_pids: list[int] = field(default_factory=list)
    offset: int = 0

    @property
    def pids(self) -> list[int]:
        """The main process and its SMTP worker processes."""
        return [self.process.pid, *self.worker_pids]

    def tally(self) -> LogTally:
        """Read the log lines written since the last call."""
        result = LogTally()
        with self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        result.log_bytes = end
        for record in _records(data[:end], result):
            event = record.get("event")
            if event == "relayed":
                result.relayed += 1
                result.recipients += int(record.get("recipients", 0))
                pid = int(record.get("pid", 0))
                result.by_pid[pid] = result.by_pid.get(pid, 0) + 1
            elif event != "decision" or record.get("decision") != "deliver":
                key = f"{record.get('level')}:{event}"
                if event == "decision":
                    key += f":{record.get('decision')}/{record.get('reason')}"
                result.other[key] = result.other.get(key, 0) + 1
        return result


def write_config(
    path: Path, *, registry_url: str, secret_file: Path, port: int, upstream: int, stream: str,
    workers: int, extra: str = "",
) -> None:  # fmt: skip
    """The relay config: one account, chosen by the client's address; `extra`: more
    tables (figure 4's [http] and [compliance])."""
    path.write_text(f"""[registry]
url = "{registry_url}"
secret_file = "{secret_file}"

[smtp]
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:{upstream}"
hostname = "filterd.bench"
workers = {workers}

[[smtp.accounts]]
username = "tool"
networks = ["127.0.0.1/32"]
sender = "{SENDER}"
stream = "{stream}"
{extra}""")


def compliance_tables(method: str) -> str:
    """Figure 4's [http] (its own free port; the rest the same on both sides) and
    [compliance] with `cancel_method = method` and no quiet hours."""
    return f"""
[http]
listen = "127.0.0.1:{_common.free_port()}"
public_url = "{PUBLIC_URL}"

[compliance]
cancel_method = "{method}"
quiet_hours = ""
"""


def start_relay(
    name: str, stream: str, workers: int, *, upstream: int, registry_url: str,
    secret_file: Path, cleanup: _common.Cleanup, extra: str = "",
) -> Relay:  # fmt: skip
    """`filterd serve --config CFG`; returns once every process logged `listening`."""
    directory = cleanup.temp_dir
    if directory is None:
        raise RuntimeError("no temp dir yet")
    port = _common.free_port()
    config = directory / f"{name}.toml"
    write_config(
        config, registry_url=registry_url, secret_file=secret_file, port=port,
        upstream=upstream, stream=stream, workers=workers, extra=extra,
    )  # fmt: skip
    log = directory / f"{name}.log"
    command = [FILTERD, "serve", "--config", str(config)]
    if stream == "plain":
        command = [sys.executable, str(Path(__file__).resolve()), "plain-relay", str(port),
                   str(upstream)]  # fmt: skip
    child = cleanup.spawn(command, log=log, cwd=directory)
    relay = Relay(name, port, stream, workers, log, child)
    listening: set[int] = set()
    deadline = time.monotonic() + 60
    while len(listening) < workers or len(relay.worker_pids) < workers - 1:
        if child.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"filterd {name} did not start ({child.poll()}): {tail}")
        time.sleep(0.05)
        for record in _records(log.read_bytes(), LogTally()):
            if record.get("event") == "listening" and record.get("port") == port:
                listening.add(int(record["pid"]))
            elif record.get("event") == "workers_started":
                relay.worker_pids = [int(p) for p in record["pids"]]
    relay.tally()  # skip the start-up lines
    return relay


# ---- the plain pass-through relay ----------------------------------------------------


def run_plain_relay(port: int, upstream: int) -> int:
    """`bench/smtp.py plain-relay PORT UPSTREAM`: the issue's reference relay.

    aiosmtpd in, filterd's own UpstreamPool out (same pool settings as `filterd
    serve`), the same real-time shape as filterd (the upstream transaction opened
    at the first RCPT, each RCPT passed on at once, DATA answered with the
    upstream's reply), and nothing else: no account, no address parsing, no
    header scan, no registry. One JSON `relayed` line per message on stdout (as
    filterd writes), so the bench's log checks apply to it too. Exits 0 on SIGTERM.
    """
    pid = os.getpid()
    out = sys.stdout

    class Handler:
        def __init__(self) -> None:
            self.pool = UpstreamPool("127.0.0.1", upstream, local_hostname="plain.bench")
            self.open: dict[int, UpstreamConnection] = {}

        async def end(self, session: Any, *, reset: bool) -> None:
            connection = self.open.pop(id(session), None)
            if connection is not None:
                if reset:
                    await connection.rset()
                await self.pool.release(connection)

        async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:  # fmt: skip
            await self.end(session, reset=True)
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 2.1.0 OK"

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:  # fmt: skip
            connection = self.open.get(id(session))
            if connection is None:
                got = await self.pool.acquire()
                if isinstance(got, UpstreamReply):
                    return got.line()
                options = [o for o in envelope.mail_options if not o.upper().startswith("SIZE=")]
                reply = await got.mail(envelope.mail_from or "", options, False)
                if not reply.ok:
                    got.close()
                    await self.pool.release(got)
                    return reply.line()
                connection = self.open[id(session)] = got
            reply = await connection.rcpt(address, False)
            if reply.ok:
                envelope.rcpt_tos.append(address)
            return reply.line() if not reply.ok else "250 2.1.5 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            connection = self.open.pop(id(session), None)
            if connection is None:
                return "451 4.3.0 no open upstream transaction, try again"
            reply = await connection.data(envelope.original_content or b"")
            await self.pool.release(connection)
            count = len(envelope.rcpt_tos)
            out.write(json.dumps({"event": "relayed", "recipients": count, "pid": pid}) + "\n")
            out.flush()  # filterd writes and flushes each log line too
            return reply.line()

        async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
            await self.end(session, reset=True)
            return "250 2.0.0 OK"

    async def serve() -> None:
        handler = Handler()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def factory() -> SMTP:
            return SMTP(
                handler,
                hostname="plain.bench",
                ident="plain relay",
                data_size_limit=25_000_000,
                enable_SMTPUTF8=True,
                decode_data=False,
            )

        server = await loop.create_server(factory, "127.0.0.1", port)
        out.write(json.dumps({"event": "listening", "port": port, "pid": pid}) + "\n")
        out.flush()
        await stop.wait()
        server.close()
        await handler.pool.close()

    asyncio.run(serve())
    return 0


# ---- consent ---------------------------------------------------------------------


async def load_consent(url: str, secret: bytes, count: int) -> float:
    """Consent of SENDER (email) for recipient(1..count); seconds taken. Checks a sample."""
    hasher = ConsumerHasher(secret)
    registry = RedisRegistry.from_url(url)
    now = int(time.time() * 1000)
    try:
        started = time.perf_counter()
        for start in range(1, count + 1, LOAD_BATCH):
            numbers = range(start, min(count, start + LOAD_BATCH - 1) + 1)
            ids = [hasher.consumer_id(normalize(recipient(n))) for n in numbers]
            await registry.record_many(
                [BulkRow(c, Kind.CONSENT, SENDER, Channel.EMAIL, now, "bench") for c in ids]
            )
        seconds = time.perf_counter() - started
        service = Service(registry, hasher, request_ttl_s=3600)
        sample = [normalize(recipient(n)) for n in (1, 2, count // 2, count)]
        sample.append(normalize(f"nobody@{RCPT_DOMAIN}"))
        decisions = await service.screen(SENDER, MessageClass.COMMERCIAL, sample, origin="bench")
        actions = [d.action for d in decisions]
        if actions != [Action.DELIVER] * 4 + [Action.DROP]:
            raise RuntimeError(f"consent not as loaded: {actions}")
        return seconds
    finally:
        await registry.close()


# ---- smtp-source runs --------------------------------------------------------------


def source_command(port: int, sessions: int, messages: int, rcpts: int) -> list[str]:
    """The smtp-source command line of every throughput run."""
    return [
        _common.tool("smtp-source"),
        "-s", str(sessions),
        "-m", str(messages),
        "-d",
        "-N",
        "-r", str(rcpts),
        "-M", HELO,
        "-f", MAIL_FROM,
        "-t", f"{RCPT_LOCAL}@{RCPT_DOMAIN}",
        f"127.0.0.1:{port}",
    ]  # fmt: skip


@dataclass
class Throughput:
    """smtp-source runs of one side, summed over rounds."""

    messages: int = 0
    seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    log_bytes: int = 0
    merged_lines: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)
    upstream_sessions: int = 0
    run_rates: list[float] = field(default_factory=list)
    """msg/s of each run, in order (one per round)."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    def cpu_us(self) -> float:
        """filterd + registry CPU per message, µs."""
        return (self.usage.relay + self.usage.registry) * 1e6 / self.messages


@dataclass
class Bench:
    """The shared set-up: sink, relays, parameters, notes."""

    sink: _common.Sink
    relays: dict[str, Relay]
    sessions: int
    per_run: int
    consented: int
    registry_pid: int
    headers: HeaderCheck
    """Figure 4's dumping sink, read after each of its runs."""
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_pids(self) -> list[int]:
        """Every long-running process of the bench (registry, sinks, relays)."""
        pids = [self.registry_pid, self.sink.process.pid, self.headers.sink.process.pid]
        for relay in self.relays.values():
            pids += relay.pids
        return list(dict.fromkeys(pids))  # with --compliance-only, sink is figure 4's


def _check_tally(relay: Relay, tally: LogTally, messages: int, rcpts: int) -> None:
    if tally.relayed != messages or tally.recipients != messages * rcpts:
        raise RuntimeError(
            f"{relay.name}: the log says {tally.relayed} messages / {tally.recipients} "
            f"recipients relayed, expected {messages} / {messages * rcpts}; {tally.other}"
        )


def run_source(
    bench: Bench, relay: Relay | None, rcpts: int, into: Throughput, messages: int, *,
    sink: _common.Sink | None = None,
) -> None:  # fmt: skip
    """One smtp-source run into `relay` (None: straight into the sink), checked and timed;
    `sink`: the relay's upstream when it is not `bench.sink` (figure 4's)."""
    sink = sink or bench.sink
    port = sink.port if relay is None else relay.port
    command = source_command(port, bench.sessions, messages, rcpts)
    name = relay.name if relay else "sink"
    sessions_before, before = sink.counters()
    meter = Meter(bench, relay)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, timeout=max(300, messages), check=False)
    seconds = time.perf_counter() - started
    usage = meter.stop()
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(
            f"smtp-source into {name} exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-1000:]} ({shlex.join(command)})"
        )
    received = sink.wait_for(before + messages) - before
    if received != messages:
        raise RuntimeError(
            f"{name}: smtp-source sent {messages} messages, smtp-sink got {received}"
        )
    if relay is not None:
        tally = relay.tally()
        _check_tally(relay, tally, messages, rcpts)
        if tally.other:
            bench.notes.append(f"- {name}, {rcpts} rcpt: other log events {tally.other}")
        into.log_bytes += tally.log_bytes
        into.merged_lines += tally.merged_lines
        for pid, count in tally.by_pid.items():
            into.by_pid[pid] = into.by_pid.get(pid, 0) + count
    into.upstream_sessions += sink.counters()[0] - sessions_before
    into.messages += messages
    into.seconds += seconds
    into.run_rates.append(messages / seconds)
    into.usage.add(usage)
    progress(
        f"  {name:14} {rcpts:2} rcpt: {messages / seconds:8,.0f} msg/s ({seconds:.2f} s, "
        f"other load {usage.foreign / usage.wall:.2f} cores)"
    )


# ---- the paced client ----------------------------------------------------------------


@dataclass
class Paced:
    """Per-message latencies (ns) of paced runs of one side, summed over rounds."""

    latencies: list[int] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    messages: int = 0
    usage: Usage = field(default_factory=Usage)

    def percentile_ms(self, share: float) -> float:
        """The latency at `share` (0..1) in ms."""
        return _common.percentile(self.latencies, share, 1e6)


class SmtpError(RuntimeError):
    """An unexpected SMTP reply."""


async def _reply(reader: asyncio.StreamReader, expected: int) -> bytes:
    """Read one (possibly multi-line) reply; SmtpError unless its code is `expected`."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError(f"connection closed while waiting for {expected}")
        if line[3:4] != b"-":
            break
    if not line[:3].isdigit() or int(line[:3]) != expected:
        raise SmtpError(f"expected {expected}, got {line.decode(errors='replace').strip()}")
    return line


def _message(index: int, to: str) -> bytes:
    """A small plain message like smtp-source's (no commercial signals), dot-terminated."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    body = "".join(f"La de da de da {n}.\r\n" for n in range(1, 5))
    head = f"From: <{MAIL_FROM}>\r\nTo: <{to}>\r\nDate: {date}\r\nMessage-Id: <{index}.p@{HELO}>"
    return f"{head}\r\n\r\n{body}.\r\n".encode()


async def send_one(port: int, to: list[str]) -> list[bytes]:
    """HELO, MAIL and RCPTs on a fresh connection, then QUIT; every reply line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [await reader.readline()]
    commands = [f"HELO {HELO}", f"MAIL FROM:<{MAIL_FROM}>", *(f"RCPT TO:<{a}>" for a in to)]
    try:
        for command in [*commands, "QUIT"]:
            writer.write(command.encode() + b"\r\n")
            lines.append(await reader.readline())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return lines


async def paced_run(port: int, rate: float, seconds: float, rcpts: int, span: int) -> Paced:
    """Start a message every 1/rate s over PACED_CONNECTIONS connections; time each one."""
    total = max(1, int(rate * seconds))
    loop = asyncio.get_running_loop()
    tickets: asyncio.Queue[int | None] = asyncio.Queue()
    result = Paced(messages=total)

    async def pacer(start: float) -> None:
        for index in range(total):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tickets.put_nowait(index)
        for _ in range(PACED_CONNECTIONS):
            tickets.put_nowait(None)

    async def sender(start: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _reply(reader, 220)
            writer.write(f"HELO {HELO}\r\n".encode())
            await _reply(reader, 250)
            while (index := await tickets.get()) is not None:
                base = 1 + (index * rcpts) % (span - rcpts)
                to = [recipient(base + k) for k in range(rcpts)]
                body = _message(index, to[0])
                result.late.append(loop.time() - (start + index / rate))
                began = time.perf_counter_ns()
                writer.write(f"MAIL FROM:<{MAIL_FROM}>\r\n".encode())
                await _reply(reader, 250)
                for address in to:
                    writer.write(f"RCPT TO:<{address}>\r\n".encode())
                    await _reply(reader, 250)
                writer.write(b"DATA\r\n")
                await _reply(reader, 354)
                writer.write(body)
                await _reply(reader, 250)
                result.latencies.append(time.perf_counter_ns() - began)
            writer.write(b"QUIT\r\n")
            await _reply(reader, 221)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    start = loop.time() + 0.05
    await asyncio.gather(pacer(start), *(sender(start) for _ in range(PACED_CONNECTIONS)))
    return result


def run_paced(
    bench: Bench, relay: Relay, rcpts: int, into: Paced, *, rate: float, seconds: float
) -> None:
    """One paced run, checked like an smtp-source run; its latencies added to `into`."""
    before = bench.sink.messages()
    meter = Meter(bench, relay)
    run = asyncio.run(paced_run(relay.port, rate, seconds, rcpts, bench.consented))
    usage = meter.stop()
    received = bench.sink.wait_for(before + run.messages) - before
    if received != run.messages or len(run.latencies) != run.messages:
        raise RuntimeError(f"{relay.name}: paced client sent {run.messages}, sink got {received}")
    _check_tally(relay, relay.tally(), run.messages, rcpts)
    into.latencies += run.latencies
    into.late += run.late
    into.messages += run.messages
    into.usage.add(usage)
    progress(
        f"  {relay.name:14} {rcpts:2} rcpt at {rate:,.0f}/s: p50 {run.percentile_ms(0.5):.2f} "
        f"ms, p99 {run.percentile_ms(0.99):.2f} ms ({run.messages / usage.wall:,.0f} msg/s, "
        f"other load {usage.foreign / usage.wall:.2f} cores)"
    )


# ---- verification ------------------------------------------------------------------


def verify(bench: Bench, dump_sink: _common.Sink, relay: Relay) -> None:
    """Recipients smtp-source generates; a commercial relay passes them all; consent matters."""
    count, rcpts = VERIFY_MESSAGES, MAX_RCPTS
    expected = sorted(recipient(n) for n in range(1, count * rcpts + 1))
    for target, port in (("smtp-sink directly", dump_sink.port), (relay.name, relay.port)):
        before, counted = len(dump_sink.recipients()), dump_sink.messages()
        command = source_command(port, VERIFY_SESSIONS, count, rcpts)
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0 or done.stderr.strip():
            raise RuntimeError(f"verification into {target}: {done.stderr.decode()[-500:]}")
        dump_sink.wait_for(counted + count)
        dumped = dump_sink.recipients()[before:]
        got = sorted(a for message in dumped for a in message)
        if len(dumped) != count or got != expected or any(len(m) != rcpts for m in dumped):
            raise RuntimeError(
                f"verification into {target}: {len(dumped)} messages, {len(got)} recipients; "
                f"expected {count} × {rcpts} = {expected[:3]}…; got {got[:3]}…"
            )
        bench.checks.append(
            f"- `smtp-source {shlex.join(command[1:-1])}` into {target}: the dumping sink got "
            f"{len(dumped)} messages × {rcpts} recipients, together exactly "
            f"{recipient(1)} … {recipient(count * rcpts)}"
        )
    _check_tally(relay, relay.tally(), count, rcpts)
    unknown = f"nobody@{RCPT_DOMAIN}"
    for name, code in (("commercial", b"550"), ("reference", b"250"), ("plain", b"250")):
        lines = asyncio.run(send_one(bench.relays[name].port, [unknown]))
        reply = lines[3] if len(lines) > 3 else b""
        if not reply.startswith(code):
            raise RuntimeError(f"RCPT {unknown} via {name}: {lines!r}, expected {code.decode()}")
        bench.checks.append(
            f"- RCPT TO:<{unknown}> (no consent on record) via {name}: `{reply.decode().strip()}`"
        )
        bench.relays[name].tally()


# ---- figure 4: the one-click headers at the sink ------------------------------------

_RCPT_ARGS = re.compile(rb"^X-Rcpt-Args: <([^>]*)>", re.MULTILINE)
_LIST_UNSUBSCRIBE = re.compile(rb"^List-Unsubscribe:[ \t]*(.*)$", re.MULTILINE | re.IGNORECASE)
_ONE_CLICK_POST = re.compile(
    rb"^List-Unsubscribe-Post:[ \t]*List-Unsubscribe=One-Click[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)


@dataclass
class HeaderCount:
    """What the dumped messages of one side carried, summed over its runs."""

    messages: int = 0
    list_unsubscribe: int = 0
    own_url: int = 0
    """Messages whose one List-Unsubscribe is `<PUBLIC_URL/unsubscribe/TOKEN>`, TOKEN
    signed with the relays' key (derived from the registry secret) for sender acme,
    channel email and the consumer of the message's one recipient."""
    one_click_post: int = 0

    def add(self, other: HeaderCount) -> None:
        """Accumulate another run's count."""
        self.messages += other.messages
        self.list_unsubscribe += other.list_unsubscribe
        self.own_url += other.own_url
        self.one_click_post += other.one_click_post

    def added_everywhere(self) -> bool:
        """Every message got both headers, its List-Unsubscribe naming its recipient."""
        full = (self.list_unsubscribe, self.own_url, self.one_click_post)
        return self.messages > 0 and full == (self.messages,) * 3

    def added_nowhere(self) -> bool:
        """No message carries either header."""
        return self.messages > 0 and self.list_unsubscribe == self.one_click_post == 0


class HeaderCheck:
    """Figure 4's dumping sink (`smtp-sink -c -D`), read run by run: the one-click
    headers of every message it received, and whose URL each names."""

    def __init__(self, sink: _common.Sink, secret: bytes) -> None:
        if sink.dump is None:
            raise RuntimeError("figure 4 needs a dumping sink")
        self.sink = sink
        self.dump = sink.dump
        self.offset = 0
        self.keys = TokenKeys(derive_key(secret), max_age_s=86400)
        self.hasher = ConsumerHasher(secret)
        self.senders = sender_table([SENDER])

    def _new(self) -> bytes:
        if not self.dump.exists():
            return b""
        with self.dump.open("rb") as f:
            f.seek(self.offset)
            return f.read()

    def skip(self) -> None:
        """Forget what the sink holds so far (the warm-up's messages)."""
        self.offset += len(self._new())

    def count(self, expected: int) -> HeaderCount:
        """The messages dumped since the last call (waiting up to 10 s for `expected`)."""
        deadline = time.monotonic() + 10
        data = self._new()
        while data.count(b"X-Client-Addr: ") < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            data = self._new()
        self.offset += len(data)
        result = HeaderCount()
        for transaction in data.split(b"X-Client-Addr: ")[1:]:
            head = transaction.split(b"\n\n", 1)[0]
            result.messages += 1
            result.one_click_post += _ONE_CLICK_POST.search(head) is not None
            found = _LIST_UNSUBSCRIBE.findall(head)
            if not found:
                continue
            result.list_unsubscribe += 1
            rcpts = _RCPT_ARGS.findall(head)
            if len(found) == 1 and len(rcpts) == 1:
                result.own_url += self._names(found[0], rcpts[0].decode())
        return result

    def _names(self, value: bytes, rcpt: str) -> bool:
        """The header's first target is the one-click URL of `rcpt` for SENDER."""
        prefix = f"<{PUBLIC_URL}/unsubscribe/".encode()
        first = value.split(b",", 1)[0].strip()
        if not first.startswith(prefix) or not first.endswith(b">"):
            return False
        try:
            wanted = self.keys.verify(
                first[len(prefix) : -1].decode(), self.senders, int(time.time())
            )
        except (TokenError, UnicodeDecodeError):
            return False
        return (wanted.sender, wanted.channel, wanted.consumer) == (
            SENDER,
            Channel.EMAIL,
            self.hasher.consumer_id(normalize(rcpt)),
        )


def check_one_recipient(bench: Bench) -> None:
    """A second RCPT of a commercial transaction: 452 4.5.3 under add, 250 under off."""
    to = [recipient(1), recipient(2)]
    for name, code in (("compliance-add", b"452 4.5.3"), ("compliance-off", b"250")):
        lines = asyncio.run(send_one(bench.relays[name].port, to))
        first, second = (lines[i] if len(lines) > i else b"" for i in (3, 4))
        if not first.startswith(b"250") or not second.startswith(code):
            raise RuntimeError(f"RCPT {to} via {name}: {lines!r}, expected 250 then {code!r}")
        bench.checks.append(
            f"- RCPT TO:<{to[0]}> then RCPT TO:<{to[1]}> in one transaction via {name}: "
            f"`{first.decode().strip()}`, then `{second.decode().strip()}`"
        )
        bench.relays[name].tally()


# ---- phases ------------------------------------------------------------------------


@dataclass
class Results:
    """Every measurement, by (side, recipients per message)."""

    rates: dict[tuple[str, int], Throughput] = field(default_factory=dict)
    paced: dict[tuple[str, int], Paced] = field(default_factory=dict)
    paced_rate: dict[int, float] = field(default_factory=dict)
    headers: dict[str, HeaderCount] = field(default_factory=dict)
    """Figure 4: what the sink's messages carried, by side."""


def phase_throughput(bench: Bench, rounds: int, res: Results) -> None:
    """Figures 1 and 3: smtp-source into the sink and each relay, order reversed every round."""
    for rcpts in RCPT_COUNTS:
        progress(f"figures 1 and 3: {rcpts} recipient(s)/message, {rounds} round(s) ...")
        for number in range(rounds):
            order = list(SIDES) if number % 2 == 0 else list(reversed(SIDES))
            for side in ["sink", *order]:
                into = res.rates.setdefault((side, rcpts), Throughput())
                relay = bench.relays.get(side)
                run_source(bench, relay, rcpts, into, bench.per_run)


def phase_compliance(bench: Bench, rounds: int, res: Results) -> None:
    """Figure 4: 1 rcpt/msg through `cancel_method = "add"` and `"off"`, alternating;
    after each run, the headers of every message the sink got (a run where add did not
    add them, or off did, stops the bench)."""
    check = bench.headers
    progress(f"figure 4: [compliance] add vs off, 1 recipient/message, {rounds} round(s) ...")
    for number in range(rounds):
        order = COMPLIANCE_SIDES if number % 2 == 0 else COMPLIANCE_SIDES[::-1]
        for side in order:
            into = res.rates.setdefault((side, 1), Throughput())
            run_source(bench, bench.relays[side], 1, into, bench.per_run, sink=check.sink)
            got = check.count(bench.per_run)
            res.headers.setdefault(side, HeaderCount()).add(got)
            adds = side == "compliance-add"
            ok = got.added_everywhere() if adds else got.added_nowhere()
            if got.messages != bench.per_run or not ok:
                raise RuntimeError(
                    f"{side}, round {number + 1}: failed: of the {got.messages:,} messages "
                    f"the sink got ({bench.per_run:,} sent), {got.list_unsubscribe:,} carry "
                    f"List-Unsubscribe ({got.own_url:,} naming their recipient's one-click "
                    f"URL), {got.one_click_post:,} List-Unsubscribe-Post; expected "
                    + ("all of them" if adds else "none")
                )


def phase_latency(bench: Bench, rounds: int, seconds: float, res: Results) -> None:
    """Figure 2: the paced client at half the commercial rate, commercial vs reference."""
    for rcpts in RCPT_COUNTS:
        rate = res.rates[("commercial", rcpts)].rate / 2
        res.paced_rate[rcpts] = rate
        progress(f"figure 2: {rcpts} recipient(s)/message at {rate:,.0f} msg/s ...")
        for number in range(rounds):
            order = ["commercial", "reference", "plain"]
            order = order if number % 2 == 0 else order[::-1]
            for side in order:
                into = res.paced.setdefault((side, rcpts), Paced())
                run_paced(
                    bench, bench.relays[side], rcpts, into, rate=rate, seconds=seconds / rounds
                )


# ---- report ----------------------------------------------------------------------


def build_table(bench: Bench, res: Results, rounds: int) -> _common.Table:
    """The final table from the measurements (figures 1-3 unless --compliance-only)."""
    t = _common.Table()
    if ("commercial", 1) in res.rates:
        figures_1_to_3(t, bench, res, rounds)
    add, off = (res.rates[(side, 1)] for side in COMPLIANCE_SIDES)
    load = f"`-s {bench.sessions} -m {bench.per_run} -d -N -r 1` × {rounds}"
    t.add(
        f'4. msg/s, 1 rcpt/msg, {load}, commercial, `[compliance] cancel_method = "add"`, '
        'messages without List-Unsubscribe (baseline: the same with `"off"`)',
        add.rate,
        off.rate,
        f"≥ {TARGET_RATIO}× {_common.mark(add.rate / off.rate >= TARGET_RATIO)}",
    )
    t.add(
        '4. CPU µs/msg of filterd + registry, 1 rcpt/msg, `cancel_method = "add"` '
        '(baseline: `"off"`)',
        add.cpu_us(),
        off.cpu_us(),
    )
    return t


def figures_1_to_3(t: _common.Table, bench: Bench, res: Results, rounds: int) -> None:
    """Rows of figures 1, 2 and 3."""
    for rcpts in RCPT_COUNTS:
        com, ref = res.rates[("commercial", rcpts)], res.rates[("reference", rcpts)]
        sink = res.rates[("sink", rcpts)]
        load = f"`-s {bench.sessions} -m {bench.per_run} -d -N -r {rcpts}` × {rounds}"
        t.add(
            f"1. msg/s, {rcpts} rcpt/msg, {load} (baseline: reference = transactional "
            "account, no registry read)",
            com.rate,
            ref.rate,
            f"≥ {TARGET_RATIO}× {_common.mark(com.rate / ref.rate >= TARGET_RATIO)}",
        )
        plain = res.rates[("plain", rcpts)]
        t.add(
            f"1. msg/s, {rcpts} rcpt/msg (baseline: plain = aiosmtpd pass-through relay, "
            "filterd's UpstreamPool, nothing else)",
            com.rate,
            plain.rate,
            f"≥ {TARGET_RATIO}× {_common.mark(com.rate / plain.rate >= TARGET_RATIO)}",
        )
        t.add(
            f"1. msg/s, {rcpts} rcpt/msg (baseline: limit = smtp-source → smtp-sink directly)",
            com.rate,
            sink.rate,
        )
        t.add(
            f"1. CPU µs/msg of filterd + registry, {rcpts} rcpt/msg (baseline: reference)",
            com.cpu_us(),
            ref.cpu_us(),
        )
        t.add(
            f"1. CPU µs/msg of filterd + registry, {rcpts} rcpt/msg (baseline: plain)",
            com.cpu_us(),
            plain.cpu_us(),
        )
    for rcpts in RCPT_COUNTS:
        rate = res.paced_rate[rcpts]
        com_p = res.paced[("commercial", rcpts)]
        for label, share in (("p50", 0.5), ("p99", 0.99)):
            for base_side in ("reference", "plain"):
                ours = com_p.percentile_ms(share)
                base = res.paced[(base_side, rcpts)].percentile_ms(share)
                added = ours - base
                target = f"added {added:+.2f} ms"
                if label == "p99":
                    ok = added <= TARGET_ADDED_P99_MS
                    target = f"added ≤ {TARGET_ADDED_P99_MS:g} ms: {added:+.2f} {_common.mark(ok)}"
                t.add(
                    f"2. latency {label}, ms, MAIL → 250 after DATA, {rcpts} rcpt/msg at "
                    f"{rate:,.0f} msg/s over {PACED_CONNECTIONS} connections, "
                    f"{com_p.messages:,} msgs (baseline: {base_side})",
                    ours,
                    base,
                    target,
                    2,
                )
    for rcpts in RCPT_COUNTS:
        w2 = res.rates[("commercial-w2", rcpts)].rate
        w1 = res.rates[("commercial", rcpts)].rate
        t.add(
            f"3. msg/s, {rcpts} rcpt/msg, commercial, `workers = 2` (baseline: `workers = 1`)",
            w2,
            w1,
            f"≥ {TARGET_WORKERS}× {_common.mark(w2 / w1 >= TARGET_WORKERS)}",
        )


def diagnostics(bench: Bench, res: Results) -> list[str]:
    """CPU per message, other load, log volume, worker split, pacing accuracy."""
    lines = []
    for (side, rcpts), run in sorted(res.rates.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        u = run.usage
        text = (
            f"- {side}, {rcpts} rcpt: {run.messages:,} msgs in {run.seconds:.2f} s; "
            f"other load {u.foreign / u.wall:.2f} cores"
        )
        if side != "sink":
            text += (
                f"; CPU µs/msg filterd {u.relay * 1e6 / run.messages:,.0f}, registry "
                f"{u.registry * 1e6 / run.messages:,.0f} (filterd {u.relay / u.wall:.2f} cores "
                f"busy); log {run.log_bytes / run.messages:,.0f} B/msg"
            )
        text += f"; smtp-sink sessions ended {run.upstream_sessions:,}"
        if len(run.by_pid) > 1:
            split = " / ".join(f"{n:,}" for n in sorted(run.by_pid.values(), reverse=True))
            text += f"; messages per process {split}"
        if run.merged_lines:
            text += f"; {run.merged_lines:,} log lines held 2+ JSON objects (interleaved writes)"
        lines.append(text)
    pairs = zip(*(res.rates[(side, 1)].run_rates for side in COMPLIANCE_SIDES), strict=True)
    ratios = ", ".join(f"{add / off:.2f}×" for add, off in pairs)
    lines.append(
        f'- cancel_method "add" ÷ "off" in each round, 1 rcpt: {ratios} (the two runs of a '
        "round are back to back)"
    )
    if ("commercial", 1) in res.rates:
        lines += workers_notes(res)
    for (side, rcpts), paced in sorted(res.paced.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        late = sorted(paced.late)
        u = paced.usage
        lines.append(
            f"- paced {side}, {rcpts} rcpt: {paced.messages:,} msgs at "
            f"{paced.messages / u.wall:,.0f} msg/s (asked {res.paced_rate[rcpts]:,.0f}); "
            f"started behind schedule p50 {statistics.median(late) * 1000:.2f} ms, max "
            f"{late[-1] * 1000:.1f} ms; mean latency "
            f"{statistics.fmean(paced.latencies) / 1e6:.2f} ms; other load "
            f"{u.foreign / u.wall:.2f} cores"
        )
    return lines


def workers_notes(res: Results) -> list[str]:
    """Figure 3: the workers ceiling, and the ratio of each round."""
    lines = []
    cores = len(os.sched_getaffinity(0))
    for rcpts in RCPT_COUNTS:
        w1 = res.rates[("commercial", rcpts)]
        busy = w1.usage.ours / w1.usage.wall
        lines.append(
            f"- workers ceiling, {rcpts} rcpt: at {w1.rate:,.0f} msg/s with `workers = 1` the "
            f"bench's processes (smtp-source, smtp-sink, Valkey, filterd) kept {busy:.2f} "
            f"cores busy, filterd {w1.usage.relay / w1.usage.wall:.2f}; at the same CPU per "
            f"message {cores} cores carry at most {cores / busy:.2f}× that rate, whatever "
            "the number of workers"
        )
    for rcpts in RCPT_COUNTS:
        pairs = zip(
            res.rates[("commercial-w2", rcpts)].run_rates,
            res.rates[("commercial", rcpts)].run_rates,
            strict=True,
        )
        ratios = ", ".join(f"{w2 / w1:.2f}×" for w2, w1 in pairs)
        lines.append(
            f"- workers = 2 ÷ workers = 1 in each round, {rcpts} rcpt: {ratios} (the two "
            "runs of a round are back to back, so a slow spell of the machine hits both)"
        )
    return lines


def load_lines(bench: Bench, args: argparse.Namespace) -> list[str]:
    """The smtp-source command lines of the figures run."""
    lines = []
    rounds = f"{args.rounds} round(s), order of the sides reversed every round"
    if not args.compliance_only:
        port = bench.relays["commercial"].port
        example = source_command(port, args.sessions, bench.per_run, MAX_RCPTS)
        lines.append(
            f"load (figures 1 and 3): `{shlex.join(example)}` with the port of each relay, or "
            f"of smtp-sink for the limit; {rounds}; rates = all messages ÷ all smtp-source "
            "wall time."
        )
    port = bench.relays["compliance-add"].port
    example = source_command(port, args.sessions, bench.per_run, 1)
    lines.append(
        f"load (figure 4): `{shlex.join(example)}` with the port of each of the two relays; "
        f"{rounds}; both relay into one `smtp-sink -c -D` (a dump of every message, read "
        "after each run for the checks)."
    )
    return lines


def header_checks(res: Results) -> list[str]:
    """What figure 4's sink found in the messages of each side."""
    lines = []
    for side, got in sorted(res.headers.items()):
        ok = got.added_everywhere() if side == "compliance-add" else got.added_nowhere()
        lines.append(
            f"- {_common.mark(ok)} {side}: of the {got.messages:,} timed messages at the sink, "
            f"{got.list_unsubscribe:,} carry List-Unsubscribe, {got.own_url:,} of them "
            f"`<{PUBLIC_URL}/unsubscribe/TOKEN>` with TOKEN signed for sender {SENDER}, email, "
            f"and the message's recipient; {got.one_click_post:,} carry "
            "`List-Unsubscribe-Post: List-Unsubscribe=One-Click`"
        )
    return lines


def side_notes(compliance_only: bool) -> list[str]:
    """What the sides of the figures run are."""
    figure4 = (
        "- figure 4: filterd = `compliance-add`, the commercial account with `[compliance] "
        'cancel_method = "add"`: smtp-source\'s messages carry no List-Unsubscribe, so each '
        "gets List-Unsubscribe (its recipient's one-click URL: a signed token) and "
        'List-Unsubscribe-Post; baseline = `compliance-off`, the same config with "off" '
        '(relayed as they are). Both have `quiet_hours = ""` and the same `[http]` '
        "(public_url, derived token key) but for its listen port, and relay into one "
        "dumping sink (smtp-sink -D writes every message to a file), not the counting sink "
        "of figures 1-3: compare figure 4's rates with each other only."
    )
    if compliance_only:
        return ["- ratio = filterd ÷ baseline.", figure4]
    return [
        "- ratio = filterd ÷ baseline. filterd = the `commercial` account: one consent "
        "lookup (registry read) per RCPT. reference = the same relay config with the "
        "account's stream = transactional (no registry read, but filterd's other work: "
        "account, address normalisation, the commercial-signal header scan at DATA). "
        "plain = the issue's reference: an aiosmtpd relay through filterd's UpstreamPool "
        "doing nothing else (`bench/smtp.py plain-relay`). None of these has a "
        "`[compliance]` table.",
        figure4,
    ]


def machine_facts(binary: ServerBinary) -> list[str]:
    """nproc, CPU, Python, libraries, server and Postfix versions, environment."""
    names = ("filterd", "aiosmtpd", "aiosmtplib", "redis", "hiredis", "structlog")
    postfix = _common.command_version(["postconf", "-d", "mail_version"])
    return [
        f"- code: {_common.code_version()}",
        _common.machine_line(),
        _common.python_line(names),
        f"- registry server: {binary.path} ({_common.command_version([binary.path, '--version'])})",
        f"- postfix tools: {_common.tool('smtp-source')}, {_common.tool('smtp-sink')} ({postfix})",
        _common.environment_line(),
        _common.loadavg_line("start"),
    ]


# ---- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--quick, --messages, --rounds, --sessions, --seconds, --compliance-only."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 messages per side, 4 s paced")
    p.add_argument("--messages", type=int, help="messages per side and figure (default 20,000)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    p.add_argument("--seconds", type=float, help="paced load per latency side (default 10)")
    p.add_argument(
        "--compliance-only",
        action="store_true",
        help='figure 4 alone: [compliance] cancel_method = "add" vs "off"',
    )
    args = p.parse_args(argv)
    if args.messages is None:
        args.messages = 2_000 if args.quick else 20_000
    if args.seconds is None:
        args.seconds = 4.0 if args.quick else 10.0
    if args.rounds < 1 or args.sessions < 1 or args.messages < 100 * args.rounds:
        p.error("need --rounds ≥ 1, --sessions ≥ 1, --messages ≥ 100 × rounds")
    return args


def setup(args: argparse.Namespace, binary: ServerBinary, cleanup: _common.Cleanup) -> Bench:
    """Registry, consent, sink, relays, then the verification pass."""
    temp = cleanup.temp_dir
    if temp is None:
        raise RuntimeError("no temp dir yet")
    progress(f"temp dir {temp}; registry server ...")
    url, registry = _common.start_registry(binary, temp / "r", cleanup)
    secret_file = temp / "secret"
    secret = _common.write_secret(secret_file)
    per_run = args.messages // args.rounds
    spread = 1 if args.compliance_only else MAX_RCPTS
    consented = max(per_run, VERIFY_MESSAGES, WARMUP_MESSAGES) * spread
    progress(f"consent for {consented:,} recipients ...")
    load_seconds = asyncio.run(load_consent(url, secret, consented))
    progress("smtp-sinks and the filterd relays ...")
    headers = HeaderCheck(_common.Sink.start("compliance-sink", temp, cleanup, dump=True), secret)
    sink = headers.sink if args.compliance_only else _common.Sink.start("sink", temp, cleanup)
    relays = {
        name: start_relay(
            name,
            stream,
            workers,
            upstream=sink.port,
            registry_url=url,
            secret_file=secret_file,
            cleanup=cleanup,
        )
        for name, stream, workers in (() if args.compliance_only else RELAYS)
    }
    for side in COMPLIANCE_SIDES:
        relays[side] = start_relay(
            side, "commercial", 1, upstream=headers.sink.port, registry_url=url,
            secret_file=secret_file, cleanup=cleanup,
            extra=compliance_tables(side.removeprefix("compliance-")),
        )  # fmt: skip
    bench = Bench(sink, relays, args.sessions, per_run, consented, registry.pid, headers)
    bench.notes.append(
        f"- consent loaded for {consented:,} recipients ({recipient(1)} … "
        f"{recipient(consented)}) with record_many in {load_seconds:.2f} s"
    )
    check_one_recipient(bench)
    if args.compliance_only:
        return bench
    progress("verification pass (dumping sink, its own commercial filterd) ...")
    dump_sink = _common.Sink.start("dump-sink", temp, cleanup, dump=True)
    checker = start_relay(
        "verify", "commercial", 1, upstream=dump_sink.port, registry_url=url,
        secret_file=secret_file, cleanup=cleanup,
    )  # fmt: skip
    verify(bench, dump_sink, checker)
    _common.stop_child(checker.process)
    _common.stop_child(dump_sink.process)
    return bench


def warm_up(bench: Bench) -> None:
    """WARMUP_MESSAGES through each relay: MAX_RCPTS recipients per message, 1 through
    figure 4's (a commercial transaction under add takes one); then figure 4's sink
    forgets them."""
    for relay in bench.relays.values():
        if relay.name in COMPLIANCE_SIDES:
            run_source(bench, relay, 1, Throughput(), WARMUP_MESSAGES, sink=bench.headers.sink)
        else:
            run_source(bench, relay, MAX_RCPTS, Throughput(), WARMUP_MESSAGES)
    bench.headers.skip()


def stop_relays(bench: Bench) -> None:
    """SIGTERM each relay; note its exit code, drain time and any worker left running."""
    for relay in bench.relays.values():
        started = time.perf_counter()
        code = _common.stop_child(relay.process)
        seconds = time.perf_counter() - started
        left = [p for p in relay.worker_pids if Path(f"/proc/{p}").exists()]
        ok = code == 0 and not left
        bench.notes.append(
            f"- {_common.mark(ok)} `filterd serve` {relay.name}: SIGTERM → exit {code} in "
            f"{seconds:.2f} s" + (f"; worker processes still there: {left}" if left else "")
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every phase, print the report on stdout, clean up whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    if raw_argv[:1] == ["plain-relay"]:  # a child of the bench: the plain relay
        return run_plain_relay(int(raw_argv[1]), int(raw_argv[2]))
    args = parse_args(raw_argv)
    _common.sigterm_as_interrupt()
    logs.configure(sys.stderr, "WARNING")  # this process's own filterd calls stay quiet
    cleanup = _common.Cleanup()
    wall = time.monotonic()
    with _common.cleaning_up(cleanup.run):
        binary = find_binary()
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fds-", dir="/tmp"))
        bench = setup(args, binary, cleanup)
        progress(f"warm-up ({WARMUP_MESSAGES} messages per relay) ...")
        warm_up(bench)
        res = Results()
        if not args.compliance_only:
            phase_throughput(bench, args.rounds, res)
        phase_compliance(bench, args.rounds, res)
        if not args.compliance_only:
            phase_latency(bench, args.rounds, args.seconds, res)
        stop_relays(bench)
        table = build_table(bench, res, args.rounds)
        command = _common.bench_command("bench/smtp.py", raw_argv)
        out = [
            *_common.report_head(
                "filterd SMTP relay benchmark",
                command,
                [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
            ),
            "",
            table.markdown(),
            "",
            *load_lines(bench, args),
            "",
            "checks (all passed, or the bench stops with an error):",
            *bench.checks,
            *header_checks(res),
            "- every timed run: smtp-source exit 0 and silent; smtp-sink's counter grew by "
            "exactly the messages sent; the relay's `relayed` log lines add up to the messages "
            "and messages × recipients",
            "",
            "notes:",
            *side_notes(args.compliance_only),
            "- every process shares the machine's cores: smtp-source or the paced client, "
            "smtp-sink, Valkey, filterd. 'other load' = machine CPU (/proc/stat) minus every "
            "process of this bench, in cores, during the run.",
            *bench.notes,
            *diagnostics(bench, res),
        ]
        print("\n".join(out), flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "processes stopped and temp files removed")
