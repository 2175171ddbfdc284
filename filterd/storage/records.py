"""The packed binary form of facts inside a registry bucket (pure, no Redis).

One consumer's value is a run of records, newest slot last:

    byte 0      kind << 4 | channel   (kind 1 consent, 2 request, 3 refusal;
                                        channel 0 all, 1 email, 2 sms,
                                        3 voice)
    bytes 1-3   scope: sender id, big-endian; 0 = all senders
    bytes 4-9   time, ms since the epoch, big-endian (so bytes compare as times)
    bytes 10-11 source id, big-endian
    bytes 12-17 expiry in ms (requests only)

Bytes 0-3 are the fact's slot. Evidence and message id live in the bucket's
side table under (consumer field + slot) as `evidence \\x00 message_id`.
The Lua merge in scripts.py reads this same layout (of a channel code it asks
only: equal, or 0 = all; so a new code needs no change of the script).
"""

from __future__ import annotations

from dataclasses import dataclass

from filterd.model import Channel, Kind

KIND_CODES = {Kind.CONSENT: 1, Kind.REQUEST: 2, Kind.REFUSAL: 3}
KINDS = {code: kind for kind, code in KIND_CODES.items()}
CHANNEL_CODES: dict[Channel | None, int] = {
    None: 0,
    Channel.EMAIL: 1,
    Channel.SMS: 2,
    Channel.VOICE: 3,
}
"""Codes are never reused or renumbered: a registry written before a channel was
added holds only the older codes, which decode as they always did."""
CHANNELS = {code: channel for channel, code in CHANNEL_CODES.items()}
BASE_LEN = 12
REQUEST_LEN = 18
MAX_ID = (1 << 24) - 1
MAX_SOURCE_ID = (1 << 16) - 1
MAX_TIME_MS = (1 << 48) - 1
MAX_SIDE_BYTES = 8192
"""Evidence plus message id, encoded: longer text is refused at the edges."""


@dataclass(frozen=True, slots=True)
class Record:
    """A fact as stored: names replaced by numeric ids."""

    kind: Kind
    channel: Channel | None
    scope_id: int
    at_ms: int
    source_id: int
    expires_ms: int | None = None

    @property
    def slot(self) -> bytes:
        """The 4 bytes (kind/channel, scope) that a newer record of the same slot replaces."""
        head = KIND_CODES[self.kind] << 4 | CHANNEL_CODES[self.channel]
        return bytes([head]) + self.scope_id.to_bytes(3, "big")


def pack(record: Record) -> bytes:
    """The stored bytes of one record."""
    if not 0 <= record.scope_id <= MAX_ID:
        raise ValueError(f"sender id {record.scope_id} out of range")
    if not 0 < record.source_id <= MAX_SOURCE_ID:
        raise ValueError(f"source id {record.source_id} out of range")
    for name, ms in (("time", record.at_ms), ("expiry", record.expires_ms)):
        if ms is not None and not 0 <= ms <= MAX_TIME_MS:
            raise ValueError(f"{name} {ms} out of range (1970 to year 10889)")
    out = record.slot + record.at_ms.to_bytes(6, "big") + record.source_id.to_bytes(2, "big")
    if record.kind is Kind.REQUEST:
        if record.expires_ms is None:
            raise ValueError("a request record needs an expiry")
        out += record.expires_ms.to_bytes(6, "big")
    return out


RecordFields = tuple[Kind, Channel | None, int, int, int, int | None]
"""A record's fields in Record's order as a plain tuple: what a lookup decodes, without
building a Record for each."""


def unpack_fields(value: bytes) -> list[RecordFields]:
    """Every record in one consumer's value, as field tuples; raises ValueError on a
    damaged value."""
    records: list[RecordFields] = []
    pos, end = 0, len(value)
    while pos < end:
        head = value[pos]
        kind = KINDS.get(head >> 4)
        channel_code = head & 0x0F
        if kind is None or channel_code not in CHANNELS:
            raise ValueError(f"damaged record at byte {pos}")
        size = REQUEST_LEN if kind is Kind.REQUEST else BASE_LEN
        if pos + size > end:
            raise ValueError(f"truncated record at byte {pos}")
        records.append(
            (
                kind,
                CHANNELS[channel_code],
                int.from_bytes(value[pos + 1 : pos + 4], "big"),
                int.from_bytes(value[pos + 4 : pos + 10], "big"),
                int.from_bytes(value[pos + 10 : pos + 12], "big"),
                int.from_bytes(value[pos + 12 : pos + 18], "big") if size == REQUEST_LEN else None,
            )
        )
        pos += size
    return records


def unpack(value: bytes) -> list[Record]:
    """Every record in one consumer's value; raises ValueError on a damaged value."""
    return [Record(*fields) for fields in unpack_fields(value)]


def pack_side(evidence: str | None, message_id: str | None) -> bytes:
    """The side-table value; empty when there is nothing to keep. NUL is refused."""
    if not evidence and not message_id:
        return b""
    if "\x00" in (evidence or "") or "\x00" in (message_id or ""):
        raise ValueError("evidence and message id cannot contain NUL")
    return (evidence or "").encode() + b"\x00" + (message_id or "").encode()


def unpack_side(value: bytes | None) -> tuple[str | None, str | None]:
    """(evidence, message_id) from a side-table value."""
    if not value:
        return None, None
    evidence, _, message_id = value.decode(errors="replace").partition("\x00")
    return evidence or None, message_id or None
