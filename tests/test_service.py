"""The service use cases over the in-memory registry fake (a unit test of the
core; the Redis path is covered in test_cli_* and test_storage_*)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sys
from collections.abc import Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from filterd import logs
from filterd.compliance import QuietRule
from filterd.errors import RegistryUnavailable
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.model import (
    ALL_SENDERS,
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
    WriteResult,
)
from filterd.normalize import normalize
from filterd.policy import FailMode
from filterd.quiet_hours import Resume, parse_window
from filterd.service import Service
from filterd.storage.memory import MemoryRegistry
from filterd.storage.port import AuditQuery

NOW = 1_700_000_000.0
PHONE = normalize("+8613800138000")
EMAIL = normalize("jane@example.com")


def make(fail_mode: FailMode = FailMode.CLOSED) -> tuple[Service, MemoryRegistry]:
    """A service on a fresh fake registry with a fixed clock."""
    registry = MemoryRegistry()
    service = Service(
        registry,
        ConsumerHasher(b"k" * 32),
        request_ttl_s=3600,
        fail_mode=fail_mode,
        clock=lambda: NOW,
    )
    return service, registry


def request(kind: Kind, sender: str = "acme", **kw: object) -> FactRequest:
    """A fact request for the phone number."""
    channel = None if kind is Kind.REFUSAL and sender == ALL_SENDERS else Channel.SMS
    return FactRequest(PHONE, kind, sender, channel, "test", **kw)  # type: ignore[arg-type]


def test_screen_decides_each_recipient_and_audits_drops() -> None:
    """One screen call decides every recipient; each drop gets an audit entry with its hash."""
    service, registry = make()
    run = asyncio.run
    run(service.record(request(Kind.CONSENT), origin="test"))
    email_refusal = FactRequest(EMAIL, Kind.REFUSAL, "acme", Channel.EMAIL, "test")
    run(service.record(email_refusal, origin="test"))
    decisions = run(
        service.screen(
            "acme", MessageClass.COMMERCIAL, [PHONE, EMAIL], origin="smtp", message_id="m-1"
        )
    )
    assert [(d.action, d.reason) for d in decisions] == [
        (Action.DELIVER, None),
        (Action.DROP, Reason.REFUSED),
    ]
    drops = run(registry.read_audit(AuditQuery(limit=10)))
    assert drops[0].event == "drop"
    assert drops[0].consumer == consumer_hex(service.hasher.consumer_id(EMAIL))
    assert (drops[0].reason, drops[0].origin, drops[0].message_id) == ("refused", "smtp", "m-1")


def test_screen_defers_when_registry_down() -> None:
    """Registry unavailable: commercial recipients are deferred (fail closed)."""
    service, registry = make()
    registry.available = False
    decisions = asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [PHONE], origin="t"))
    assert [(d.action, d.reason) for d in decisions] == [
        (Action.DEFER, Reason.REGISTRY_UNAVAILABLE)
    ]


def test_judge_decides_like_screen_but_audits_and_counts_nothing() -> None:
    """judge (filterctl check's question) takes screen's path, registry read and decide(),
    but writes no audit entry and counts no decision; an unreadable registry is a
    deferral, as for screen."""
    service, registry = make()
    run = asyncio.run
    email_refusal = FactRequest(EMAIL, Kind.REFUSAL, "acme", Channel.EMAIL, "test")
    run(service.record(email_refusal, origin="test"))
    before = run(registry.read_audit(AuditQuery(limit=10)))
    decisions = run(service.judge("acme", MessageClass.COMMERCIAL, [PHONE, EMAIL]))
    assert [(d.action, d.reason) for d in decisions] == [
        (Action.DROP, Reason.NO_CONSENT),
        (Action.DROP, Reason.REFUSED),
    ]
    run(service.flush_audit())
    assert run(registry.read_audit(AuditQuery(limit=10))) == before
    assert metric(service, "filterd_decisions_total", front_end="check", decision="drop",
                  reason="refused") is None  # fmt: skip
    registry.available = False
    [deferred] = run(service.judge("acme", MessageClass.COMMERCIAL, [PHONE]))
    assert (deferred.action, deferred.reason) == (Action.DEFER, Reason.REGISTRY_UNAVAILABLE)


def test_upgrade_judges_every_recipient_as_commercial() -> None:
    """A transactional message with commercial signals: every recipient is judged as
    commercial with one read; the permitted ones are kept (by position), each drop is
    audited; with the registry down the whole message is deferred."""
    service, registry = make()
    run = asyncio.run
    run(service.record(request(Kind.CONSENT), origin="test"))
    upgrade = run(
        service.upgrade("acme", [EMAIL, PHONE], ["Subject"], origin="smtp", message_id="m-9")
    )
    assert (upgrade.keep, upgrade.deferred) == ((1,), False)
    run(service.flush_audit())
    [drop] = run(registry.read_audit(AuditQuery(limit=10, sender="acme")))[:1]
    assert (drop.event, drop.reason, drop.message_id) == ("drop", "no_consent", "m-9")
    registry.available = False
    down = run(service.upgrade("acme", [PHONE], ["List-Id"], origin="smtp"))
    assert (down.keep, down.deferred) == ((), True)


def test_screen_fail_open_delivers() -> None:
    """With fail_mode open, an unreadable registry delivers."""
    service, registry = make(FailMode.OPEN)
    registry.available = False
    decisions = asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [PHONE], origin="t"))
    assert decisions[0].action is Action.DELIVER


def test_transactional_never_reads_the_registry() -> None:
    """A transactional message is delivered even with the registry down."""
    service, registry = make()
    registry.available = False
    decisions = asyncio.run(
        service.screen("acme", MessageClass.TRANSACTIONAL, [PHONE, EMAIL], origin="t")
    )
    assert [d.action for d in decisions] == [Action.DELIVER, Action.DELIVER]


def test_record_audits_only_what_was_stored() -> None:
    """A stored fact is audited; a consent refused for lack of evidence is not."""
    service, registry = make()
    run = asyncio.run
    assert run(service.record(request(Kind.REFUSAL, ALL_SENDERS), origin="cli")) is (
        WriteResult.STORED
    )
    assert run(service.record(request(Kind.CONSENT), origin="cli")) is (
        WriteResult.REFUSAL_ON_RECORD
    )
    events = [e.event for e in run(registry.read_audit(AuditQuery()))]
    assert events == ["refusal"]


def test_build_fact_request_expiry_and_scrubbing() -> None:
    """A request expires after its TTL (default request_ttl); evidence is masked."""
    service, _ = make()
    fact = service.build_fact(request(Kind.REQUEST, evidence="sms from +8613800138000"))
    assert fact.expires_ms == int(NOW * 1000) + 3600 * 1000
    assert fact.evidence == "sms from +86138****8000"
    custom = service.build_fact(request(Kind.REQUEST, ttl_s=60))
    assert custom.expires_ms == int(NOW * 1000) + 60_000


def test_record_bulk_passes_rows_through() -> None:
    """record_bulk writes prepared rows and returns one result per row."""
    service, registry = make()
    consumer = service.hasher.consumer_id(PHONE)
    rows = [BulkRow(consumer, Kind.CONSENT, "acme", Channel.SMS, 5, "import:x")]
    assert asyncio.run(service.record_bulk(rows)) == [WriteResult.STORED]
    assert asyncio.run(registry.facts(consumer))[0].source == "import:x"


def test_one_masked_log_line_per_decision() -> None:
    """Each decision is one JSON log line with sender, masked recipient, decision, reason."""
    stream = io.StringIO()
    logs.configure(stream)
    try:
        service, _ = make()
        asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [PHONE, EMAIL], origin="t"))
    finally:
        logs.configure(sys.stderr, "WARNING")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    decisions = [line for line in lines if line["event"] == "decision"]
    assert [d["recipient"] for d in decisions] == ["+86138****8000", "j***@example.com"]
    assert {d["decision"] for d in decisions} == {"drop"}
    assert {d["reason"] for d in decisions} == {"no_consent"}
    assert "13800138000" not in stream.getvalue()
    assert "jane@" not in stream.getvalue()


# ---- record_consumer and metrics (one-click unsubscribe) ---------------------------


def metric(service: Service, name: str, **labels: str) -> float | None:
    """A sample of the service's metrics, or None when absent."""
    for family in text_string_to_metric_families(service.metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def one_click_refusal(sender: str = "acme") -> Fact:
    """The fact the HTTP front end builds from a verified token."""
    return Fact(
        kind=Kind.REFUSAL,
        sender=sender,
        channel=Channel.EMAIL,
        at_ms=int(NOW * 1000),
        source="one-click",
        evidence="one-click POST at 2023-11-14T22:13:20+00:00 from 192.0.2.7",
    )


def test_record_consumer_writes_fact_and_audit_entry() -> None:
    """record_consumer stores the caller's fact for a consumer known only by its id, with
    an audit entry (event refusal, hash, channel, source, origin); the consumer is refused."""
    service, registry = make()
    consumer = service.hasher.consumer_id(EMAIL)
    result = asyncio.run(service.record_consumer(consumer, one_click_refusal(), origin="one-click"))
    assert result is WriteResult.STORED
    [fact] = asyncio.run(registry.facts(consumer))
    assert fact == one_click_refusal()
    [entry] = asyncio.run(registry.read_audit(AuditQuery()))
    assert (entry.event, entry.sender, entry.consumer, entry.channel) == (
        "refusal", "acme", consumer_hex(consumer), "email",
    )  # fmt: skip
    assert (entry.source, entry.origin, entry.at_ms) == ("one-click", "one-click", int(NOW * 1000))
    [decision] = asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [EMAIL], origin="t"))
    assert decision.reason is Reason.REFUSED


