"""Screening recipients and recording facts: the use cases every edge calls.

One registry lookup per decision point, `decide()` per recipient, one log line
per decision (sender, masked recipient, decision, reason), and an audit entry
for every drop and deferral and for every fact written one by one.

Every fact is written through here (one by one, by consumer id, or in bulk), so
this is where the free text stored with it, source and evidence, has every
email address and phone number in it masked (SPEC §11), whoever built it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filterd.errors import RegistryUnavailable
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.logs import get_logger
from filterd.metrics import Metrics
from filterd.model import (
    Action,
    Address,
    AuditEntry,
    BulkRow,
    Decision,
    Fact,
    FactRequest,
    Kind,
    MessageClass,
    Submission,
    WriteResult,
)
from filterd.normalize import mask, mask_text, scrub
from filterd.policy import FailMode, decide
from filterd.storage.port import Registry

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
        registry: Registry,
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


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What is left of a message upgraded to commercial."""

    keep: tuple[int, ...]
    """The recipients (by position) that may still be sent to."""
    deferred: bool
    """Some recipient could not be judged (registry unavailable): the whole message
    must be deferred, never sent in part."""


class Service:
    """The registry use cases, shared by the CLI and every front end."""

    def __init__(
        self,
        registry: Registry,
        hasher: ConsumerHasher,
        *,
        request_ttl_s: int,
        fail_mode: FailMode = FailMode.CLOSED,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.hasher = hasher
        self.request_ttl_s = request_ttl_s
        self.fail_mode = fail_mode
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._audit = AuditBuffer(registry)

    def now_ms(self) -> int:
        """The current time in ms."""
        return int(self._clock() * 1000)

    async def screen(
        self,
        sender: str,
        message_class: MessageClass,
        addresses: Sequence[Address],
        *,
        origin: str,
        message_id: str | None = None,
    ) -> list[Decision]:
        """Decide every recipient of one message with one registry read; each decision
        is logged and counted, each drop and deferral audited."""
        ids = [self.hasher.consumer_id(a) for a in addresses]
        now = self.now_ms()
        decisions = await self._judge(sender, message_class, addresses, ids, now=now, origin=origin)
        count, info = self.metrics.decision, log.info  # once per recipient: looked up once
        audit = []
        for index, (address, decision) in enumerate(zip(addresses, decisions, strict=True)):
            action = decision.action.value
            reason = decision.reason.value if decision.reason else None
            count(origin, action, reason)
            info(
                "decision",
                origin=origin,
                sender=sender,
                recipient=mask(address.canonical),
                decision=action,
                reason=reason,
                message_id=message_id,
            )
            if decision.action is not Action.DELIVER:
                audit.append(
                    AuditEntry(
                        at_ms=now,
                        event=action,
                        sender=sender,
                        consumer=consumer_hex(ids[index]),
                        channel=address.channel.value,
                        reason=reason,
                        origin=origin,
                        message_id=message_id,
                    )
                )
        if audit:
            self._audit.add(audit)
        return decisions

    async def judge(
        self, sender: str, message_class: MessageClass, addresses: Sequence[Address]
    ) -> list[Decision]:
        """The decisions `screen` would make, by the same path (one registry read), for a
        question rather than a message (`filterctl check`): nothing logged per
        recipient, counted or audited."""
        ids = [self.hasher.consumer_id(a) for a in addresses]
        now = self.now_ms()
        return await self._judge(sender, message_class, addresses, ids, now=now, origin="check")

    async def _judge(
        self,
        sender: str,
        message_class: MessageClass,
        addresses: Sequence[Address],
        ids: Sequence[bytes],
        *,
        now: int,
        origin: str,
    ) -> list[Decision]:
        """One registry read (commercial only), then `decide()` per recipient; an
        unreadable registry is decide()'s input like any other."""
        facts: list[list[Fact]] | None = None
        if message_class is MessageClass.COMMERCIAL:
            started = time.perf_counter()
            try:
                facts = await self.registry.lookup(sender, list(ids))
            except RegistryUnavailable as exc:
                self.metrics.registry_error("lookup")
                log.warning("registry_unavailable", error=str(exc), origin=origin)
            else:
                self.metrics.registry_latency("lookup", time.perf_counter() - started)
        return [
            decide(
                Submission(sender, address.channel, message_class),
                facts[index] if facts is not None else None,
                now,
                self.fail_mode,
            )
            for index, address in enumerate(addresses)
        ]

    async def upgrade(
        self,
        sender: str,
        addresses: Sequence[Address],
        signals: Sequence[str],
        *,
        origin: str,
        message_id: str | None = None,
    ) -> Upgrade:
        """The upgrade rule: a transactional message that carries commercial `signals`
        is commercial (signals upgrade, never downgrade), so every recipient is judged
        as such (one registry read, each drop audited); what the edge may still send."""
        decisions = await self.screen(
            sender, MessageClass.COMMERCIAL, addresses, origin=origin, message_id=message_id
        )
        log.info("upgraded_to_commercial", sender=sender, signals=list(signals),
                 message_id=message_id, origin=origin)  # fmt: skip
        return Upgrade(
            keep=tuple(i for i, d in enumerate(decisions) if d.action is Action.DELIVER),
            deferred=any(d.action is Action.DEFER for d in decisions),
        )

    async def flush_audit(self) -> None:
        """Return once every queued drop/deferral entry is in the audit log."""
        await self._audit.flush()

    async def close(self) -> None:
        """Write what is queued for the audit log (bounded wait)."""
        await self._audit.close()

    def build_fact(self, request: FactRequest, now_ms: int | None = None) -> Fact:
        """The Fact a request stands for: time, expiry, scrubbed evidence."""
        at_ms = request.at_ms if request.at_ms is not None else (now_ms or self.now_ms())
        expires = None
        if request.kind is Kind.REQUEST:
            expires = at_ms + 1000 * (request.ttl_s or self.request_ttl_s)
        return Fact(
            kind=request.kind,
            sender=request.sender,
            channel=request.channel,
            at_ms=at_ms,
            source=scrub(request.source, request.address) or "unknown",
            evidence=scrub(request.evidence, request.address),
            message_id=request.message_id,
            expires_ms=expires,
        )

    async def record(self, request: FactRequest, *, origin: str) -> WriteResult:
        """Write one fact durably with its audit entry; log it."""
        fact = self.build_fact(request)
        consumer = self.hasher.consumer_id(request.address)
        return await self._write(consumer, fact, origin, mask(request.address.canonical))

    async def record_consumer(self, consumer: bytes, fact: Fact, *, origin: str) -> WriteResult:
        """Write a fact for a consumer known only by its id (a signed unsubscribe token).

        The caller builds the fact; addresses in its source and evidence are masked.
        """
        return await self._write(consumer, fact, origin, "consumer:" + consumer_hex(consumer))

    async def _write(self, consumer: bytes, fact: Fact, origin: str, shown: str) -> WriteResult:
        fact = private_fact(fact)
        entry = AuditEntry(
            at_ms=fact.at_ms,
            event=fact.kind.value,
            sender=fact.sender,
            consumer=consumer_hex(consumer),
            channel=fact.channel.value if fact.channel else "all",
            source=fact.source,
            origin=origin,
            message_id=fact.message_id,
        )
        started = time.perf_counter()
        try:
            result = await self.registry.record(consumer, fact, audit=entry)
        except RegistryUnavailable:
            self.metrics.registry_error("record")
            raise
        self.metrics.registry_latency("record", time.perf_counter() - started)
        if fact.kind is Kind.REFUSAL:
            self.metrics.optout(origin)
        log.info(
            "fact",
            origin=origin,
            kind=fact.kind.value,
            sender=fact.sender,
            recipient=shown,
            channel=entry.channel,
            result=result.value,
        )
        return result

    async def record_bulk(self, rows: Sequence[BulkRow]) -> list[WriteResult]:
        """Write many prepared rows durably (bulk import: no audit entry per row);
        addresses in their source and evidence are masked."""
        return await self.registry.record_many([private_row(row) for row in rows])


def private_fact(fact: Fact) -> Fact:
    """`fact` with every email address and phone number in its source and evidence masked."""
    source, evidence = _masked(fact.source, fact.evidence)
    if source is fact.source and evidence is fact.evidence:
        return fact
    return dataclasses.replace(fact, source=source, evidence=evidence)


def private_row(row: BulkRow) -> BulkRow:
    """`row` with every email address and phone number in its source and evidence masked."""
    source, evidence = _masked(row.source, row.evidence)
    if source is row.source and evidence is row.evidence:
        return row
    return row._replace(source=source, evidence=evidence)


def _masked(source: str, evidence: str | None) -> tuple[str, str | None]:
    """Source and evidence masked; each the very same object when nothing changed."""
    masked_source = mask_text(source)
    masked_evidence = mask_text(evidence) if evidence else evidence
    return (
        source if masked_source == source else masked_source,
        evidence if masked_evidence == evidence else masked_evidence,
    )
