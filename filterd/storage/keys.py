"""Every Redis key name filterd uses, in one place (documented in docs/registry.md,
"Layout and key names").

Consumers are spread over 2**bucket_bits hash keys. A key's hash tag is its
bucket, so a bucket's facts and its side table live in one Cluster slot.

| key                      | type   | holds                                              |
|--------------------------|--------|----------------------------------------------------|
| fd:r:{BUCKET}            | hash   | field: consumer id bytes 2..9 → packed facts       |
| fd:x:{BUCKET}            | hash   | field: consumer field + fact slot → evidence/msgid |
| fd:{meta}:senders        | hash   | sender name → sender id                            |
| fd:{meta}:sender_names   | hash   | sender id → sender name                            |
| fd:{meta}:sources        | hash   | source text → source id                            |
| fd:{meta}:source_names   | hash   | source id → source text                            |
| fd:{meta}:layout         | hash   | bucket_bits, format version (fixed on first write) |
| fd:audit                 | stream | the audit log, bounded                             |
| fd:m:{CARRIER_ID}        | string | SMPP: carrier message id → client + its message id |
|                          |        | (expires after smpp.receipt_ttl)                   |
"""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "fd"
FACTS_PATTERN = f"{PREFIX}:r:*"
SENDERS = f"{PREFIX}:{{meta}}:senders"
SENDER_NAMES = f"{PREFIX}:{{meta}}:sender_names"
SOURCES = f"{PREFIX}:{{meta}}:sources"
SOURCE_NAMES = f"{PREFIX}:{{meta}}:source_names"
LAYOUT = f"{PREFIX}:{{meta}}:layout"
AUDIT = f"{PREFIX}:audit"
FORMAT_VERSION = "1"


def message_key(carrier_id: str) -> str:
    """The key mapping a carrier's SMPP message id back to the client's."""
    return f"{PREFIX}:m:{{{carrier_id}}}"


MIN_BUCKET_BITS = 16
MAX_BUCKET_BITS = 24


def bucket_of(consumer_id: bytes, bucket_bits: int) -> int:
    """The bucket number of a consumer: the top `bucket_bits` bits of its id."""
    return int.from_bytes(consumer_id[:4], "big") >> (32 - bucket_bits)


def bucket_name(bucket: int, bucket_bits: int) -> str:
    """Hex text of a bucket number, as wide as `bucket_bits` needs."""
    return format(bucket, f"0{(bucket_bits + 3) // 4}x")


def facts_key(consumer_id: bytes, bucket_bits: int) -> str:
    """The hash key holding this consumer's facts."""
    return f"{PREFIX}:r:{{{bucket_name(bucket_of(consumer_id, bucket_bits), bucket_bits)}}}"


def lookup_fields(consumer_ids: Sequence[bytes], bucket_bits: int) -> list[tuple[str, bytes]]:
    """The (facts key, field) of each consumer, as `facts_key` and `consumer_field`
    name them, in one pass (a lookup's whole batch)."""
    shift = 32 - bucket_bits
    width = f"0{(bucket_bits + 3) // 4}x"
    head = f"{PREFIX}:r:{{"
    return [
        (f"{head}{int.from_bytes(c[:4], 'big') >> shift:{width}}}}", c[2:10]) for c in consumer_ids
    ]


def side_key(consumer_id: bytes, bucket_bits: int) -> str:
    """The hash key holding evidence and message ids for this consumer's bucket."""
    return f"{PREFIX}:x:{{{bucket_name(bucket_of(consumer_id, bucket_bits), bucket_bits)}}}"


def side_key_for(facts_key_name: str) -> str:
    """The side key that belongs to a facts key."""
    return f"{PREFIX}:x:" + facts_key_name[len(f"{PREFIX}:r:") :]


def consumer_field(consumer_id: bytes) -> bytes:
    """The field of a consumer inside its bucket: id bytes 2..9."""
    return consumer_id[2:10]


def consumer_from(facts_key_name: str, field: bytes, bucket_bits: int) -> bytes:
    """Rebuild the 10-byte consumer id from its key and field (bucket_bits ≥ 16)."""
    tag = facts_key_name[facts_key_name.index("{") + 1 : facts_key_name.index("}")]
    top = int(tag, 16) << (32 - bucket_bits)
    return (top >> 16).to_bytes(2, "big") + field