def test_record_consumer_logs_the_hash_not_an_address() -> None:
    """The fact log line names the consumer by `consumer:<hash>` (the service never saw an
    address), with origin, sender and result."""
    stream = io.StringIO()
    logs.configure(stream)
    try:
        service, _ = make()
        consumer = service.hasher.consumer_id(EMAIL)
        asyncio.run(service.record_consumer(consumer, one_click_refusal(), origin="one-click"))
    finally:
        logs.configure(sys.stderr, "WARNING")
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["event"] == "fact"
    assert line["recipient"] == "consumer:" + consumer_hex(consumer)
    assert (line["origin"], line["sender"], line["result"]) == ("one-click", "acme", "stored")
    assert "jane" not in stream.getvalue()


def test_record_consumer_registry_down_raises_and_counts() -> None:
    """With the registry down, record_consumer raises RegistryUnavailable (nothing to
    acknowledge), counts a registry error and no opt-out."""
    service, registry = make()
    registry.available = False
    consumer = service.hasher.consumer_id(EMAIL)
    with pytest.raises(RegistryUnavailable):
        asyncio.run(service.record_consumer(consumer, one_click_refusal(), origin="one-click"))
    assert metric(service, "filterd_registry_errors_total", operation="record") == 1
    assert metric(service, "filterd_optouts_total", origin="one-click") is None
    assert metric(service, "filterd_registry_seconds_count", operation="record") is None


