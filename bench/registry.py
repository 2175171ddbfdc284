"""Registry benchmark: import rate, bytes per fact and lookup rate, each beside a baseline.

Run from the repository root:

    .venv/bin/python bench/registry.py [--facts N] [--quick] [--seconds S] [--server PATH]
                                       [--cluster | --cluster-only]

Everything runs against servers this script starts itself, in a temp dir under
/tmp, on unix sockets only (no TCP port; the system Redis is never touched).
Every server gets the config the embedded registry writes
(`filterd.storage.embedded.server_config`: AOF on, `appendfsync always`, the same
listpack limits), so filterd and the naive baselines pay the same durability.

Figures (see bench/README.md for what each one means):

1. Import, end to end: `filterctl import` of N E.164 numbers from a CSV, timed as
   a subprocess (rows/s), beside the naive layout (one string key per consumer,
   SET pipelined 1,000 at a time through redis-py) on a fresh server. Also the
   registry API alone (`RedisRegistry.record_many`, batches of 5,000) and a raw
   pipelined SET with no client library (the server's ceiling).
2. Bytes per fact: INFO used_memory after the import minus the empty server's,
   divided by N, beside one string key per consumer and one hash per consumer.
3. Decisions/s: `RedisRegistry.lookup` for 1 and 10 recipients per call for a
   fixed time, beside GET / MGET of the naive string keys with the same client.
4. With --cluster: the same record_many import, bytes per fact and lookups on a
   3-primary Redis Cluster (no replicas; ClusterRegistry), beside one node of the
   same server and config, both over TCP on 127.0.0.1 (cluster nodes need TCP).

The final table goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import phonenumbers
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from filterd.csvimport import GoodRow, ImportSpec, read_rows
from filterd.identity import ConsumerHasher
from filterd.model import Address, BulkRow, Channel, Fact, Kind, MessageClass, Submission
from filterd.policy import decide
from filterd.secret import load_or_create
from filterd.storage.cluster import ClusterRegistry
from filterd.storage.embedded import SOCKET_NAME, EmbeddedServer, ServerBinary, find_binary
from filterd.storage.records import Record, pack
from filterd.storage.redis import RedisRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' server helpers
from tests.helpers import ClusterSet, RedisProcess, free_port

SENDER = "acme"
SEED = 20240601
NAIVE_BATCH = 1_000
API_BATCH = 5_000
TARGET_BYTES_PER_FACT = 40.0
PARSE_SAMPLE = 200_000
SLOW_PARSE_SAMPLE = 20_000
LOOKUP_ROUNDS = 2
_IMPORTED = re.compile(r"imported (\d+) of (\d+) rows \(stored (\d+), .*?(\d+)\), (\d+) bad")


progress = _common.progress


# ---- servers ----------------------------------------------------------------------


@dataclass
class Server:
    """A private server in `directory`, configured exactly like the embedded registry."""

    binary: ServerBinary
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        """The server's unix socket."""
        return self.directory / SOCKET_NAME

    @property
    def url(self) -> str:
        """unix:// URL of the server."""
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 30.0) -> Server:
        """Write the embedded config, start the binary, wait for PING."""
        self.process = subprocess.Popen(
            _common.server_command(self.binary, self.directory),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
        )
        _common.wait_for_server(self.process, self.binary, self.directory, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; remove its data."""
        if self.process is not None:
            _common.stop_child(self.process, 30)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Cleanup:
    """Everything to undo at exit, undone in reverse order."""

    servers: list[Server] = field(default_factory=list)
    embedded: EmbeddedServer | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    temp_dir: Path | None = None

    def fresh_server(self, binary: ServerBinary, name: str) -> Server:
        """Start a new empty server in its own sub-directory of the temp dir."""
        if self.temp_dir is None:
            raise RuntimeError("no temp dir yet")
        server = Server(binary, self.temp_dir / name)
        self.servers.append(server)
        return server.start()

    def run(self) -> None:
        """Stop children and servers, remove the temp dir."""
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        for server in reversed(self.servers):
            server.stop()
        if self.embedded is not None:
            _common.release_embedded(self.embedded)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


# ---- data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """N distinct E.164 numbers, their consumer ids and the files that hold them."""

    numbers: list[str]
    ids: list[bytes]
    csv_path: Path
    config_path: Path
    data_dir: Path
    hasher: ConsumerHasher


def make_dataset(temp_dir: Path, count: int, server: str | None) -> Dataset:
    """Write the CSV, the config and the secret; compute every consumer id."""
    rng = random.Random(SEED)
    numbers = [f"+8613{n:09d}" for n in rng.sample(range(10**9), count)]
    csv_path = temp_dir / "numbers.csv"
    csv_path.write_text("\n".join(numbers) + "\n")
    data_dir = temp_dir / "e"
    secret_file = temp_dir / "secret"
    lines = [
        "[registry]",
        'url = "embedded"',
        f'data_dir = "{data_dir}"',
        f'secret_file = "{secret_file}"',
        'default_region = "CN"',
    ]
    if server is not None:
        lines.append(f'server = "{server}"')
    config_path = temp_dir / "filterd.toml"
    config_path.write_text("\n".join(lines) + "\n")
    hasher = ConsumerHasher(load_or_create(secret_file))
    ids = [hasher.consumer_id(Address(n, Channel.SMS)) for n in numbers]
    return Dataset(numbers, ids, csv_path, config_path, data_dir, hasher)


def consent_record(at_ms: int) -> bytes:
    """The 12 packed bytes filterd stores for one consent (used as the naive value too)."""
    return pack(Record(Kind.CONSENT, Channel.SMS, 1, at_ms, 1))


# ---- figure 1: import --------------------------------------------------------------


@dataclass(frozen=True)
class ImportRun:
    """One timed `filterctl import` subprocess."""

    command: list[str]
    seconds: float
    stored: int
    rows: int
    bad: int
    stdout: str


def run_filterctl_import(data: Dataset, cleanup: Cleanup) -> ImportRun:
    """Time `filterctl --config CFG import FILE --action consent --sender acme`."""
    filterctl = str(Path(sys.executable).parent / "filterctl")
    command = [
        filterctl,
        "--config",
        str(data.config_path),
        "import",
        str(data.csv_path),
        "--action",
        "consent",
        "--sender",
        SENDER,
    ]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cleanup.children.append(child)
    out, err = child.communicate()
    seconds = time.perf_counter() - started
    stdout = out.decode(errors="replace").strip()
    if child.returncode != 0:
        raise RuntimeError(f"filterctl import exited {child.returncode}: {err.decode()[-2000:]}")
    match = _IMPORTED.search(stdout)
    if match is None:
        raise RuntimeError(f"unexpected filterctl output: {stdout!r}")
    return ImportRun(
        command, seconds, int(match.group(3)), int(match.group(2)), int(match.group(5)), stdout
    )


def client_for(url: str) -> aioredis.Redis:
    """A redis.asyncio client with the options RedisRegistry.from_url gives its own."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        health_check_interval=30,
    )


