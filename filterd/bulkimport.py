"""`filterctl import` of a large file in several processes at once.

Parsing and checking rows (CSV, E.164 validation, HMAC) costs more Python time
than the registry spends storing them, so a large file is cut into byte
ranges at line ends and each range is imported by its own worker process with
its own registry connection; the main process adds up the counts and reports
the bad rows by file line number. A file with a double quote anywhere may have
fields spanning lines, so it is always read by one process.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from filterd import logs
from filterd.bootstrap import Runtime, build
from filterd.csvimport import BadRow, GoodRow, ImportSpec, read_rows
from filterd.model import Channel, Kind, WriteResult
from filterd.normalize import mask_text
from filterd.settings import Settings

PARALLEL_MIN_BYTES = 8 * 1024 * 1024
BATCH = 5000
REFUSAL_ON_RECORD = "refusal on record; a consent needs evidence"


@dataclass(frozen=True, slots=True)
class ImportJob:
    """Everything a worker needs to import its part (picklable)."""

    settings: Settings
    path: Path
    kind: Kind
    sender: str
    channel: Channel | None
    all_channels: bool
    source: str
    """Default source of the rows, and the source of the file's audit entry: any email
    address or phone number in it (a file name, --source) is masked at construction."""
    ttl_s: int | None
    now_ms: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", mask_text(self.source))  # frozen: set once


@dataclass(slots=True)
class Outcome:
    """Counts and bad rows of one part (or the whole file)."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"rows": 0, "stored": 0, "superseded": 0, "bad": 0}
    )
    bad: list[tuple[int, str]] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        """Fold another part's outcome into this one."""
        for key, value in other.counts.items():
            self.counts[key] += value
        self.bad.extend(other.bad)


def ranges(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """(start, end, first line) byte ranges cut at line ends; one range if the file
    is small, has a double quote, or `parts` is 1."""
    size = path.stat().st_size
    data = path.read_bytes() if parts > 1 else b""
    if parts <= 1 or b'"' in data:
        return [(0, size, 1)]
    cuts = [0]
    for index in range(1, parts):
        cut = data.find(b"\n", size * index // parts)
        if cut == -1 or cut + 1 <= cuts[-1]:
            continue
        cuts.append(cut + 1)
    cuts.append(size)
    out = []
    line = 1
    for start, end in itertools.pairwise(cuts):
        if end > start:
            out.append((start, end, line))
        line += data.count(b"\n", start, end)
    return out or [(0, size, 1)]


def default_workers(path: Path) -> int:
    """One worker per CPU for a large file, else 1."""
    if path.stat().st_size < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


_progress: Synchronized[int] | None = None


def init_worker(progress: Synchronized[int], log_level: str = "WARNING") -> None:
    """Worker process start: logs to stderr (stdout is the CLI's result), the row counter."""
    logs.configure(sys.stderr, log_level)
    global _progress  # noqa: PLW0603 - the worker's handle on the shared row counter
    _progress = progress


def import_range(job: ImportJob, start: int, end: int, first_line: int) -> Outcome:
    """Worker process: import bytes [start, end) of the file (first line `first_line`)."""
    runtime = build(job.settings)

    async def run() -> Outcome:
        try:
            return await _import_range(runtime, job, start, end, first_line)
        finally:
            await runtime.close()

    return asyncio.run(run())


async def _import_range(
    runtime: Runtime, job: ImportJob, start: int, end: int, first_line: int
) -> Outcome:
    with job.path.open("rb") as handle:
        handle.seek(start)
        text = handle.read(end - start).decode("utf-8-sig" if start == 0 else "utf-8")
    lines = text.splitlines(keepends=True)
    return await import_lines(runtime, job, lines, first_line, _count_in_worker)


async def import_lines(
    runtime: Runtime,
    job: ImportJob,
    lines: Iterable[str],
    first_line: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> Outcome:
    """Import rows, parsing the next batch while the registry stores the previous one."""
    spec = ImportSpec(
        kind=job.kind,
        sender=job.sender,
        channel=job.channel,
        all_channels=job.all_channels,
        source=job.source,
        default_region=job.settings.registry.default_region,
        ttl_s=job.ttl_s or runtime.service.request_ttl_s,
        now_ms=job.now_ms,
        consumer_id=runtime.service.hasher.consumer_id,
    )
    outcome = Outcome()
    pending: asyncio.Task[None] | None = None
    batch: list[GoodRow] = []
    for item in read_rows(lines, spec, first_line):
        outcome.counts["rows"] += 1
        if isinstance(item, BadRow):
            outcome.counts["bad"] += 1
            outcome.bad.append((item.line, item.reason))
            continue
        batch.append(item)
        if len(batch) >= BATCH:
            if pending is not None:
                await pending
            pending = asyncio.create_task(_store(runtime, batch, outcome, on_batch))
            await asyncio.sleep(0)  # let the write go out before parsing on
            batch = []
    if pending is not None:
        await pending
    await _store(runtime, batch, outcome, on_batch)
    return outcome


async def _store(
    runtime: Runtime,
    batch: list[GoodRow],
    outcome: Outcome,
    on_batch: Callable[[int], None] | None,
) -> None:
    if not batch:
        return
    results = await runtime.service.record_bulk([good.row for good in batch])
    for good, result in zip(batch, results, strict=True):
        if result is WriteResult.REFUSAL_ON_RECORD:
            outcome.counts["bad"] += 1
            outcome.bad.append((good.line, REFUSAL_ON_RECORD))
        else:
            outcome.counts[result.value] += 1
    if on_batch is not None:
        on_batch(len(batch))


def _count_in_worker(rows: int) -> None:
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += rows


def new_counter() -> Synchronized[int]:
    """A row counter shared with the worker processes (for the progress bar)."""
    return multiprocessing.get_context("spawn").Value("q", 0)
