"""Redis key names, buckets and consumer fields (filterd/storage/keys.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.storage.keys import (
    AUDIT,
    FACTS_PATTERN,
    LAYOUT,
    MAX_BUCKET_BITS,
    MIN_BUCKET_BITS,
    SENDER_NAMES,
    SENDERS,
    SOURCE_NAMES,
    SOURCES,
    bucket_name,
    bucket_of,
    consumer_field,
    consumer_from,
    facts_key,
    lookup_fields,
    side_key,
    side_key_for,
)

IDS = st.binary(min_size=10, max_size=10)
BITS = st.integers(min_value=MIN_BUCKET_BITS, max_value=MAX_BUCKET_BITS)


@given(IDS, BITS)
@settings(max_examples=300)
def test_consumer_round_trips_through_key_and_field(consumer_id: bytes, bits: int) -> None:
    """consumer_from(facts_key(id), consumer_field(id)) rebuilds the 10-byte id."""
    key = facts_key(consumer_id, bits)
    assert consumer_from(key, consumer_field(consumer_id), bits) == consumer_id


@pytest.mark.parametrize("bits", range(MIN_BUCKET_BITS, MAX_BUCKET_BITS + 1))
@pytest.mark.parametrize("consumer_id", [bytes(10), b"\xff" * 10, bytes(range(10))])
def test_consumer_round_trips_at_extremes(consumer_id: bytes, bits: int) -> None:
    """All-zero, all-one and mixed ids round-trip for every bucket width 16..24."""
    key = facts_key(consumer_id, bits)
    assert consumer_from(key, consumer_field(consumer_id), bits) == consumer_id


@given(st.lists(IDS, max_size=20), BITS)
@settings(max_examples=200)
def test_lookup_fields_name_each_consumer_as_facts_key_and_field(
    consumer_ids: list[bytes], bits: int
) -> None:
    """A lookup's (key, field) pairs, made in one pass, are facts_key and consumer_field
    of each consumer, in order."""
    expected = [(facts_key(c, bits), consumer_field(c)) for c in consumer_ids]
    assert lookup_fields(consumer_ids, bits) == expected


def test_consumer_field_is_id_bytes_2_to_9() -> None:
    """The field inside a bucket is the id without its first two bytes."""
    assert consumer_field(bytes(range(10))) == bytes(range(2, 10))


@given(IDS, BITS)
@settings(max_examples=200)
def test_bucket_of_is_in_range(consumer_id: bytes, bits: int) -> None:
    """A bucket number lies in 0 .. 2**bits - 1 and is the id's top `bits` bits."""
    bucket = bucket_of(consumer_id, bits)
    assert 0 <= bucket < 2**bits
    assert bucket == int.from_bytes(consumer_id, "big") >> (80 - bits)


@pytest.mark.parametrize("bits", [MIN_BUCKET_BITS, 20, MAX_BUCKET_BITS])
def test_bucket_of_extremes(bits: int) -> None:
    """The lowest id is in bucket 0 and the highest in the last bucket."""
    assert bucket_of(bytes(10), bits) == 0
    assert bucket_of(b"\xff" * 10, bits) == 2**bits - 1


def test_bucket_name_width() -> None:
    """Bucket names are zero-padded hex, as wide as the bucket bits need."""
    assert bucket_name(0, 16) == "0000"
    assert bucket_name(0xABC, 16) == "0abc"
    assert bucket_name(1, 17) == "00001"
    assert bucket_name(0xFFFFFF, 24) == "ffffff"


def test_facts_and_side_keys() -> None:
    """Keys are fd:r:{bucket} and fd:x:{bucket}, hash-tagged by bucket."""
    consumer_id = bytes.fromhex("abcd") + bytes(8)
    assert facts_key(consumer_id, 16) == "fd:r:{abcd}"
    assert side_key(consumer_id, 16) == "fd:x:{abcd}"
    assert facts_key(consumer_id, 20) == "fd:r:{abcd0}"
    assert re.fullmatch(FACTS_PATTERN.replace("*", ".*"), facts_key(consumer_id, 24))


@given(IDS, BITS)
@settings(max_examples=100)
def test_side_key_for_matches_side_key(consumer_id: bytes, bits: int) -> None:
    """side_key_for(facts key) is the side key of the same bucket (same hash tag)."""
    facts = facts_key(consumer_id, bits)
    side = side_key_for(facts)
    assert side == side_key(consumer_id, bits)
    assert side.startswith("fd:x:")
    assert side[side.index("{") :] == facts[facts.index("{") :]


def test_meta_keys_share_one_hash_tag() -> None:
    """Every meta key carries the {meta} hash tag so they share one Cluster slot."""
    for key in (SENDERS, SENDER_NAMES, SOURCES, SOURCE_NAMES, LAYOUT):
        assert key.startswith("fd:{meta}:")
    assert len({SENDERS, SENDER_NAMES, SOURCES, SOURCE_NAMES, LAYOUT, AUDIT}) == 6