async def used_memory(url: str, settle: float = 0.3) -> int:
    """INFO memory used_memory, after a short pause for background work to finish."""
    client = client_for(url)
    try:
        await asyncio.sleep(settle)
        info: dict[str, Any] = await client.info("memory")
        return int(info["used_memory"])
    finally:
        await client.aclose()


async def naive_write(url: str, ids: Sequence[bytes], record: bytes, *, hashes: bool) -> float:
    """Write one string key (SET) or one hash (HSET) per consumer, 1,000 per pipeline."""
    client = client_for(url)
    field_name = record[:4]
    try:
        started = time.perf_counter()
        for start in range(0, len(ids), NAIVE_BATCH):
            pipe = client.pipeline(transaction=False)
            for consumer in ids[start : start + NAIVE_BATCH]:
                if hashes:
                    pipe.hset(consumer, field_name, record)
                else:
                    pipe.set(consumer, record)
            replies = await pipe.execute()
            if not all(replies):
                raise RuntimeError("a naive write was not acknowledged")
        return time.perf_counter() - started
    finally:
        await client.aclose()


def raw_set(path: Path, ids: Sequence[bytes], record: bytes) -> float:
    """Pipelined SET over the bare unix socket, pre-encoded RESP, 1,000 per batch."""
    tail = b"\r\n$%d\r\n%s\r\n" % (len(record), record)
    batches = [
        b"".join(
            b"*3\r\n$3\r\nSET\r\n$%d\r\n%s%s" % (len(c), c, tail)
            for c in ids[start : start + NAIVE_BATCH]
        )
        for start in range(0, len(ids), NAIVE_BATCH)
    ]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        started = time.perf_counter()
        for number, batch in enumerate(batches):
            sock.sendall(batch)
            expected = 5 * min(NAIVE_BATCH, len(ids) - number * NAIVE_BATCH)
            reply = bytearray()
            while len(reply) < expected:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                reply += chunk
            if reply != b"+OK\r\n" * (expected // 5):
                raise RuntimeError(f"unexpected SET reply: {bytes(reply[:80])!r}")
        return time.perf_counter() - started


async def api_record_many(
    url: str, ids: Sequence[bytes], kind: type[RedisRegistry] = RedisRegistry, **options: Any
) -> float:
    """record_many (of RedisRegistry, or ClusterRegistry) over pre-built BulkRows,
    batches of 5,000."""
    now = int(time.time() * 1000)
    rows = [BulkRow(c, Kind.CONSENT, SENDER, Channel.SMS, now, "bench") for c in ids]
    registry = kind.from_url(url, **options)
    try:
        await registry.record_many(rows[:1])  # intern names, check durability: not timed
        started = time.perf_counter()
        for start in range(1, len(rows), API_BATCH):
            await registry.record_many(rows[start : start + API_BATCH])
        return time.perf_counter() - started
    finally:
        await registry.close()


def parse_rates(data: Dataset) -> tuple[float, float, int, int]:
    """Rows/s of filterd's CSV path (read_rows) and of the slow phonenumbers way."""
    sample = data.numbers[:PARSE_SAMPLE]
    spec = ImportSpec(
        Kind.CONSENT,
        SENDER,
        None,
        False,
        "bench",
        "CN",
        0,
        int(time.time() * 1000),
        data.hasher.consumer_id,
    )
    started = time.perf_counter()
    good = sum(isinstance(r, GoodRow) for r in read_rows(iter(sample), spec))
    fast = len(sample) / (time.perf_counter() - started)
    if good != len(sample):
        raise RuntimeError(f"read_rows rejected {len(sample) - good} generated numbers")
    slow_sample = data.numbers[:SLOW_PARSE_SAMPLE]
    started = time.perf_counter()
    for raw in slow_sample:
        number = phonenumbers.parse(raw, "CN")
        if not phonenumbers.is_valid_number(number):
            raise RuntimeError(f"{raw} is not valid")
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        hmac.new(b"k" * 32, e164.encode(), "sha256").digest()
    slow = len(slow_sample) / (time.perf_counter() - started)
    return fast, slow, len(sample), len(slow_sample)


# ---- figure 3: lookups -----------------------------------------------------------


@dataclass
class Timing:
    """Per-call latencies (ns) of a timed loop, summed over rounds."""

    latencies: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls_per_s(self) -> float:
        """Completed calls per second of loop time."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_us(self, share: float) -> float:
        """The latency at `share` (0..1) in µs."""
        return _common.percentile(self.latencies, share, 1000)


Call = Callable[[list[bytes]], Awaitable[object]]


async def timed_loop(call: Call, batches: list[list[bytes]], seconds: float, into: Timing) -> None:
    """Call sequentially until `seconds` have passed; record each call's latency."""
    latencies = into.latencies
    count = len(batches)
    index = 0
    clock = time.perf_counter_ns
    started = clock()
    deadline = started + int(seconds * 1e9)
    now = started
    while now < deadline:
        before = clock()
        await call(batches[index % count])
        now = clock()
        latencies.append(now - before)
        index += 1
    into.seconds += (now - started) / 1e9


async def side_by_side(
    ours: Call, theirs: Call, batches: list[list[bytes]], seconds: float
) -> tuple[Timing, Timing]:
    """A 0.2 s warm-up of each, then LOOKUP_ROUNDS alternating rounds of `seconds`
    in all per side (so machine noise falls on both alike)."""
    warm = Timing()
    await timed_loop(ours, batches, 0.2, warm)
    await timed_loop(theirs, batches, 0.2, warm)
    our_timing, their_timing = Timing(), Timing()
    for _ in range(LOOKUP_ROUNDS):
        await timed_loop(ours, batches, seconds / LOOKUP_ROUNDS, our_timing)
        await timed_loop(theirs, batches, seconds / LOOKUP_ROUNDS, their_timing)
    return our_timing, their_timing


def lookup_batches(ids: list[bytes], per_call: int) -> list[list[bytes]]:
    """Random recipients (at most 200,000 distinct), `per_call` per batch."""
    rng = random.Random(SEED + per_call)
    pool = rng.sample(ids, min(len(ids), 200_000))
    return [pool[i : i + per_call] for i in range(0, len(pool) - per_call + 1, per_call)]


async def lookups(
    filterd_url: str, naive_url: str, ids: list[bytes], per_call: int, seconds: float
) -> tuple[Timing, Timing, list[Fact]]:
    """filterd lookup vs naive GET/MGET, in alternating rounds of the same loop."""
    batches = lookup_batches(ids, per_call)
    registry = RedisRegistry.from_url(filterd_url)
    client = client_for(naive_url)

    async def ours(batch: list[bytes]) -> object:
        return await registry.lookup(SENDER, batch)

    async def naive_one(batch: list[bytes]) -> object:
        return await client.get(batch[0])

    async def naive_many(batch: list[bytes]) -> object:
        return await client.mget(batch)

    theirs = naive_one if per_call == 1 else naive_many
    try:
        facts = await registry.lookup(SENDER, batches[0])
        if not all(len(f) == 1 and f[0].kind is Kind.CONSENT for f in facts):
            raise RuntimeError(f"lookup did not find the imported consents: {facts!r}")
        naive = await theirs(batches[0])
        if naive is None or (isinstance(naive, list) and None in naive):
            raise RuntimeError("naive lookup did not find the written keys")
        filterd_timing, naive_timing = await side_by_side(ours, theirs, batches, seconds)
        return filterd_timing, naive_timing, facts[0]
    finally:
        await registry.close()
        await client.aclose()


async def cluster_lookups(
    cluster_url: str, single_url: str, ids: list[bytes], per_call: int, seconds: float
) -> tuple[Timing, Timing]:
    """ClusterRegistry vs RedisRegistry on one node over TCP, alternating rounds."""
    batches = lookup_batches(ids, per_call)
    cluster = ClusterRegistry.from_url(cluster_url, min_replicas=0)
    single = RedisRegistry.from_url(single_url)

    async def on_cluster(batch: list[bytes]) -> object:
        return await cluster.lookup(SENDER, batch)

    async def on_single(batch: list[bytes]) -> object:
        return await single.lookup(SENDER, batch)

    try:
        for side in (cluster, single):
            facts = await side.lookup(SENDER, batches[0])
            if not all(len(f) == 1 and f[0].kind is Kind.CONSENT for f in facts):
                raise RuntimeError(f"lookup did not find the imported consents: {facts!r}")
        return await side_by_side(on_cluster, on_single, batches, seconds)
    finally:
        await cluster.close()
        await single.close()


async def used_memory_sum(ports: Sequence[int]) -> int:
    """INFO used_memory summed over the servers on 127.0.0.1:`ports`."""
    total = 0
    for port in ports:
        total += await used_memory(f"redis://127.0.0.1:{port}")
    return total


def decide_cost_us(facts: list[Fact], loops: int) -> float:
    """CPU time of one filterd.policy.decide call for one recipient, in µs."""
    submission = Submission(SENDER, Channel.SMS, MessageClass.COMMERCIAL)
    now = int(time.time() * 1000)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(loops):
            decide(submission, facts, now)
        best = min(best, (time.perf_counter() - started) / loops)
    return best * 1e6


# ---- report ------------------------------------------------------------------------


def machine_facts(binary: ServerBinary) -> list[str]:
    """nproc, CPU, Python, libraries, server binary and version."""
    return [
        _common.machine_line(),
        _common.python_line(("redis", "hiredis", "filterd")),
        f"- server: {binary.path}",
        f"- server version: {_common.server_version(binary)}",
        _common.loadavg_line("start"),
    ]


# ---- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--facts, --quick, --seconds, --server."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", type=int, help="rows to import (default 1,000,000; --quick 100,000)")
    p.add_argument("--quick", action="store_true", help="100,000 facts, ~2 s per lookup loop")
    p.add_argument("--seconds", type=float, help="time per lookup loop (default 5; --quick 2)")
    p.add_argument("--server", help="server binary (default: the one the embedded registry picks)")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also: the same import and lookups on a 3-primary Redis Cluster vs one node (TCP)",
    )
    p.add_argument("--cluster-only", action="store_true", help="figure 4 alone (skips figures 1-3)")
    args = p.parse_args(argv)
    if args.facts is None:
        args.facts = 100_000 if args.quick else 1_000_000
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 5.0
    if args.facts < 1000:
        p.error("--facts must be at least 1000")
    return args