def test_refusals_count_as_optouts_by_origin() -> None:
    """Each refusal written one by one counts one opt-out for its origin; a consent does
    not; each write is one observation of the record latency."""
    service, _ = make()
    consumer = service.hasher.consumer_id(EMAIL)
    asyncio.run(service.record_consumer(consumer, one_click_refusal(), origin="one-click"))
    asyncio.run(service.record(request(Kind.REFUSAL), origin="smpp"))
    asyncio.run(service.record(request(Kind.CONSENT, "beta"), origin="cli"))
    assert metric(service, "filterd_optouts_total", origin="one-click") == 1
    assert metric(service, "filterd_optouts_total", origin="smpp") == 1
    assert metric(service, "filterd_optouts_total", origin="cli") is None
    assert metric(service, "filterd_registry_seconds_count", operation="record") == 3


def test_screen_counts_decisions_and_lookup_latency() -> None:
    """screen counts each recipient's decision by origin, decision and reason, and observes
    one lookup per commercial message (none for transactional); an outage counts a
    lookup error and deferrals."""
    service, registry = make()
    asyncio.run(service.record(request(Kind.CONSENT), origin="cli"))
    asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [PHONE, EMAIL], origin="smtp"))
    asyncio.run(service.screen("acme", MessageClass.TRANSACTIONAL, [EMAIL], origin="smtp"))
    name = "filterd_decisions_total"
    assert metric(service, name, front_end="smtp", decision="deliver", reason="none") == 2
    assert metric(service, name, front_end="smtp", decision="drop", reason="no_consent") == 1
    assert metric(service, "filterd_registry_seconds_count", operation="lookup") == 1
    registry.available = False
    asyncio.run(service.screen("acme", MessageClass.COMMERCIAL, [PHONE], origin="smpp"))
    labels = {"front_end": "smpp", "decision": "defer", "reason": "registry_unavailable"}
    assert metric(service, name, **labels) == 1
    assert metric(service, "filterd_registry_errors_total", operation="lookup") == 1
    assert metric(service, "filterd_registry_seconds_count", operation="lookup") == 1


