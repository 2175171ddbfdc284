"""API benchmark: `/v1/check` decisions/s from one `filterd serve`, beside the storage
layer's batch lookup of the same batches (the ceiling), and the p99 latency of a
single-address check at half load, in one run.

Run from the repository root:

    .venv/bin/python bench/api.py [--facts N] [--quick] [--seconds S]
                                  [--connections C] [--server PATH]

What it does:

- Makes a temp dir under /tmp, writes N distinct numbers `+8613` + 9 random
  digits (fixed seed) to a CSV, a secret, an API key file (0600) and a config:
  `[registry] url = "embedded"` (its `data_dir` in the temp dir, `default_region`
  CN) and `[api]` on a free port of 127.0.0.1 with one key (`check` scope, sender
  `acme`). Never touches the system Redis or any registry it did not start.
- Starts the embedded registry server itself (`EmbeddedServer.acquire`, so it
  outlives `filterctl`) and loads the N consents with `filterctl import FILE
  --action consent --sender acme` (the bulk import: several worker processes for
  a large file); its time and rate are in the notes.
- Starts one `filterd serve` on that config (logs to a file in the temp dir) and
  waits for its API to listen; if its port was taken during the import, it
  tries another free one (twice at most).
- Builds batches of 1,000 addresses: 90 % drawn from the loaded numbers, 10 %
  numbers never loaded (so each answer mixes `deliver` and `drop no_consent`),
  each pre-encoded as a whole HTTP request.
- Before measuring, waits for an AOF rewrite the import may have set off (it
  forks and takes a core for seconds), and freezes its own heap (`gc.freeze`):
  the numbers and the work stay to the end, and its full collections walking
  them took 40-160 ms at 1M facts, each a stall counted in figure 3.

Figures, each side measured for `--seconds` in two alternating rounds after a
warm-up:

1. **Decisions/s, batches of 1,000**: this process is the client, `--connections`
   keep-alive connections (default 2) each with one request in flight, a plain
   asyncio HTTP/1.1 client (pre-encoded requests; answers read by Content-Length,
   decoded with msgspec, every decision counted against what was loaded).
   *Ceiling*: `RedisRegistry.lookup("acme", ids)` of the same batches (their
   consumer ids computed beforehand) from this process against the same server,
   as many calls in flight as connections: the storage layer's batch lookup
   alone, with no HTTP, JSON, normalisation, hashing or `decide()`. Targets:
   ≥ 50,000 decisions/s and at least 0.6 of the ceiling.
2. **Single-address checks, maximum**: the same client with 16 connections, one
   address per request, closed loop; beside the storage lookup of one id, 16
   calls in flight.
3. **p99 at half load**: single-address checks sent open-loop at half the rate
   of figure 2 (evenly paced; a request waits for a free connection of a pool of
   64 if none is idle), latency counted from the moment each request was due, so
   a stall is not hidden by the client waiting for it. Beside the storage lookup
   paced the same way at the same rate. Target: p99 ≤ 5 ms.

Also reported: filterd's and the registry server's CPU per decision in figure 1
and per check in figure 2 (from /proc); in the notes, the registry's AOF
rewrites, this client's own collections over 1 ms, and how long each process
waited for a CPU in figure 3 (run-queue time, /proc/PID/schedstat), which on a
busy machine is where the latency goes. The report goes to stdout, progress to
stderr. Everything started
is stopped and the temp dir removed at the end, on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _common
import msgspec
import redis

from filterd.identity import ConsumerHasher
from filterd.normalize import normalize
from filterd.secret import load_or_create
from filterd.storage.embedded import EmbeddedServer, ServerBinary, find_binary
from filterd.storage.redis import RedisRegistry

SENDER = "acme"
SEED = 20250615
BATCH = 1000
UNKNOWN_SHARE = 0.1
BATCHES = 100
SINGLES = 20_000
SINGLE_CONNECTIONS = 16
PACED_POOL = 64
ROUNDS = 2
WARMUP_S = 0.5
TARGET_RATE = 50_000.0
TARGET_SHARE = 0.6
TARGET_P99_MS = 5.0
START_TIMEOUT_S = 60.0
_IMPORTED = "imported "

progress = _common.progress


# ---- set-up ---------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """The files of a run and the numbers in them."""

    temp_dir: Path
    config: Path
    csv: Path
    data_dir: Path
    key: str
    port: int
    loaded: list[str]
    unknown: list[str]


def make_setup(temp_dir: Path, facts: int, server: str | None) -> Setup:
    """Numbers, CSV, secret, key file and config in `temp_dir`."""
    rng = random.Random(SEED)
    extra = max(BATCH, facts // 10)
    drawn = rng.sample(range(10**9), facts + extra)
    numbers = [f"+8613{n:09d}" for n in drawn]
    loaded, unknown = numbers[:facts], numbers[facts:]
    csv = temp_dir / "numbers.csv"
    csv.write_text("\n".join(loaded) + "\n")
    key = secrets.token_hex(32)
    key_file = temp_dir / "bench.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    _common.write_secret(temp_dir / "secret")
    port = _common.free_port()
    data_dir = temp_dir / "e"
    lines = [
        "[registry]",
        'url = "embedded"',
        f'data_dir = "{data_dir}"',
        f'secret_file = "{temp_dir / "secret"}"',
        'default_region = "CN"',
        *([f'server = "{server}"'] if server else []),
        "[api]",
        f'listen = "127.0.0.1:{port}"',
        "[[api.keys]]",
        'name = "bench"',
        f'key_file = "{key_file}"',
        f'senders = ["{SENDER}"]',
        'scopes = ["check"]',
    ]
    config = temp_dir / "filterd.toml"
    config.write_text("\n".join(lines) + "\n")
    return Setup(temp_dir, config, csv, data_dir, key, port, loaded, unknown)


def load_facts(setup: Setup, cleanup: _common.Cleanup) -> tuple[float, str]:
    """`filterctl import` of every loaded number as a consent of SENDER; seconds, output."""
    filterctl = str(Path(sys.executable).parent / "filterctl")
    command = [filterctl, "--config", str(setup.config), "import", str(setup.csv),
               "--action", "consent", "--sender", SENDER]  # fmt: skip
    started = time.perf_counter()
    child = cleanup.spawn(command, log=None, cwd=setup.temp_dir)
    out, _ = child.communicate()
    seconds = time.perf_counter() - started
    said = (out or b"").decode(errors="replace").strip()
    if child.returncode != 0 or _IMPORTED not in said:
        raise RuntimeError(f"filterctl import exited {child.returncode}: {said[-2000:]}")
    return seconds, said


def start_filterd(setup: Setup, cleanup: _common.Cleanup) -> tuple[Setup, subprocess.Popen[bytes]]:
    """`filterd serve` on the config; returns once its API logs `listening`. The port
    was free when the config was written, before the import: if another program took
    it since (other runs on the machine open many connections), up to two more free
    ports are tried, each written into the config."""
    for attempt in range(1, 4):
        if attempt > 1:
            port = _common.free_port()
            text = setup.config.read_text()
            setup.config.write_text(text.replace(f"127.0.0.1:{setup.port}", f"127.0.0.1:{port}"))
            setup = dataclasses.replace(setup, port=port)
        log = setup.temp_dir / f"filterd-{attempt}.log"
        child = serve(setup, cleanup, log)
        if child is not None:
            return setup, child
        progress(f"  port {setup.port} was taken since the config was written; another ...")
    raise RuntimeError("filterd serve found its API port taken three times")


def serve(setup: Setup, cleanup: _common.Cleanup, log: Path) -> subprocess.Popen[bytes] | None:
    """Start `filterd serve`, wait for its API's `listening`; None if it exited because
    the port was in use."""
    filterd = str(Path(sys.executable).parent / "filterd")
    child = cleanup.spawn([filterd, "serve", "--config", str(setup.config)], log=log,
                          cwd=setup.temp_dir)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            if "address already in use" in tail:
                return None
            raise RuntimeError(f"filterd serve exited ({child.returncode}): {tail}")
        for line in log.read_text(errors="replace").splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "listening" and record.get("front_end") == "api":
                return child
        time.sleep(0.05)
    raise RuntimeError(f"filterd serve did not listen in {START_TIMEOUT_S:.0f}s")


def registry_persistence(url: str) -> dict[str, int]:
    """The registry server's AOF rewrite counters (`INFO persistence`)."""
    client = redis.Redis.from_url(url)
    try:
        info = client.info("persistence")
    finally:
        client.close()
    names = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "aof_rewrites")
    return {name: int(info.get(name, 0)) for name in names}