@dataclass
class Results:
    """Every measured figure, filled in phase by phase."""

    facts: int
    notes: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)


def phase_import(data: Dataset, binary: ServerBinary, cleanup: Cleanup, res: Results) -> str:
    """Figures 1 and 2 for filterd: filterctl import into the embedded server."""
    n = res.facts
    embedded = EmbeddedServer(data.data_dir, binary.path)
    started = time.perf_counter()
    url = embedded.acquire()
    cleanup.embedded = embedded
    res.values["embedded_start_ms"] = (time.perf_counter() - started) * 1000
    empty = asyncio.run(used_memory(url))
    progress(f"filterctl import of {n:,} rows ...")
    run = run_filterctl_import(data, cleanup)
    if run.stored != n or run.bad:
        raise RuntimeError(f"filterctl stored {run.stored} of {n} rows: {run.stdout}")
    res.values["import_e2e"] = n / run.seconds
    res.values["import_seconds"] = run.seconds
    res.values["bytes_filterd"] = (asyncio.run(used_memory(url)) - empty) / n
    res.notes.append(f"- filterctl command: `{shlex.join(run.command)}`")
    res.notes.append(f"- filterctl said: `{run.stdout}` in {run.seconds:.2f} s")
    progress(f"  {res.values['import_e2e']:,.0f} rows/s, {res.values['bytes_filterd']:.1f} B/fact")
    return url


