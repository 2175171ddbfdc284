"""Drop and deferral entries, written to the registry's audit log in the background,
in batches (see AuditBuffer)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence

from filterd.errors import RegistryUnavailable
from filterd.logs import get_logger
from filterd.model import AuditEntry
from filterd.storage.port import Audit

log = get_logger("service")
_CLOSE_WAIT_S = 5.0


class AuditBuffer:
    """Drop and deferral entries, written to the audit log in the background.

    A decision is answered without waiting for its audit entry (one registry
    round trip per decision point); entries are written in batches, one durable
    pipeline each, at most one batch every `linger_s` (50 ms): the first entry
    after a quiet spell is written at once, later ones gather until the 50 ms
    since the last batch are up (or `BATCH` entries wait), so that a busy server
    pays one write and one fsync per batch, not per drop. While the registry is
    down (the very time deferrals happen) they wait and are written once it is
    back; beyond `limit` queued entries the oldest are dropped, with a log line.
    `flush` and `close` write at once. Facts written one by one are audited
    synchronously instead (Service.record).
    """

    BATCH = 500
    """Entries per pipeline at most; this many waiting end the linger at once."""

    def __init__(
        self,
        registry: Audit,
        limit: int = 100_000,
        retry_s: float = 1.0,
        linger_s: float = 0.05,
    ) -> None:
        self._registry = registry
        self._limit = limit
        self._retry_s = retry_s
        self._linger_s = linger_s
        self._pending: list[AuditEntry] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._hurried = False
        """End the linger at once: a full batch waits, or a flush asks."""
        self._wake: asyncio.Future[None] | None = None
        self._last = -math.inf
        """Loop time when the last batch was taken."""

    def add(self, entries: Sequence[AuditEntry]) -> None:
        """Queue entries; start the writer if it is not running."""
        self._pending.extend(entries)
        overflow = len(self._pending) - self._limit
        if overflow > 0:
            del self._pending[:overflow]
            log.error("audit_entries_lost", entries=overflow, reason="queue full")
        if len(self._pending) >= self.BATCH:
            self._hurry()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    def _hurry(self) -> None:
        """End the linger now (or skip the next one)."""
        self._hurried = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _linger(self) -> None:
        """Let entries gather until linger_s after the last batch (not when hurried)."""
        loop = asyncio.get_running_loop()
        wait = self._last + self._linger_s - loop.time()
        if not self._hurried and wait > 0:
            self._wake = wake = loop.create_future()
            timer = loop.call_later(wait, _settle, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None
        self._hurried = False
        self._last = loop.time()

    async def _write(self) -> None:
        await self._linger()
        while self._pending:
            # take the batch out first: add() may trim the queue while it is written
            batch = self._pending[: self.BATCH]
            self._pending = self._pending[self.BATCH :]
            try:
                try:
                    await self._registry.append_audit(batch)
                except RegistryUnavailable:
                    raise
                except Exception:  # an entry the registry cannot take: not the others
                    log.exception("audit_batch_failed", entries=len(batch))
                    await self._write_alone(batch)
            except RegistryUnavailable as exc:
                self._pending[:0] = batch
                log.warning("audit_delayed", error=str(exc), entries=len(self._pending))
                if self._closing:
                    return
                await asyncio.sleep(self._retry_s)
            if self._pending and len(self._pending) < self.BATCH and not self._closing:
                await self._linger()  # what came in while this batch was written

    async def _write_alone(self, batch: list[AuditEntry]) -> None:
        """Write each entry of a failed batch by itself; those that still fail are lost
        (logged); RegistryUnavailable leaves the unwritten rest in `batch`."""
        lost = 0
        while batch:
            try:
                await self._registry.append_audit(batch[:1])
            except RegistryUnavailable:
                raise
            except Exception:
                lost += 1
            del batch[0]
        if lost:
            log.error("audit_entries_lost", entries=lost, reason="not writable")

    async def flush(self) -> None:
        """Wait until everything queued so far is written (no lingering)."""
        while self._task is not None and not self._task.done():
            self._hurry()
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Write what is queued, for at most 5 seconds; log what is left."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), _CLOSE_WAIT_S)
        if self._pending:
            log.error("audit_entries_lost", entries=len(self._pending), reason="shutdown")


def _settle(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless it already is."""
    if not future.done():
        future.set_result(None)