def settle_registry(url: str) -> str:
    """Wait for an AOF rewrite the import set off (it forks and takes a core for
    seconds) to end; what was found, for the notes."""
    started = time.monotonic()
    state = registry_persistence(url)
    while state["aof_rewrite_in_progress"] or state["aof_rewrite_scheduled"]:
        time.sleep(0.1)
        state = registry_persistence(url)
    return f"{state['aof_rewrites']} after the import, waited {time.monotonic() - started:.1f} s"


def runqueue_seconds(pid: int) -> float:
    """Time the main thread of `pid` has spent runnable but waiting for a CPU
    (/proc/PID/schedstat, second field)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Pauses:
    """This process's own garbage collections over 1 ms, while installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self.count = 0
        self._started = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The gc callback: times each collection."""
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        ms = (time.perf_counter_ns() - self._started) / 1e6
        if ms > 1.0:
            self.count += 1
            self.longest_ms = max(self.longest_ms, ms)


# ---- the work ---------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """Pre-encoded requests, the consumer ids of the same addresses, expected counts."""

    batch_requests: list[bytes]
    batch_ids: list[list[bytes]]
    batch_delivers: list[int]
    single_requests: list[bytes]
    single_ids: list[list[bytes]]
    single_delivers: list[int]


def http_request(key: str, body: bytes) -> bytes:
    """A POST /v1/check as a client writes it."""
    head = (
        "POST /v1/check HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def make_work(setup: Setup, secret: bytes) -> Work:
    """BATCHES batches of BATCH addresses and SINGLES single addresses."""
    rng = random.Random(SEED + 1)
    hasher = ConsumerHasher(secret)
    unknown_per_batch = int(BATCH * UNKNOWN_SHARE)

    def group(size: int, unknown: int) -> tuple[bytes, list[bytes], int]:
        addresses = rng.sample(setup.loaded, size - unknown) + rng.sample(setup.unknown, unknown)
        rng.shuffle(addresses)
        body = msgspec.json.encode({"sender": SENDER, "addresses": addresses})
        ids = [hasher.consumer_id(normalize(a, "CN")) for a in addresses]
        return http_request(setup.key, body), ids, size - unknown

    batches = [group(BATCH, unknown_per_batch) for _ in range(BATCHES)]
    singles = [group(1, int(rng.random() < UNKNOWN_SHARE)) for _ in range(SINGLES)]
    return Work(
        [b[0] for b in batches], [b[1] for b in batches], [b[2] for b in batches],
        [s[0] for s in singles], [s[1] for s in singles], [s[2] for s in singles],
    )  # fmt: skip


# ---- the client -------------------------------------------------------------------


class Result(msgspec.Struct):
    """What the client reads of one address's result."""

    decision: str | None