def phase_baselines(data: Dataset, binary: ServerBinary, cleanup: Cleanup, res: Results) -> str:
    """Figures 1 and 2: record_many, naive SET/HSET, raw SET, each on a fresh server."""
    n = res.facts
    record = consent_record(int(time.time() * 1000))
    progress("registry API: record_many, batches of 5,000 ...")
    api = cleanup.fresh_server(binary, "api")
    empty = asyncio.run(used_memory(api.url))
    res.values["api"] = (n - 1) / asyncio.run(api_record_many(api.url, data.ids))
    res.values["bytes_api"] = (asyncio.run(used_memory(api.url)) - empty) / n
    api.stop()
    progress(f"  {res.values['api']:,.0f} facts/s, {res.values['bytes_api']:.1f} B/fact")

    progress("naive layout: SET per consumer via redis-py, 1,000 per pipeline ...")
    naive = cleanup.fresh_server(binary, "set")
    empty = asyncio.run(used_memory(naive.url))
    res.values["naive_set"] = n / asyncio.run(
        naive_write(naive.url, data.ids, record, hashes=False)
    )
    res.values["bytes_set"] = (asyncio.run(used_memory(naive.url)) - empty) / n
    progress(f"  {res.values['naive_set']:,.0f} rows/s, {res.values['bytes_set']:.1f} B/fact")

    progress("raw pipelined SET, no client library ...")
    raw = cleanup.fresh_server(binary, "raw")
    res.values["raw_set"] = n / raw_set(raw.socket_path, data.ids, record)
    raw.stop()
    progress(f"  {res.values['raw_set']:,.0f} rows/s")

    progress("naive layout: HSET, one hash per consumer ...")
    hashes = cleanup.fresh_server(binary, "hash")
    empty = asyncio.run(used_memory(hashes.url))
    res.values["naive_hset"] = n / asyncio.run(
        naive_write(hashes.url, data.ids, record, hashes=True)
    )
    res.values["bytes_hash"] = (asyncio.run(used_memory(hashes.url)) - empty) / n
    hashes.stop()
    progress(f"  {res.values['naive_hset']:,.0f} rows/s, {res.values['bytes_hash']:.1f} B/fact")
    return naive.url


