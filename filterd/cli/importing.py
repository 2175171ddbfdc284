"""filterctl import: a CSV file of facts, good rows written, bad rows reported by
line number; a large file imported by several processes, with a progress line."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from filterd.bootstrap import Runtime
from filterd.bulkimport import (
    ImportJob,
    Outcome,
    default_workers,
    import_lines,
    import_range,
    init_worker,
    new_counter,
    ranges,
)
from filterd.cli.exits import EXIT_OK, EXIT_USAGE
from filterd.errors import UsageError
from filterd.model import ALL_SENDERS, AuditEntry, Channel, Kind
from filterd.units import parse_duration

if TYPE_CHECKING:
    from filterd.cli.commands import Invocation


async def import_file(self: Invocation, runtime: Runtime) -> int:
    """filterctl import: good rows are written, bad rows reported as `line N: reason`.

    A large file without quoted fields is imported by several processes
    (`--jobs`, default one per CPU above 8 MB).
    """
    a = self.args
    path = Path(a.file)
    kind = {"consent": Kind.CONSENT, "request": Kind.REQUEST, "refuse": Kind.REFUSAL}[a.action]
    job = ImportJob(
        settings=self.settings,
        path=path,
        kind=kind,
        sender=ALL_SENDERS if a.all_senders else a.sender,
        channel=Channel(a.channel) if a.channel and a.channel != "all" else None,
        all_channels=a.channel == "all",
        source=a.source or f"import:{path.name}",
        ttl_s=parse_duration(a.ttl) if a.ttl else None,
        now_ms=runtime.service.now_ms(),
    )
    # One-shot CLI: nothing else runs on this loop, so plain file reads are fine.
    try:
        parts = ranges(path, a.jobs or default_workers(path))
    except OSError as exc:
        raise UsageError(f"{a.file!r}: {exc.strerror}") from None
    progress = Progress(self.err)
    if len(parts) == 1:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
            outcome = await import_lines(runtime, job, handle, 1, progress.add)
    else:
        outcome = await _import_parallel(job, parts, progress, self.log_level)
    progress.finish()
    for line, reason in sorted(outcome.bad):
        self.err.write(f"line {line}: {reason}\n")
    counts = outcome.counts
    await runtime.registry.append_audit(
        [
            AuditEntry(
                at_ms=runtime.service.now_ms(),
                event="import",
                sender=job.sender,
                channel="all" if job.all_channels else (a.channel or "by-address"),
                source=job.source,
                origin="cli",
                detail=f"{kind.value}: " + ", ".join(f"{k}={v}" for k, v in counts.items()),
            )
        ]
    )
    self.emit(
        {"file": str(path), "action": a.action, "processes": len(parts), **counts},
        f"imported {counts['stored'] + counts['superseded']} of {counts['rows']} rows "
        f"(stored {counts['stored']}, older than the registry's {counts['superseded']}), "
        f"{counts['bad']} bad",
    )
    return EXIT_USAGE if counts["bad"] else EXIT_OK


async def _import_parallel(
    job: ImportJob, parts: list[tuple[int, int, int]], progress: Progress, log_level: str
) -> Outcome:
    """Import the file's parts in a process each (logging at `log_level`), showing
    progress; the outcomes added up."""
    counter = new_counter()
    context = multiprocessing.get_context("spawn")
    outcome = Outcome()
    with ProcessPoolExecutor(
        len(parts),
        mp_context=context,
        initializer=init_worker,
        initargs=(counter, log_level),
    ) as pool:
        futures = [
            asyncio.wrap_future(pool.submit(import_range, job, start, end, first))
            for start, end, first in parts
        ]
        pending: set[asyncio.Future[Outcome]] = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            progress.show(counter.value)
        for future in futures:
            outcome.add(future.result())
    return outcome


def validate_import(a: argparse.Namespace) -> None:
    """The import options, checked before the registry is touched."""
    if a.action != "refuse" and a.all_senders:
        raise UsageError(f"--action {a.action} needs --sender (consent is per sender)")
    if a.ttl is not None and a.action != "request":
        raise UsageError("--ttl goes with --action request")
    if a.jobs is not None and not 1 <= a.jobs <= 64:
        raise UsageError(f"--jobs: {a.jobs} is outside 1-64")
    if not Path(a.file).is_file():
        raise UsageError(f"{a.file!r}: no such file")


class Progress:
    """A one-line progress display on stderr (rows and rows/s), only on a terminal."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.enabled = err.isatty()
        self.started = time.monotonic()
        self.rows = 0
        self.shown = 0.0

    def add(self, rows: int) -> None:
        """Count stored rows (single-process import)."""
        self.show(self.rows + rows)

    def show(self, rows: int) -> None:
        """Redraw with the rows stored so far (at most 4 times a second)."""
        self.rows = rows
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.25:
            return
        self.shown = now
        rate = rows / max(now - self.started, 1e-6)
        self.err.write(f"\rimported {rows:,} rows, {rate:,.0f} rows/s")
        self.err.flush()

    def finish(self) -> None:
        """End the line."""
        if self.enabled:
            self.shown = 0.0
            self.show(self.rows)
            self.err.write("\n")
