"""How filterctl shows facts and audit entries: JSON documents and text lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from filterd.model import AuditEntry, Fact


def iso_time(ms: int | None) -> str | None:
    """A time in ms as ISO 8601 UTC with milliseconds (`2025-01-02T03:04:05.000Z`)."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def fact_document(fact: Fact) -> dict[str, Any]:
    """A fact as a JSON object."""
    return {
        "fact": fact.kind.value,
        "sender": fact.sender,
        "channel": fact.channel.value if fact.channel else "all",
        "created_at": iso_time(fact.at_ms),
        "expires_at": iso_time(fact.expires_ms),
        "source": fact.source,
        "evidence": fact.evidence,
        "message_id": fact.message_id,
    }


def fact_line(fact: Fact) -> str:
    """A fact as one text line."""
    doc = fact_document(fact)
    parts = [str(doc["created_at"]), fact.kind.value, f"sender={fact.sender}",
             f"channel={doc['channel']}", f"source={fact.source}"]  # fmt: skip
    if fact.expires_ms is not None:
        parts.append(f"expires={doc['expires_at']}")
    if fact.evidence:
        parts.append(f"evidence={fact.evidence!r}")
    return "  ".join(parts)


def audit_document(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as a JSON object."""
    return {
        "at": iso_time(entry.at_ms),
        "event": entry.event,
        "sender": entry.sender,
        "consumer": entry.consumer,
        "channel": entry.channel,
        "reason": entry.reason,
        "source": entry.source,
        "origin": entry.origin,
        "message_id": entry.message_id,
        "detail": entry.detail,
    }


def audit_line(entry: AuditEntry) -> str:
    """An audit entry as one text line."""
    doc = audit_document(entry)
    return "  ".join(
        [str(doc["at"]), entry.event]
        + [f"{k}={v}" for k, v in doc.items() if k not in ("at", "event") and v is not None]
    )