class Answer(msgspec.Struct):
    """What the client reads of a /v1/check answer."""

    results: list[Result]


_ANSWER = msgspec.json.Decoder(Answer)


class Connection:
    """One keep-alive HTTP/1.1 connection to the API, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        """Connect to 127.0.0.1:`port`."""
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def ask(self, request: bytes) -> int:
        """Send `request`; the number of `deliver` decisions in its 200 answer."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"answer {head.split(b' ', 2)[1]!r}: {body[:300]!r}")
        return sum(r.decision == "deliver" for r in _ANSWER.decode(body).results)

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


@dataclass
class Timing:
    """Latencies (ns) of completed calls, decisions made, seconds of loop time."""

    latencies: list[int] = field(default_factory=list)
    decisions: int = 0
    seconds: float = 0.0
    wrong: int = 0

    @property
    def decisions_per_s(self) -> float:
        """Decisions per second of loop time."""
        return self.decisions / self.seconds if self.seconds else 0.0

    @property
    def calls_per_s(self) -> float:
        """Calls per second of loop time."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def ms(self, share: float) -> float:
        """The latency at `share` (0..1), ms."""
        return _common.percentile(self.latencies, share, 1e6)


Call = Callable[[int, int], Awaitable[int]]
"""(worker, item) -> deliver decisions counted."""


@dataclass(frozen=True)
class Case:
    """One side of a figure: its call, how many items it cycles through, decisions per
    call, the calls in flight (or the pool of a paced run), deliveries expected per item."""

    name: str
    call: Call
    items: int
    size: int
    workers: int
    expected: Sequence[int]
    prepare: Callable[[int], Awaitable[None]]
    """Called with `workers` before each run (the API's side opens its connections)."""


async def closed_loop(case: Case, seconds: float, into: Timing | None) -> None:
    """`case.workers` loops, each making one call after another for `seconds`."""
    await case.prepare(case.workers)
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    timing = Timing() if into is None else into

    async def worker(number: int) -> None:
        item = number * (case.items // case.workers)
        while clock() < deadline:
            index = item % case.items
            before = clock()
            delivers = await case.call(number, index)
            timing.latencies.append(clock() - before)
            timing.decisions += case.size
            timing.wrong += delivers != case.expected[index]
            item += 1

    started = clock()
    await asyncio.gather(*(worker(n) for n in range(case.workers)))
    timing.seconds += (clock() - started) / 1e9


async def paced(case: Case, rate: float, seconds: float, into: Timing) -> float:
    """Calls due evenly at `rate`/s for `seconds`, each on a free one of `case.workers`
    (waiting for one if none is free); latency from the moment each call was due.
    Returns how late, at most, a call was sent after it was due (ms)."""
    await case.prepare(case.workers)
    clock = time.perf_counter_ns
    free: asyncio.Queue[int] = asyncio.Queue()
    for number in range(case.workers):
        free.put_nowait(number)
    interval = 1e9 / rate
    tasks = []
    worst_lag = 0
    started = clock()

    async def one(index: int, due: int) -> None:
        nonlocal worst_lag
        number = await free.get()
        worst_lag = max(worst_lag, clock() - due)
        try:
            delivers = await case.call(number, index)
        finally:
            free.put_nowait(number)
        into.latencies.append(clock() - due)
        into.decisions += case.size
        into.wrong += delivers != case.expected[index]

    for count in range(int(rate * seconds)):
        due = started + int(count * interval)
        wait = (due - clock()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(count % case.items, due)))
    await asyncio.gather(*tasks)
    into.seconds += (clock() - started) / 1e9
    return worst_lag / 1e6


# ---- the sides ----------------------------------------------------------------------


@dataclass
class Sides:
    """The API's connections and the storage layer's registry, as calls."""

    port: int
    registry: RedisRegistry
    work: Work
    connections: list[Connection] = field(default_factory=list)

    async def fresh(self, count: int) -> None:
        """`count` newly opened API connections (the API closes one idle for 10 s)."""
        for connection in self.connections:
            connection.close()
        self.connections = [await Connection.open(self.port) for _ in range(count)]

    async def api_batch(self, worker: int, index: int) -> int:
        """One batch through the API on the worker's connection."""
        return await self.connections[worker].ask(self.work.batch_requests[index])

    async def api_single(self, worker: int, index: int) -> int:
        """One address through the API on the worker's connection."""
        return await self.connections[worker].ask(self.work.single_requests[index])

    async def store_batch(self, worker: int, index: int) -> int:
        """The storage layer's lookup of one batch's ids; consented facts found."""
        facts = await self.registry.lookup(SENDER, self.work.batch_ids[index])
        return sum(1 for found in facts if found)

    async def store_single(self, worker: int, index: int) -> int:
        """The storage layer's lookup of one id."""
        facts = await self.registry.lookup(SENDER, self.work.single_ids[index])
        return sum(1 for found in facts if found)


async def nothing(workers: int) -> None:
    """The storage side's preparation: none (its client keeps its connections)."""


@dataclass
class Figures:
    """Every timing of the run, by name."""

    timings: dict[str, Timing] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def timing(self, name: str) -> Timing:
        """The timing `name` (made empty on first use)."""
        return self.timings.setdefault(name, Timing())


async def measure(sides: Sides, args: argparse.Namespace, pids: list[int], fig: Figures) -> None:
    """Figures 1-3, each side alternating in rounds after a warm-up."""
    work, c = sides.work, args.connections
    b_items, s_items = len(work.batch_requests), len(work.single_requests)
    batches = [
        Case("api", sides.api_batch, b_items, BATCH, c, work.batch_delivers, sides.fresh),
        Case("store", sides.store_batch, b_items, BATCH, c, work.batch_delivers, nothing),
    ]
    progress(f"1. batches of {BATCH:,}, {c} in flight, {args.seconds:g} s per side ...")
    for case in batches:
        await closed_loop(case, WARMUP_S, None)
    for _ in range(ROUNDS):
        for case in batches:
            cpu = _common.cpu_seconds(pids)
            await closed_loop(case, args.seconds / ROUNDS, fig.timing(case.name))
            used = _common.cpu_seconds(pids) - cpu
            fig.values[f"{case.name}_cpu"] = fig.values.get(f"{case.name}_cpu", 0.0) + used
    progress(
        f"  API {fig.timing('api').decisions_per_s:,.0f} decisions/s, "
        f"storage {fig.timing('store').decisions_per_s:,.0f}"
    )
    progress(f"2. single addresses, {SINGLE_CONNECTIONS} in flight ...")
    singles = [
        Case("api1", sides.api_single, s_items, 1, SINGLE_CONNECTIONS, work.single_delivers,
             sides.fresh),
        Case("store1", sides.store_single, s_items, 1, SINGLE_CONNECTIONS, work.single_delivers,
             nothing),
    ]  # fmt: skip
    for case in singles:
        await closed_loop(case, WARMUP_S, None)
    for _ in range(ROUNDS):
        for case in singles:
            cpu = _common.cpu_seconds(pids)
            await closed_loop(case, args.seconds / ROUNDS, fig.timing(case.name))
            used = _common.cpu_seconds(pids) - cpu
            fig.values[f"{case.name}_cpu"] = fig.values.get(f"{case.name}_cpu", 0.0) + used
    rate = fig.timing("api1").calls_per_s / 2
    fig.values["half_rate"] = rate
    progress(f"  API max {2 * rate:,.0f}/s; 3. paced at {rate:,.0f}/s ...")
    pools = [dataclasses.replace(s, name=f"{s.name}_paced", workers=PACED_POOL) for s in singles]
    watched = {"filterd": pids[0], "registry": pids[1], "client": os.getpid()}
    for _ in range(ROUNDS):
        for case in pools:
            before = {who: runqueue_seconds(pid) for who, pid in watched.items()}
            lag = await paced(case, rate, args.seconds / ROUNDS, fig.timing(case.name))
            fig.values[f"{case.name}_lag"] = max(fig.values.get(f"{case.name}_lag", 0.0), lag)
            for who, pid in watched.items():
                waited = runqueue_seconds(pid) - before[who]
                name = f"{case.name}_wait_{who}"
                fig.values[name] = fig.values.get(name, 0.0) + waited


async def run_sides(url: str, setup: Setup, work: Work, args: argparse.Namespace,
                    pids: list[int]) -> Figures:  # fmt: skip
    """Open the registry and the connections, measure, close."""
    registry = RedisRegistry.from_url(url)
    sides = Sides(setup.port, registry, work)
    fig = Figures()
    try:
        await measure(sides, args, pids, fig)
    finally:
        for connection in sides.connections:
            connection.close()
        await registry.close()
    return fig


# ---- the report ---------------------------------------------------------------------


def build_table(fig: Figures) -> _common.Table:
    """The figures table."""
    t, v = _common.Table(), fig.values
    api, store = fig.timing("api"), fig.timing("store")
    rate = api.decisions_per_s
    share = rate / store.decisions_per_s if store.decisions_per_s else 0.0
    t.add(
        f"1. `/v1/check` decisions/s, batches of {BATCH:,} (baseline: the ceiling, "
        "`RedisRegistry.lookup` of the same batches)",
        rate,
        store.decisions_per_s,
        f"≥ {TARGET_RATE:,.0f} {_common.mark(rate >= TARGET_RATE)}; "
        f"≥ {TARGET_SHARE}× {_common.mark(share >= TARGET_SHARE)}",
    )
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        t.add(f"1. Latency {label} of a batch, ms (baseline: the lookup)", api.ms(q),
              store.ms(q), "—", 2)  # fmt: skip
    t.add(
        "1. filterd + registry CPU per decision, µs (baseline: registry CPU per decision "
        "of the lookup)",
        1e6 * v["api_cpu"] / api.decisions if api.decisions else None,
        1e6 * v["store_cpu"] / store.decisions if store.decisions else None,
        "—",
        2,
    )
    single, single_store = fig.timing("api1"), fig.timing("store1")
    t.add(
        f"2. Single-address checks/s, {SINGLE_CONNECTIONS} in flight (baseline: "
        "the lookup of one id)",
        single.calls_per_s,
        single_store.calls_per_s,
    )
    t.add(
        "2. filterd + registry CPU per single check, µs (baseline: registry CPU per lookup)",
        1e6 * v["api1_cpu"] / len(single.latencies) if single.latencies else None,
        1e6 * v["store1_cpu"] / len(single_store.latencies) if single_store.latencies else None,
        "—",
        1,
    )
    paced_api, paced_store = fig.timing("api1_paced"), fig.timing("store1_paced")
    p99 = paced_api.ms(0.99)
    t.add(
        f"3. Single-address p99 at half load ({v['half_rate']:,.0f}/s, open loop), ms "
        "(baseline: the lookup, same pace)",
        p99,
        paced_store.ms(0.99),
        f"≤ {TARGET_P99_MS:g} {_common.mark(p99 <= TARGET_P99_MS)}",
        2,
    )
    t.add("3. Single-address p50 at half load, ms (baseline: the lookup)", paced_api.ms(0.5),
          paced_store.ms(0.5), "—", 2)  # fmt: skip
    return t


def wait_note(fig: Figures, case: str) -> str:
    """The run-queue waits of one side of figure 3, ms per second."""
    seconds = fig.timing(case).seconds
    return ", ".join(
        f"{who} {1e3 * fig.values[f'{case}_wait_{who}'] / seconds:.0f}"
        for who in ("filterd", "registry", "client")
        if seconds and f"{case}_wait_{who}" in fig.values
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--facts, --quick, --seconds, --connections, --server."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", type=int, help="consents loaded (default 1,000,000; --quick 100,000)")
    p.add_argument("--quick", action="store_true", help="100,000 facts, 2 s per side and figure")
    p.add_argument("--seconds", type=float, help="time per side and figure (default 6; --quick 2)")
    p.add_argument("--connections", type=int, default=2,
                   help="batches in flight in figure 1 (default 2)")  # fmt: skip
    p.add_argument("--server", help="server binary (default: the one the embedded registry picks)")
    args = p.parse_args(argv)
    if args.facts is None:
        args.facts = 100_000 if args.quick else 1_000_000
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 6.0
    if args.facts < 10 * BATCH:
        p.error(f"--facts must be at least {10 * BATCH}")
    if not 1 <= args.connections <= PACED_POOL:
        p.error(f"--connections must be 1-{PACED_POOL}")
    return args


def machine_facts(binary: ServerBinary) -> list[str]:
    """The report's header lines about the machine, the code and the server."""
    return [
        _common.machine_line(),
        _common.python_line(["aiohttp", "msgspec", "redis", "hiredis"]),
        f"- registry server: {_common.server_version(binary)} ({binary.path})",
        f"- code: {_common.code_version()}",
        _common.environment_line(),
        _common.loadavg_line("start"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Set up, load, serve, measure, print the report; clean up whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    _common.sigterm_as_interrupt()
    cleanup = _common.Cleanup()
    embedded: list[EmbeddedServer] = []

    def undo() -> None:
        for child in reversed(cleanup.children):  # filterd first: it stops using the registry
            _common.stop_child(child)
        for server in embedded:
            _common.release_embedded(server)
        cleanup.run()

    wall = time.monotonic()
    with _common.cleaning_up(undo):
        binary = find_binary(args.server)
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fda-", dir="/tmp"))
        progress(f"temp dir {cleanup.temp_dir}; {args.facts:,} numbers ...")
        setup = make_setup(cleanup.temp_dir, args.facts, args.server)
        server = EmbeddedServer(setup.data_dir, binary.path)
        url = server.acquire()
        embedded.append(server)
        progress(f"filterctl import of {args.facts:,} consents ...")
        import_s, said = load_facts(setup, cleanup)
        progress(f"  {args.facts / import_s:,.0f} rows/s; starting filterd serve ...")
        setup, filterd = start_filterd(setup, cleanup)
        work = make_work(setup, load_or_create(setup.temp_dir / "secret"))
        registry_pid = int((setup.data_dir / "registry.pid").read_text().strip())
        rewrites = settle_registry(url)
        gc.collect()
        gc.freeze()  # the numbers and the work: kept to the end, no use walking them
        pauses = Pauses()
        gc.callbacks.append(pauses)
        fig = asyncio.run(run_sides(url, setup, work, args, [filterd.pid, registry_pid]))
        gc.callbacks.remove(pauses)
        rewrites_during = registry_persistence(url)["aof_rewrites"] - int(rewrites.split()[0])
        wrong = {name: t.wrong for name, t in fig.timings.items() if t.wrong}
        command = _common.bench_command("bench/api.py", raw_argv)
        out = [
            *_common.report_head(
                "filterd API benchmark",
                command,
                [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
            ),
            "",
            build_table(fig).markdown(),
            "",
            "notes:",
            "- ratio = filterd ÷ baseline (rates: higher is better; latency, CPU: lower).",
            f"- facts loaded: {args.facts:,} consents by `filterctl import` in {import_s:.1f} s "
            f"({args.facts / import_s:,.0f} rows/s): `{said}`",
            f"- batches: {BATCHES} distinct, {BATCH:,} addresses each, "
            f"{UNKNOWN_SHARE:.0%} never loaded; {args.connections} in flight; "
            f"{args.seconds:g} s per side in {ROUNDS} rounds",
            f"- registry AOF rewrites: {rewrites}; {rewrites_during} while measuring",
            f"- this client's own collections over 1 ms while measuring: {pauses.count}, "
            f"longest {pauses.longest_ms:.1f} ms (its set-up heap frozen: gc.freeze)",
            f"- paced: latest send after its due time: API {fig.values['api1_paced_lag']:.2f} ms, "
            f"lookup {fig.values['store1_paced_lag']:.2f} ms (the client's own lag, in the figure)",
            "- figure 3, time each process was runnable but waited for a CPU (its main "
            "thread, /proc/PID/schedstat), ms per second of the figure: API side "
            + wait_note(fig, "api1_paced")
            + "; lookup side "
            + wait_note(fig, "store1_paced"),
            f"- CPU per decision counts filterd serve (pid {filterd.pid}) and the registry "
            f"server (pid {registry_pid}), not this client",
            f"- answers with a wrong number of deliveries: {wrong or 'none'}",
        ]
        print("\n".join(out), flush=True)
        return 1 if wrong else 0


if __name__ == "__main__":
    _common.run_main(main, "processes stopped and temp files removed")