def test_each_service_has_its_own_metrics() -> None:
    """Two services without a Metrics argument do not share counters."""
    first, _ = make()
    second, _ = make()
    asyncio.run(first.screen("acme", MessageClass.COMMERCIAL, [PHONE], origin="smtp"))
    labels = {"front_end": "smtp", "decision": "drop", "reason": "no_consent"}
    assert metric(first, "filterd_decisions_total", **labels) == 1
    assert metric(second, "filterd_decisions_total", **labels) is None


class _RefusesOneEntry(MemoryRegistry):
    """A registry that cannot store an audit entry with message id "bad" (as redis-py
    cannot encode a string with a lone surrogate): the whole append raises."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        if any(entry.message_id == "bad" for entry in entries):
            raise UnicodeEncodeError("utf-8", "bad", 0, 1, "surrogates not allowed")
        await super().append_audit(entries)


def test_an_unwritable_audit_entry_loses_only_itself() -> None:
    """When a batch of drop entries fails for a reason other than the registry being down,
    the entries are written one by one: only the one the registry cannot take is lost
    (logged as audit_entries_lost); later entries are still written."""

    async def scenario() -> list[str | None]:
        registry = _RefusesOneEntry()
        service = Service(
            registry, ConsumerHasher(b"k" * 32), request_ttl_s=3600, clock=lambda: NOW
        )
        for message_id in ("m-1", "bad", "m-3"):
            await service.screen(
                "acme", MessageClass.COMMERCIAL, [EMAIL], origin="policy", message_id=message_id
            )
        await service.flush_audit()
        await service.screen(
            "acme", MessageClass.COMMERCIAL, [EMAIL], origin="policy", message_id="m-4"
        )
        await service.flush_audit()
        return [entry.message_id for entry in await registry.read_audit(AuditQuery())]

    stream = io.StringIO()
    logs.configure(stream)
    try:
        written = asyncio.run(scenario())
    finally:
        logs.configure(sys.stderr, "WARNING")
    assert sorted(m for m in written if m) == ["m-1", "m-3", "m-4"]
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    lost = [line for line in logged if line["event"] == "audit_entries_lost"]
    assert [(line["entries"], line["reason"]) for line in lost] == [(1, "not writable")]


# ---- other people's data in free text (SPEC §11) -------------------------------------------

THIRD_PARTY = "referred by frank.other@example.org, +8613611112222 or 136 1111 2222"
THIRD_PARTY_MASKED = "referred by f***@example.org, +86136****2222 or 13611****22"
RAW_THIRD_PARTY = ("frank.other", "8613611112222", "13611112222", "136 1111 2222")


def assert_no_third_party(*texts: str | None) -> None:
    """None of the third party's raw email or number is in any of `texts`."""
    for text in texts:
        for raw in RAW_THIRD_PARTY:
            assert raw not in (text or ""), (raw, text)