def phase_lookups(
    filterd_url: str, naive_url: str, data: Dataset, seconds: float, res: Results
) -> None:
    """Figure 3: lookups for 1 and 10 recipients per call, and decide()'s CPU cost."""
    facts: list[Fact] = []
    for per_call in (1, 10):
        progress(f"lookups, {per_call} recipient(s) per call, {seconds:g} s each side ...")
        ours, theirs, facts = asyncio.run(
            lookups(filterd_url, naive_url, data.ids, per_call, seconds)
        )
        for name, timing in (("f", ours), ("n", theirs)):
            key = f"{name}{per_call}"
            res.values[f"{key}_calls"] = timing.calls_per_s
            res.values[f"{key}_p50"] = timing.percentile_us(0.50)
            res.values[f"{key}_p99"] = timing.percentile_us(0.99)
        progress(
            f"  filterd {ours.calls_per_s:,.0f} calls/s, naive {theirs.calls_per_s:,.0f} calls/s"
        )
    progress("decide() CPU cost ...")
    res.values["decide_us"] = decide_cost_us(facts, 100_000)


def phase_parse(data: Dataset, res: Results) -> None:
    """Diagnostic: filterd's CSV path alone vs phonenumbers parse/validate/format."""
    progress("CSV parse + normalise + HMAC, no Redis ...")
    fast, slow, fast_n, slow_n = parse_rates(data)
    res.values["parse_fast"], res.values["parse_slow"] = fast, slow
    res.notes.append(
        f"- parse rows: read_rows over the first {fast_n:,} numbers; "
        f"phonenumbers over the first {slow_n:,}"
    )


