"""Consumer ids: truncated HMAC-SHA256 of the canonical address (filterd/identity.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.identity import (
    CONSUMER_ID_BYTES,
    MIN_SECRET_BYTES,
    ConsumerHasher,
    consumer_hex,
)
from filterd.model import Address, Channel

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
PHONE = Address("+8613800138000", Channel.SMS)
EMAIL = Address("john@example.com", Channel.EMAIL)


def test_id_is_ten_bytes() -> None:
    """A consumer id is 10 bytes for phone and email addresses."""
    hasher = ConsumerHasher(SECRET)
    assert CONSUMER_ID_BYTES == 10
    assert len(hasher.consumer_id(PHONE)) == 10
    assert len(hasher.consumer_id(EMAIL)) == 10


def test_id_is_truncated_hmac_sha256() -> None:
    """The id is the first 10 bytes of HMAC-SHA256(secret, canonical address)."""
    expected = hmac.new(SECRET, PHONE.canonical.encode(), hashlib.sha256).digest()[:10]
    assert ConsumerHasher(SECRET).consumer_id(PHONE) == expected


@pytest.mark.parametrize("length", [32, 63, 64, 65, 200])
def test_id_is_the_standard_hmac_for_secrets_of_any_length(length: int) -> None:
    """Secrets shorter than, as long as and longer than SHA-256's 64-byte block (the
    last ones hashed first, as HMAC does) give exactly the standard library's HMAC."""
    secret = bytes(range(256))[:length]
    hasher = ConsumerHasher(secret)
    for address in (PHONE, EMAIL, Address("用户@例子.中国", Channel.EMAIL)):
        expected = hmac.new(secret, address.canonical.encode(), hashlib.sha256).digest()
        assert hasher.consumer_id(address) == expected[:10]


def test_id_is_deterministic_per_secret() -> None:
    """The same secret gives the same id, from one hasher or from two."""
    first = ConsumerHasher(SECRET)
    assert first.consumer_id(EMAIL) == first.consumer_id(EMAIL)
    assert first.consumer_id(EMAIL) == ConsumerHasher(bytes(SECRET)).consumer_id(EMAIL)


def test_hasher_is_reusable() -> None:
    """Hashing one address does not disturb the next (the padded-key states are copied)."""
    hasher = ConsumerHasher(SECRET)
    before = hasher.consumer_id(PHONE)
    hasher.consumer_id(EMAIL)
    assert hasher.consumer_id(PHONE) == before


def test_ids_differ_across_secrets() -> None:
    """Another secret gives another id for the same address."""
    assert ConsumerHasher(SECRET).consumer_id(PHONE) != ConsumerHasher(OTHER_SECRET).consumer_id(
        PHONE
    )


def test_ids_differ_across_addresses() -> None:
    """Different addresses get different ids under one secret."""
    hasher = ConsumerHasher(SECRET)
    other_phone = Address("+8613800138001", Channel.SMS)
    ids = {hasher.consumer_id(a) for a in (PHONE, other_phone, EMAIL)}
    assert len(ids) == 3


def test_id_depends_only_on_canonical_text() -> None:
    """The id keys on the canonical address text, not on the channel tag."""
    hasher = ConsumerHasher(SECRET)
    assert hasher.consumer_id(Address("x@example.com", Channel.EMAIL)) == hasher.consumer_id(
        Address("x@example.com", Channel.SMS)
    )


@given(
    st.lists(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
        min_size=2,
        max_size=20,
        unique=True,
    )
)
@settings(max_examples=50)
def test_distinct_addresses_get_distinct_ids(texts: list[str]) -> None:
    """Distinct canonical texts hash to distinct 10-byte ids."""
    hasher = ConsumerHasher(SECRET)
    ids = [hasher.consumer_id(Address(t, Channel.EMAIL)) for t in texts]
    assert all(len(i) == 10 for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("size", [0, 1, 16, MIN_SECRET_BYTES - 1])
def test_short_secret_is_rejected(size: int) -> None:
    """A secret shorter than 32 bytes is rejected."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ConsumerHasher(b"k" * size)


def test_secret_of_exactly_minimum_length_is_accepted() -> None:
    """A 32-byte secret is long enough."""
    assert MIN_SECRET_BYTES == 32
    assert len(ConsumerHasher(b"k" * 32).consumer_id(PHONE)) == 10


def test_consumer_hex() -> None:
    """consumer_hex prints the id as 20 lower-case hex digits."""
    assert consumer_hex(bytes.fromhex("00ff10ab") + b"\x01" * 6) == "00ff10ab010101010101"
    text = consumer_hex(ConsumerHasher(SECRET).consumer_id(PHONE))
    assert len(text) == 20
    assert text == text.lower()
    assert bytes.fromhex(text) == ConsumerHasher(SECRET).consumer_id(PHONE)


def test_hex_never_contains_the_address() -> None:
    """The printable hash reveals no part of the address it was made from."""
    text = consumer_hex(ConsumerHasher(SECRET).consumer_id(PHONE))
    assert "13800138000" not in text
