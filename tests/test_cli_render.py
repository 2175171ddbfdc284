"""How filterctl shows facts and audit entries (filterd/cli/render.py): JSON documents
with ISO 8601 UTC times and one text line each."""

from __future__ import annotations

from filterd.cli.render import audit_document, audit_line, fact_document, fact_line, iso_time
from filterd.model import AuditEntry, Channel, Fact, Kind


def test_iso_time_is_utc_with_milliseconds() -> None:
    """Milliseconds since the epoch become `YYYY-MM-DDTHH:MM:SS.mmmZ`; None stays None."""
    assert iso_time(1_735_787_045_123) == "2025-01-02T03:04:05.123Z"
    assert iso_time(None) is None


def test_fact_as_document_and_line() -> None:
    """A fact's document names every field; its line shows kind, sender, channel, time,
    source and evidence."""
    fact = Fact(
        kind=Kind.REQUEST,
        sender="acme",
        channel=Channel.SMS,
        at_ms=1_735_787_045_000,
        source="web",
        evidence="form #12",
        message_id=None,
        expires_ms=1_735_787_105_000,
    )
    document = fact_document(fact)
    assert document["fact"] == "request"
    assert document["sender"] == "acme"
    assert document["channel"] == "sms"
    assert document["created_at"] == "2025-01-02T03:04:05.000Z"
    assert document["expires_at"] == "2025-01-02T03:05:05.000Z"
    assert document["evidence"] == "form #12"
    line = fact_line(fact)
    for part in ("request", "acme", "sms", "2025-01-02T03:04:05.000Z", "web", "form #12"):
        assert part in line


def test_audit_entry_as_document_and_line() -> None:
    """An audit entry's document and line carry its event, sender, reason and origin."""
    entry = AuditEntry(
        at_ms=1_735_787_045_000,
        event="drop",
        sender="acme",
        consumer="ab" * 10,
        channel="email",
        reason="refused",
        origin="smtp",
    )
    document = audit_document(entry)
    assert (document["event"], document["reason"], document["origin"]) == (
        "drop",
        "refused",
        "smtp",
    )
    line = audit_line(entry)
    for part in ("drop", "acme", "refused", "smtp"):
        assert part in line