LISTPACK = ["--hash-max-listpack-entries", "1024", "--hash-max-listpack-value", "512"]


def phase_cluster(data: Dataset, binary: ServerBinary, seconds: float, res: Results) -> None:
    """Figure 4: record_many and lookups on a 3-primary Cluster (no replicas) vs one
    node, both over TCP loopback with the same server config."""
    temp = Path(tempfile.mkdtemp(prefix="fdc-", dir="/tmp"))
    port = free_port()
    durable = ["--appendonly", "yes", "--appendfsync", "always", *LISTPACK]
    tcp = ["--port", str(port), "--bind", "127.0.0.1", *durable]
    single = RedisProcess(binary.path, temp / "single", tcp)
    cluster = ClusterSet(binary.path, temp / "cluster", primaries=3, replicas=0)
    try:
        single.start()
        progress("cluster: starting 3 primaries ...")
        cluster.start(extra=LISTPACK)
        primaries = cluster.primary_ports()
        single_url = f"redis://127.0.0.1:{port}"
        for name, url, ports, kind in (
            ("c", cluster.url, primaries, ClusterRegistry),
            ("s", single_url, [port], RedisRegistry),
        ):
            progress(f"{'cluster' if name == 'c' else 'one node'}: record_many ...")
            empty = asyncio.run(used_memory_sum(ports))
            options = {"min_replicas": 0} if kind is ClusterRegistry else {}
            elapsed = asyncio.run(api_record_many(url, data.ids, kind, **options))
            res.values[f"{name}_import"] = (res.facts - 1) / elapsed
            res.values[f"{name}_bytes"] = (asyncio.run(used_memory_sum(ports)) - empty) / res.facts
            progress(f"  {res.values[f'{name}_import']:,.0f} facts/s")
        for per_call in (1, 10):
            progress(f"cluster vs one node: lookups, {per_call} per call ...")
            ours, theirs = asyncio.run(
                cluster_lookups(cluster.url, single_url, data.ids, per_call, seconds)
            )
            for name, timing in (("c", ours), ("s", theirs)):
                res.values[f"{name}{per_call}_calls"] = timing.calls_per_s
                res.values[f"{name}{per_call}_p99"] = timing.percentile_us(0.99)
    finally:
        cluster.stop()
        single.stop()
        shutil.rmtree(temp, ignore_errors=True)


