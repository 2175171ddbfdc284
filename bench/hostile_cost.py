"""What each part of bench/hostile.py's hostile load costs `filterd serve` in CPU, per
connection, read from /proc (no latency: these figures depend far less on the
machine's other load than a p99 does).

Run from the repository root:

    .venv/bin/python bench/hostile_cost.py [--phase S] [--idle I] [--storm-workers W]
        [--storm-addresses A] [--storm-patience P]

One `filterd serve` set up as bench/hostile.py sets up its own (the same config, registry
server and peers child, in a temp dir removed at the end). This process, at nice 19,
then runs bench/hostile.py's load itself in phases of S seconds (default 10) and reads
filterd's CPU time (utime + stime) around each: (1) nothing; (2) I idle connections per
listener (default 200); (3) those and the storm against SMTP AUTH alone (W workers,
default 32, from A addresses, default 4, each guess dropped after P s, default 0.1);
(4) those and the storm against SMPP binds alone. Each storm runs 2 s before its phase
and is stopped after it. Printed per phase: filterd's cores, what the load did, the
bytes filterd logged; per storm: filterd's CPU per guess beyond the idle phase's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import _common
import hostile

from filterd.storage.embedded import find_binary

STORM_WARMUP_S = 2.0


async def measure(
    name: str, seconds: float, daemon: hostile.Daemon, stats: hostile.LoadStats
) -> tuple[float, Counter[str]]:
    """filterd's cores over `seconds`, and what the load counted meanwhile; one line."""
    pid = daemon.process.pid
    counts = Counter(stats.counts)
    logged = daemon.log.stat().st_size
    cpu, started = _common.cpu_seconds([pid]), time.monotonic()
    await asyncio.sleep(seconds)
    cores = (_common.cpu_seconds([pid]) - cpu) / (time.monotonic() - started)
    done = stats.counts - counts
    listed = ", ".join(f"{key} {value:,}" for key, value in sorted(done.items()))
    logged = daemon.log.stat().st_size - logged
    print(f"| {name} | {cores:.3f} | {listed or '—'} | {logged:,} |", flush=True)
    return cores, done


async def phases(args: argparse.Namespace, daemon: hostile.Daemon) -> list[str]:
    """The four phases; the per-guess lines."""
    stats = hostile.LoadStats()
    print("| phase | filterd cores | load's counts in the phase | bytes logged |")
    print("|---|---:|---|---:|", flush=True)
    await measure("nothing", args.phase, daemon, stats)
    holders = [
        asyncio.create_task(hostile.hold(name, daemon.ports[name], source, stats))
        for name in hostile.FRONT_ENDS
        for index in range(args.idle)
        for source in [f"127.0.0.{hostile.IDLE_FIRST + index // hostile.PER_ADDRESS}"]
    ]
    await asyncio.wait_for(stats.all_open(args.idle), 60)
    idle, _ = await measure(f"{args.idle} idle per listener", args.phase, daemon, stats)
    lines = []
    for proto in ("smtp", "smpp"):
        storm = hostile.LoadStats(counts=stats.counts)  # its own stop flag
        workers = [
            asyncio.create_task(
                hostile.storm(proto, daemon.ports[proto], source, args.storm_patience, storm)
            )
            for index in range(args.storm_workers)
            for source in [f"127.0.0.{hostile.STORM_FIRST + index % args.storm_addresses}"]
        ]
        await asyncio.sleep(STORM_WARMUP_S)
        cores, done = await measure(f"idle + storm on {proto}", args.phase, daemon, stats)
        guesses = done[f"storm-{proto} guesses"]
        per_guess = (cores - idle) * args.phase / guesses * 1e6 if guesses else float("nan")
        lines.append(
            f"- {proto}: {per_guess:,.0f} µs of filterd CPU per guess beyond the idle "
            f"phase ({guesses / args.phase:,.0f} guesses/s)"
        )
        storm.stopping = True
        for task in workers:
            task.cancel()
        await asyncio.wait(workers, timeout=10)
    stats.stopping = True
    for task in holders:
        task.cancel()
    await asyncio.wait(holders, timeout=10)
    return lines


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--phase, --idle, --storm-workers, --storm-addresses, --storm-patience."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--phase", type=float, default=10.0, help="seconds per phase (default 10)")
    p.add_argument("--idle", type=int, default=200, help="idle per listener (default 200)")
    p.add_argument("--storm-workers", type=int, default=32, help="per protocol (default 32)")
    p.add_argument("--storm-addresses", type=int, default=4, help="storm sources (default 4)")
    p.add_argument("--storm-patience", type=float, default=0.1, help="seconds (default 0.1)")
    args = p.parse_args(argv)
    if not 1 <= args.storm_addresses <= hostile.IDLE_FIRST - hostile.STORM_FIRST:
        p.error(f"--storm-addresses must be 1 to {hostile.IDLE_FIRST - hostile.STORM_FIRST}")
    if not 0 <= args.idle <= hostile.MAX_CONNECTIONS - args.storm_workers - 4:
        p.error("--idle + --storm-workers + 4 must stay within the cap of 1,000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start the daemon and its peers, run the phases, print the report, clean up."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    _common.sigterm_as_interrupt()
    cleanup = _common.Cleanup()
    with _common.cleaning_up(cleanup.run):
        binary = find_binary()
        print(f"# filterd CPU per hostile connection\n\ncommand: "
              f"`{_common.bench_command('bench/hostile_cost.py', raw_argv)}`\n")  # fmt: skip
        for line in hostile.machine_facts(binary):
            print(line)
        temp = Path(tempfile.mkdtemp(prefix="fdc-", dir="/tmp"))
        cleanup.temp_dir = temp
        url, _ = _common.start_registry(binary, temp / "r", cleanup)
        secret = _common.write_secret(temp / "secret")
        asyncio.run(hostile.load_consent(url, secret))
        peers = hostile.Peers(cleanup, temp)
        config = temp / "filterd.toml"
        hostile.write_config(config, url, peers.sink_port, peers.carrier_port)
        daemon = hostile.start_filterd(config, cleanup, temp / "filterd.log")
        os.setpriority(os.PRIO_PROCESS, 0, 19)  # the load is an attacker's: another machine's
        print()
        lines = asyncio.run(phases(args, daemon))
        print("", *lines, _common.loadavg_line("end"), sep="\n", flush=True)
        return 0


if __name__ == "__main__":
    _common.run_main(main, "processes stopped and temp files removed")
