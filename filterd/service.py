"""Screening recipients and recording facts: the use cases every edge calls.

One registry lookup per decision point, `decide()` per recipient, one log line
per decision (sender, masked recipient, decision, reason), and an audit entry
for every drop and deferral and for every fact written one by one.

Every fact is written through here (one by one, by consumer id, or in bulk), so
this is where the free text stored with it, source and evidence, has every
email address and phone number in it masked (SPEC §11), whoever built it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filterd.audit_buffer import AuditBuffer
from filterd.compliance import QuietRule
from filterd.errors import RegistryUnavailable
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.logs import get_logger
from filterd.metrics import Metrics
from filterd.model import (
    Action,
    Address,
    AuditEntry,
    BulkRow,
    Channel,
    Decision,
    Fact,
    FactRequest,
    Kind,
    MessageClass,
    Reason,
    Submission,
    WriteResult,
)
from filterd.normalize import mask, mask_text, scrub
from filterd.policy import FailMode, decide
from filterd.storage.port import Registry

log = get_logger("service")
SUBMISSIONS = 1024
"""(sender, channel, class) whose Submission is kept for the next decisions."""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What is left of a message upgraded to commercial."""

    keep: tuple[int, ...]
    """The recipients (by position) that may still be sent to."""
    deferral: tuple[int, Decision] | None = None
    """The first recipient (by position) that could not be judged (registry
    unavailable) or is inside its quiet hours, and its decision: the whole message
    must then be deferred, never sent in part."""

    @property
    def deferred(self) -> bool:
        """Whether the whole message must be deferred."""
        return self.deferral is not None


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
        quiet: QuietRule | None = None,
    ) -> None:
        self.registry = registry
        self.hasher = hasher
        self.request_ttl_s = request_ttl_s
        self.fail_mode = fail_mode
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._audit = AuditBuffer(registry)
        self._submissions: dict[tuple[str, Channel, MessageClass], Submission] = {}
        self.quiet = quiet
        """Quiet hours ([compliance] quiet_hours), applied to commercial recipients the
        registry lets through."""

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
        refused_by: Reason | None = None,
    ) -> list[Decision]:
        """Decide every recipient of one message with one registry read; each decision
        is logged and counted, each drop and deferral audited.

        `refused_by`: a compliance rule the message's text already fails (the SMS
        signature or cancel text, judged before the lookup): a recipient the
        registry lets through is dropped for it, in the one decision recorded."""
        ids = [self.hasher.consumer_id(a) for a in addresses]
        now = self.now_ms()
        decisions = await self._judge(
            sender, message_class, addresses, ids, now=now, origin=origin, refused_by=refused_by
        )
        self._report(
            sender, addresses, ids, decisions, now=now, origin=origin, message_id=message_id
        )
        return decisions

    def refuse(
        self,
        sender: str,
        addresses: Sequence[Address],
        reason: Reason,
        *,
        origin: str,
        message_id: str | None = None,
    ) -> list[Decision]:
        """Drop every recipient of a message the registry let through but a compliance
        rule refuses (no signature, no way to cancel): logged, counted and audited as
        any drop."""
        ids = [self.hasher.consumer_id(a) for a in addresses]
        decisions = [Decision(Action.DROP, reason) for _ in addresses]
        self._report(
            sender,
            addresses,
            ids,
            decisions,
            now=self.now_ms(),
            origin=origin,
            message_id=message_id,
        )
        return decisions

    def _report(
        self,
        sender: str,
        addresses: Sequence[Address],
        ids: Sequence[bytes],
        decisions: Sequence[Decision],
        *,
        now: int,
        origin: str,
        message_id: str | None,
    ) -> None:
        """One log line and one count per decision; an audit entry per drop and deferral."""
        note = self._note
        audit = [
            entry
            for address, consumer, decision in zip(addresses, ids, decisions, strict=True)
            if (
                entry := note(
                    sender,
                    address,
                    consumer,
                    decision,
                    now=now,
                    origin=origin,
                    message_id=message_id,
                )
            )
        ]
        if audit:
            self._audit.add(audit)

    def _note(
        self,
        sender: str,
        address: Address,
        consumer: bytes,
        decision: Decision,
        *,
        now: int,
        origin: str,
        message_id: str | None,
    ) -> AuditEntry | None:
        """One decision's count and log line; its audit entry when it drops or defers."""
        action = decision.action.value
        reason = decision.reason.value if decision.reason else None
        self.metrics.decision(origin, action, reason)
        log.info(
            "decision",
            origin=origin,
            sender=sender,
            recipient=mask(address.canonical),
            decision=action,
            reason=reason,
            message_id=message_id,
        )
        if decision.action is Action.DELIVER:
            return None
        return AuditEntry(
            at_ms=now,
            event=action,
            sender=sender,
            consumer=consumer_hex(consumer),
            channel=address.channel.value,
            reason=reason,
            origin=origin,
            message_id=message_id,
        )

    def screen_soon(
        self,
        sender: str,
        message_class: MessageClass,
        address: Address,
        done: Callable[[Decision | Exception], None],
        *,
        origin: str,
        message_id: str | None = None,
    ) -> None:
        """`screen` for one recipient with a callback instead of a coroutine, for the hot
        path of a front end that answers from a protocol callback (the policy service):
        the same lookup (batched alike), decision, log line, count and audit entry, no
        task or future on the way. `done` gets the decision, or the error screen would
        raise, once (before this returns when there is nothing to look up)."""
        consumer = self.hasher.consumer_id(address)
        now = self.now_ms()
        submission = self._submission(sender, address.channel, message_class)

        def decided(facts: list[Fact] | None) -> None:
            try:
                decision = self._decision(submission, address, facts, now, None)
                entry = self._note(
                    sender,
                    address,
                    consumer,
                    decision,
                    now=now,
                    origin=origin,
                    message_id=message_id,
                )
            except Exception as exc:
                done(exc)
                return
            if entry is not None:
                self._audit.add((entry,))
            done(decision)

        if message_class is not MessageClass.COMMERCIAL:
            decided(None)
            return
        started = time.perf_counter()

        def found(outcome: list[list[Fact]] | RegistryUnavailable) -> None:
            if isinstance(outcome, RegistryUnavailable):
                self._unreadable(outcome, origin)
                decided(None)
            else:
                self.metrics.registry_latency("lookup", time.perf_counter() - started)
                decided(outcome[0])

        self.registry.lookup_soon(sender, (consumer,), found)

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
        refused_by: Reason | None = None,
    ) -> list[Decision]:
        """One registry read (commercial only), then `decide()` per recipient; an
        unreadable registry is decide()'s input like any other. What the registry lets
        through is then dropped for `refused_by` (a failed text rule), else deferred
        inside the recipient's quiet hours."""
        facts: list[list[Fact]] | None = None
        if message_class is MessageClass.COMMERCIAL:
            started = time.perf_counter()
            try:
                facts = await self.registry.lookup(sender, list(ids))
            except RegistryUnavailable as exc:
                self._unreadable(exc, origin)
            else:
                self.metrics.registry_latency("lookup", time.perf_counter() - started)
        return self._decisions(
            sender, message_class, addresses, facts, now=now, refused_by=refused_by
        )

    def _unreadable(self, error: RegistryUnavailable, origin: str) -> None:
        """A lookup failed: counted and logged (decide() then fails closed or open)."""
        self.metrics.registry_error("lookup")
        log.warning("registry_unavailable", error=str(error), origin=origin)

    def _decisions(
        self,
        sender: str,
        message_class: MessageClass,
        addresses: Sequence[Address],
        facts: list[list[Fact]] | None,
        *,
        now: int,
        refused_by: Reason | None,
    ) -> list[Decision]:
        """`decide()` per recipient on the facts read (None: unreadable); what the
        registry lets through is then dropped for `refused_by`, else deferred inside
        the recipient's quiet hours."""
        found: Sequence[list[Fact] | None] = facts if facts is not None else [None] * len(addresses)
        return [
            self._decision(
                self._submission(sender, address.channel, message_class),
                address,
                address_facts,
                now,
                refused_by,
            )
            for address, address_facts in zip(addresses, found, strict=True)
        ]

    def _decision(
        self,
        submission: Submission,
        address: Address,
        facts: list[Fact] | None,
        now: int,
        refused_by: Reason | None,
    ) -> Decision:
        """`decide()` for one recipient; a delivery then dropped for `refused_by`, else
        deferred inside its quiet hours (commercial only)."""
        decision = decide(submission, facts, now, self.fail_mode)
        if decision.action is not Action.DELIVER:
            return decision
        if refused_by is not None:
            return Decision(Action.DROP, refused_by)
        if self.quiet is not None and submission.message_class is MessageClass.COMMERCIAL:
            return self._in_hours(decision, address, now)
        return decision

    def _submission(self, sender: str, channel: Channel, message_class: MessageClass) -> Submission:
        """The Submission of (sender, channel, class), made once (up to SUBMISSIONS are
        kept, then forgotten at once)."""
        key = (sender, channel, message_class)
        submission = self._submissions.get(key)
        if submission is None:
            if len(self._submissions) >= SUBMISSIONS:
                self._submissions.clear()
            submission = self._submissions[key] = Submission(sender, channel, message_class)
        return submission

    def _in_hours(self, decision: Decision, address: Address, now_ms: int) -> Decision:
        """A delivery inside the recipient's quiet hours becomes a deferral (never a drop)."""
        if self.quiet is None:
            return decision
        resume = self.quiet.resume(address, now_ms / 1000)
        if resume is None:
            return decision
        return Decision(Action.DEFER, Reason.QUIET_HOURS, decision.basis, str(resume))

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
        deferrals = [(i, d) for i, d in enumerate(decisions) if d.action is Action.DEFER]
        return Upgrade(
            keep=tuple(i for i, d in enumerate(decisions) if d.action is Action.DELIVER),
            deferral=deferrals[0] if deferrals else None,
        )

    def audit_event(self, entry: AuditEntry) -> None:
        """Queue the audit entry of an event that writes no fact (a complaint that
        names no opt-out); written in the background as drop entries are."""
        self._audit.add([entry])

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

    async def record(
        self, request: FactRequest, *, origin: str, detail: str | None = None
    ) -> WriteResult:
        """Write one fact durably with its audit entry (`detail`: who wrote it, e.g.
        the API key's name); log it."""
        fact = self.build_fact(request)
        consumer = self.hasher.consumer_id(request.address)
        return await self._write(
            consumer, fact, origin, mask(request.address.canonical), detail=detail
        )

    async def record_consumer(self, consumer: bytes, fact: Fact, *, origin: str) -> WriteResult:
        """Write a fact for a consumer known only by its id (a signed unsubscribe token).

        The caller builds the fact; addresses in its source and evidence are masked.
        """
        return await self._write(consumer, fact, origin, "consumer:" + consumer_hex(consumer))

    async def _write(
        self, consumer: bytes, fact: Fact, origin: str, shown: str, *, detail: str | None = None
    ) -> WriteResult:
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
            detail=detail,
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