def cluster_rows(t: _common.Table, v: dict[str, float], n: str) -> None:
    """Figure 4's rows (only with --cluster)."""
    t.add(
        f"4. Cluster (3 primaries): `record_many` of {n}, facts/s (baseline: one node, TCP)",
        v["c_import"],
        v["s_import"],
    )
    t.add("4. Cluster: bytes/fact, all primaries (baseline: one node)", v["c_bytes"],
          v["s_bytes"], "—", 1)  # fmt: skip
    for per_call in (1, 10):
        t.add(
            f"4. Cluster: decisions/s, {per_call} recipient(s)/call, one client "
            "(baseline: one node, TCP)",
            per_call * v[f"c{per_call}_calls"],
            per_call * v[f"s{per_call}_calls"],
        )
        t.add(
            f"4. Cluster: latency p99, {per_call} recipient(s)/call, µs (baseline: one node)",
            v[f"c{per_call}_p99"],
            v[f"s{per_call}_p99"],
            "—",
            1,
        )


def single_node_table(res: Results) -> _common.Table:
    """Figures 1-3 (and 4 when measured) from the measured values."""
    v = res.values
    t = _common.Table()
    n = f"{res.facts:,}"
    t.add(
        f"1. Import end to end: `filterctl import`, {n} rows, rows/s "
        "(baseline: naive SET via redis-py, 1,000/pipeline)",
        v["import_e2e"],
        v["naive_set"],
    )
    t.add(
        "1. Registry API alone: `record_many`, 5,000/batch, facts/s "
        "(baseline: naive SET via redis-py)",
        v["api"],
        v["naive_set"],
    )
    t.add(
        "1. Client cost: naive SET via redis-py, rows/s "
        "(baseline: raw pipelined SET, pre-encoded RESP, no client)",
        v["naive_set"],
        v["raw_set"],
    )
    t.add(
        "1. Diagnostic: CSV parse + normalise + HMAC only (`read_rows`), rows/s "
        "(baseline: phonenumbers parse/validate/format + HMAC)",
        v["parse_fast"],
        v["parse_slow"],
    )
    ok = "✔" if v["bytes_filterd"] <= TARGET_BYTES_PER_FACT else "✘"
    target = f"≤ {TARGET_BYTES_PER_FACT:.0f} {ok}"
    t.add(
        f"2. Bytes/fact after import of {n} (baseline a: one string key per consumer, SET)",
        v["bytes_filterd"],
        v["bytes_set"],
        target,
        1,
    )
    t.add(
        f"2. Bytes/fact after import of {n} (baseline b: one hash per consumer, HSET)",
        v["bytes_filterd"],
        v["bytes_hash"],
        target,
        1,
    )
    for scale, name in ((100e6, "100M"), (250e6, "250M")):
        gb = v["bytes_filterd"] * scale / 1e9
        ok = "" if scale < 250e6 else (" ✔" if gb <= 10 else " ✘")
        t.add(
            f"2. Memory for {name} consumers, GB, extrapolated: bytes/fact at {n} × {name} "
            "(baseline a: one string key per consumer)",
            gb,
            v["bytes_set"] * scale / 1e9,
            "≤ 10" + ok if scale == 250e6 else "—",
            1,
        )
    t.add(
        "3. Lookups/s = decisions/s, 1 recipient/call (baseline: GET)", v["f1_calls"], v["n1_calls"]
    )
    t.add("3. Latency p50, 1 recipient/call, µs (baseline: GET)", v["f1_p50"], v["n1_p50"], "—", 1)
    t.add("3. Latency p99, 1 recipient/call, µs (baseline: GET)", v["f1_p99"], v["n1_p99"], "—", 1)
    t.add("3. Lookups/s, 10 recipients/call (baseline: MGET of 10)", v["f10_calls"], v["n10_calls"])
    t.add(
        "3. Decisions/s (recipients/s), 10 recipients/call (baseline: MGET of 10)",
        10 * v["f10_calls"],
        10 * v["n10_calls"],
    )
    t.add(
        "3. Latency p50, 10 recipients/call, µs (baseline: MGET)",
        v["f10_p50"],
        v["n10_p50"],
        "—",
        1,
    )
    t.add(
        "3. Latency p99, 10 recipients/call, µs (baseline: MGET)",
        v["f10_p99"],
        v["n10_p99"],
        "—",
        1,
    )
    per_recipient = 1e6 / (10 * v["f10_calls"])
    t.add(
        "3. `decide()` CPU per recipient, µs (baseline: whole per-recipient cost of a "
        "10-recipient lookup)",
        v["decide_us"],
        per_recipient,
        "—",
        2,
    )
    if "c_import" in v:
        cluster_rows(t, v, n)
    return t