def test_record_masks_other_peoples_addresses_in_evidence_source_and_audit() -> None:
    """A fact recorded one by one (filterctl, an SMS keyword reply) is stored with every
    email address and phone number in its evidence and source masked, not only the
    consumer's own; its audit entry carries the masked source."""
    service, registry = make()
    fact_request = FactRequest(
        PHONE, Kind.REFUSAL, "acme", Channel.SMS, "crm import by frank.other@example.org",
        evidence=THIRD_PARTY,
    )  # fmt: skip
    assert asyncio.run(service.record(fact_request, origin="cli")) is WriteResult.STORED
    sms = FactRequest(
        PHONE, Kind.CONSENT, "acme", Channel.SMS, "sms-keyword",
        evidence="SMS reply: START 13611112222",
    )  # fmt: skip
    asyncio.run(service.record(sms, origin="smpp"))
    consumer = service.hasher.consumer_id(PHONE)
    facts = {f.kind: f for f in asyncio.run(registry.facts(consumer))}
    assert facts[Kind.REFUSAL].evidence == THIRD_PARTY_MASKED
    assert facts[Kind.REFUSAL].source == "crm import by f***@example.org"
    assert facts[Kind.CONSENT].evidence == "SMS reply: START 13611****22"
    entries = asyncio.run(registry.read_audit(AuditQuery()))
    assert {e.source for e in entries} == {"crm import by f***@example.org", "sms-keyword"}
    assert_no_third_party(*(f.evidence for f in facts.values()), *(e.source for e in entries))


def test_record_consumer_masks_addresses_in_the_callers_fact() -> None:
    """A fact built by a front end for a consumer id is masked too; an IPv4 address and an
    ISO time in its evidence are kept."""
    service, registry = make()
    consumer = service.hasher.consumer_id(EMAIL)
    fact = dataclasses.replace(
        one_click_refusal(), source="mailto frank.other@example.org",
        evidence="one-click POST at 2023-11-14T22:13:20+00:00 from 192.0.2.7; " + THIRD_PARTY,
    )  # fmt: skip
    asyncio.run(service.record_consumer(consumer, fact, origin="mailto"))
    [stored] = asyncio.run(registry.facts(consumer))
    assert stored.evidence == (
        "one-click POST at 2023-11-14T22:13:20+00:00 from 192.0.2.7; " + THIRD_PARTY_MASKED
    )
    [entry] = asyncio.run(registry.read_audit(AuditQuery()))
    assert stored.source == entry.source == "mailto f***@example.org"


def test_record_bulk_masks_addresses_in_every_row() -> None:
    """Bulk rows (an import) are stored with addresses in source and evidence masked."""
    service, registry = make()
    consumer = service.hasher.consumer_id(PHONE)
    rows = [
        BulkRow(consumer, Kind.CONSENT, "acme", Channel.SMS, 5, "list of frank.other@example.org",
                THIRD_PARTY),
        BulkRow(consumer, Kind.REFUSAL, "acme", Channel.SMS, 6, "import:x"),
    ]  # fmt: skip
    assert asyncio.run(service.record_bulk(rows)) == [WriteResult.STORED] * 2
    facts = {f.kind: f for f in asyncio.run(registry.facts(consumer))}
    assert facts[Kind.CONSENT].source == "list of f***@example.org"
    assert facts[Kind.CONSENT].evidence == THIRD_PARTY_MASKED
    assert (facts[Kind.REFUSAL].source, facts[Kind.REFUSAL].evidence) == ("import:x", None)


