"""Reading server replies: text and bytes whatever the client decoded, packed
facts values (a damaged one is RegistryUnavailable: fail closed), side values."""

from __future__ import annotations

from filterd.errors import RegistryUnavailable
from filterd.model import Fact
from filterd.storage.records import Record, RecordFields, unpack, unpack_fields


def as_text(value: bytes | str | None) -> str:
    """A reply as text (undecodable bytes replaced; None is empty)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def as_bytes(value: bytes | str | None) -> bytes | None:
    """A reply as bytes (None stays None)."""
    return value.encode() if isinstance(value, str) else value


def records_of(value: bytes | str | None) -> list[Record]:
    """The records packed in a consumer's facts value (none for no value)."""
    packed = as_bytes(value)
    if not packed:
        return []
    try:
        return unpack(packed)
    except ValueError as exc:
        raise RegistryUnavailable(f"damaged registry value: {exc}") from exc


def record_fields_of(value: bytes | str | None) -> list[RecordFields]:
    """`records_of` as field tuples (a lookup's decoding)."""
    packed = as_bytes(value)
    if not packed:
        return []
    try:
        return unpack_fields(packed)
    except ValueError as exc:
        raise RegistryUnavailable(f"damaged registry value: {exc}") from exc


def with_side(fact: Fact, evidence: str | None, message_id: str | None) -> Fact:
    """`fact` with the evidence and message id of its side-table value."""
    return Fact(
        kind=fact.kind,
        sender=fact.sender,
        channel=fact.channel,
        at_ms=fact.at_ms,
        source=fact.source,
        evidence=evidence,
        message_id=message_id,
        expires_ms=fact.expires_ms,
    )