def build_table(res: Results) -> _common.Table:
    """The final table: figures 1-3 when measured, figure 4 when measured."""
    if "import_e2e" in res.values:
        return single_node_table(res)
    t = _common.Table()
    cluster_rows(t, res.values, f"{res.facts:,}")
    return t


def single_node_notes(res: Results) -> list[str]:
    """The notes of figures 1-3."""
    v = res.values
    return [
        f"- embedded server start-up (not in the import time): {v['embedded_start_ms']:.0f} ms",
        f"- bytes/fact after record_many on a fresh server (check): {v['bytes_api']:.1f}",
        f"- naive HSET import rate: {v['naive_hset']:,.0f} rows/s",
        f"- redis-py cost per pipelined SET: {1e6 / v['naive_set'] - 1e6 / v['raw_set']:.2f} µs",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every phase, print the report on stdout, clean up whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    _common.sigterm_as_interrupt()
    cleanup = Cleanup()
    wall = time.monotonic()
    with _common.cleaning_up(cleanup.run):
        binary = find_binary(args.server)
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fdb-", dir="/tmp"))
        progress(f"temp dir {cleanup.temp_dir}; generating {args.facts:,} numbers ...")
        data = make_dataset(cleanup.temp_dir, args.facts, args.server)
        res = Results(args.facts)
        if not args.cluster_only:
            filterd_url = phase_import(data, binary, cleanup, res)
            naive_url = phase_baselines(data, binary, cleanup, res)
            phase_lookups(filterd_url, naive_url, data, args.seconds, res)
            phase_parse(data, res)
        if args.cluster or args.cluster_only:
            phase_cluster(data, binary, args.seconds, res)
        table = build_table(res)
        command = _common.bench_command("bench/registry.py", raw_argv)
        out = [
            *_common.report_head(
                "filterd registry benchmark",
                command,
                [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
            ),
            "",
            table.markdown(),
            "",
            "notes:",
            "- ratio = filterd ÷ baseline (rates: higher is better; bytes and latency: lower).",
            "- every server: the embedded registry's config (AOF on, appendfsync always); "
            "filterd's writes also send WAITAOF when the server has it.",
            *([] if args.cluster_only else single_node_notes(res)),
            *res.notes,
        ]
        print("\n".join(out), flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "servers stopped and temp files removed")
