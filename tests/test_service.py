"""The service use cases over the in-memory registry fake (a unit test of the
core; the Redis path is covered in test_cli and test_redis_registry)."""

from __future__ import annotations

import asyncio
import io
import json
import sys

from filterd import logs
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.model import (
    ALL_SENDERS,
    Action,
    BulkRow,
    Channel,
    FactRequest,
    Kind,
    MessageClass,
    Reason,
    WriteResult,
)
from filterd.normalize import normalize
from filterd.policy import FailMode
from filterd.registry import AuditQuery, MemoryRegistry
from filterd.service import Service

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