def test_quiet_hours_defer_what_the_registry_lets_through() -> None:
    """With quiet hours, a commercial recipient the registry lets through is deferred
    (reason quiet_hours, with the time sending may resume, audited), one without
    consent is still dropped, and transactional mail is never held back. NOW is
    22:13 in Shanghai: inside 21:00-08:00 for a +86 number."""
    window = parse_window("21:00-08:00")
    assert window is not None
    service, registry = make()
    service.quiet = QuietRule(window, "Asia/Shanghai")
    run = asyncio.run
    run(service.record(request(Kind.CONSENT), origin="test"))
    [held, dropped] = run(
        service.screen("acme", MessageClass.COMMERCIAL, [PHONE, EMAIL], origin="smpp")
    )
    assert (held.action, held.reason, held.resume) == (
        Action.DEFER,
        Reason.QUIET_HOURS,
        "08:00 Asia/Shanghai",
    )
    assert (dropped.action, dropped.reason) == (Action.DROP, Reason.NO_CONSENT)
    [sent] = run(service.screen("acme", MessageClass.TRANSACTIONAL, [PHONE], origin="smpp"))
    assert sent.action is Action.DELIVER
    run(service.flush_audit())
    entries = run(registry.read_audit(AuditQuery(limit=10)))
    assert sorted((e.event, e.reason) for e in entries if e.event != "consent") == [
        ("defer", "quiet_hours"),
        ("drop", "no_consent"),
    ]


def test_refuse_drops_logs_counts_and_audits_every_recipient() -> None:
    """refuse (a compliance rule's drop): each recipient gets a drop with the reason, one
    decision line, one count and one audit entry, as any drop."""
    service, registry = make()
    stream = io.StringIO()
    logs.configure(stream)

    async def refuse() -> list[Decision]:
        decisions = service.refuse(
            "acme", [PHONE], Reason.NO_SIGNATURE, origin="smpp", message_id="m-7"
        )
        await service.flush_audit()
        return decisions

    try:
        decisions = asyncio.run(refuse())
    finally:
        logs.configure(sys.stderr, "WARNING")
    assert [(d.action, d.reason) for d in decisions] == [(Action.DROP, Reason.NO_SIGNATURE)]
    [line] = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert (line["event"], line["decision"], line["reason"], line["recipient"]) == (
        "decision", "drop", "no_signature", "+86138****8000",
    )  # fmt: skip
    assert metric(service, "filterd_decisions_total", front_end="smpp", decision="drop",
                  reason="no_signature") == 1.0  # fmt: skip
    [entry] = asyncio.run(registry.read_audit(AuditQuery(limit=10)))
    assert (entry.event, entry.reason, entry.message_id) == ("drop", "no_signature", "m-7")


def test_a_failed_text_rule_is_the_one_decision_recorded() -> None:
    """screen with refused_by (an SMS that fails its sender's signature or cancel-text
    rule, judged before the lookup): a recipient the registry lets through is
    dropped for that reason, one decision counted (no deliver before it), and the
    refusal wins over quiet hours; one without consent keeps its own reason."""
    window = parse_window("21:00-08:00")
    assert window is not None
    service, _ = make()
    service.quiet = QuietRule(window, "Asia/Shanghai")  # NOW is inside it for +86
    run = asyncio.run
    run(service.record(request(Kind.CONSENT), origin="test"))
    [dropped] = run(
        service.screen(
            "acme", MessageClass.COMMERCIAL, [PHONE], origin="smpp", refused_by=Reason.NO_SIGNATURE
        )
    )
    assert (dropped.action, dropped.reason) == (Action.DROP, Reason.NO_SIGNATURE)
    counted = [
        (sample.labels["decision"], sample.labels["reason"], sample.value)
        for family in text_string_to_metric_families(service.metrics.render().decode())
        for sample in family.samples
        if sample.name == "filterd_decisions_total" and sample.labels.get("front_end") == "smpp"
    ]
    assert counted == [("drop", "no_signature", 1.0)]
    [unconsented] = run(
        service.screen(
            "acme", MessageClass.COMMERCIAL, [EMAIL], origin="smpp", refused_by=Reason.NO_SIGNATURE
        )
    )
    assert (unconsented.action, unconsented.reason) == (Action.DROP, Reason.NO_CONSENT)


# ---- screen_soon: the callback path of the policy service -------------------------------


def screened_soon(
    service: Service, message_class: MessageClass, address: Address, **kw: str
) -> tuple[list[Decision | Exception], bool]:
    """screen_soon's outcomes, run on a loop (its audit entries written, unless the fake
    registry is switched off); and whether the outcome came before screen_soon returned."""
    outcomes: list[Decision | Exception] = []

    async def go() -> bool:
        service.screen_soon("acme", message_class, address, outcomes.append, **kw)
        at_once = bool(outcomes)
        await asyncio.sleep(0)
        if isinstance(service.registry, MemoryRegistry) and service.registry.available:
            await service.flush_audit()
        return at_once

    at_once = asyncio.run(go())
    return outcomes, at_once


def test_screen_soon_decides_logs_counts_and_audits_as_screen() -> None:
    """screen_soon gives one recipient the decision screen gives it, with the same audit
    entry and decision count; a drop and a delivery alike."""
    service, registry = make()
    asyncio.run(service.record(request(Kind.CONSENT), origin="test"))
    outcomes, _ = screened_soon(service, MessageClass.COMMERCIAL, PHONE, origin="policy")
    assert outcomes == asyncio.run(
        service.screen("acme", MessageClass.COMMERCIAL, [PHONE], origin="policy")
    )
    [first] = outcomes
    assert isinstance(first, Decision)
    assert (first.action, first.reason) == (Action.DELIVER, None)
    outcomes, _ = screened_soon(
        service, MessageClass.COMMERCIAL, EMAIL, origin="policy", message_id="q-1"
    )
    assert outcomes == [Decision(Action.DROP, Reason.NO_CONSENT)]
    [entry] = [e for e in asyncio.run(registry.read_audit(AuditQuery())) if e.event == "drop"]
    assert (entry.consumer, entry.origin, entry.message_id) == (
        consumer_hex(service.hasher.consumer_id(EMAIL)), "policy", "q-1",
    )  # fmt: skip
    assert metric(service, "filterd_decisions_total", front_end="policy",
                  decision="drop", reason="no_consent") == 1.0  # fmt: skip


def test_screen_soon_registry_down_defers_and_transactional_answers_at_once() -> None:
    """An unreadable registry is a deferral (counted as a registry error); a
    transactional recipient is delivered without a lookup, before screen_soon returns."""
    service, registry = make()
    registry.available = False
    outcomes, _ = screened_soon(service, MessageClass.COMMERCIAL, PHONE, origin="policy")
    assert outcomes == [Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE)]
    assert metric(service, "filterd_registry_errors_total", operation="lookup") == 1.0
    outcomes, at_once = screened_soon(service, MessageClass.TRANSACTIONAL, PHONE, origin="p")
    assert (outcomes, at_once) == ([Decision(Action.DELIVER)], True)


def test_screen_soon_hands_an_error_to_its_callback() -> None:
    """A failure past the lookup (here, in the quiet-hours rule) reaches the callback as
    the exception screen would raise, not the event loop."""
    service, _ = make()

    class Broken(QuietRule):
        def resume(self, address: Address, now_s: float) -> Resume | None:
            raise RuntimeError(f"broken rule at {now_s}")

    window = parse_window("00:00-23:59")
    assert window is not None
    service.quiet = Broken(window, "Asia/Shanghai")
    asyncio.run(service.record(request(Kind.CONSENT), origin="test"))
    outcomes, _ = screened_soon(service, MessageClass.COMMERCIAL, PHONE, origin="policy")
    assert [type(o) for o in outcomes] == [RuntimeError]
