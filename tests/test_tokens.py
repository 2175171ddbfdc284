"""filterd.tokens: the signed one-click unsubscribe token codec (pure).

A token issued for (sender, channel, consumer, time) verifies back to exactly
that request under the same key or a retired one; anything else -- a flipped
bit, a truncated, extended or re-signed token, characters outside base64url --
is a TokenError with status 400 (404 for a sender not configured), and never
any other exception (the h11 fuzz invariant). Tokens are 43 characters, so
`unsubscribe+TOKEN` fits an e-mail local part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.identity import CONSUMER_ID_BYTES
from filterd.model import Channel
from filterd.tokens import (
    MAC_BYTES,
    TOKEN_BYTES,
    TOKEN_CHARS,
    TokenError,
    TokenKeys,
    Unsubscribe,
    derive_key,
    from_mailto_form,
    mailto_form,
    sender_table,
    sender_tag,
)

KEY = derive_key(b"registry secret of at least 32 bytes!")
OTHER_KEY = derive_key(b"another registry secret, 32 bytes or more")
NOW = 1_750_000_020  # a whole minute
DAY = 86_400
MAX_AGE = 400 * DAY
CONSUMER = bytes(range(CONSUMER_ID_BYTES))
SENDERS = sender_table(["acme", "beta"])
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
MAX_NOW = (2**32 - 1) * 60  # the last minute the 4-byte issue time holds


def keys(current: bytes = KEY, *retired: bytes, max_age_s: int = MAX_AGE) -> TokenKeys:
    """Token keys with `current` signing and `retired` still accepted."""
    return TokenKeys(current, retired, max_age_s=max_age_s)


def issue(
    sender: str = "acme", channel: Channel = Channel.EMAIL, at: int = NOW, key: bytes = KEY
) -> str:
    """A token for CONSUMER issued at `at` under `key`."""
    return keys(key).issue(sender, channel, CONSUMER, at)


def raw(token: str) -> bytes:
    """The 32 bytes a token spells."""
    return base64.urlsafe_b64decode(token + "=")


def spell(data: bytes) -> str:
    """The token text of raw bytes."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rejected(token: str, *, senders: dict[bytes, str] = SENDERS, now: int = NOW) -> TokenError:
    """The TokenError verifying `token` raises (fails the test when it verifies)."""
    with pytest.raises(TokenError) as info:
        keys().verify(token, senders, now)
    return info.value


# ---- round trip ---------------------------------------------------------------------


@given(
    sender=st.text(min_size=1, max_size=40),
    channel=st.sampled_from(Channel),
    consumer=st.binary(min_size=CONSUMER_ID_BYTES, max_size=CONSUMER_ID_BYTES),
    now=st.integers(min_value=0, max_value=MAX_NOW),
    later=st.integers(min_value=0, max_value=MAX_AGE - 60),
)
@example(sender="退订商家", channel=Channel.SMS, consumer=b"\0" * 10, now=0, later=0)
def test_issue_verify_round_trip(
    sender: str, channel: Channel, consumer: bytes, now: int, later: int
) -> None:
    """A token verifies, at any time within max_age, to the sender, channel and consumer it
    was issued for, with the issue time rounded down to the minute."""
    token_keys = keys()
    token = token_keys.issue(sender, channel, consumer, now)
    assert len(token) == TOKEN_CHARS
    assert set(token) <= set(B64URL)
    wanted = token_keys.verify(token, sender_table([sender, "other"]), now + later)
    assert wanted == Unsubscribe(sender, channel, consumer, now // 60 * 60)


@pytest.mark.parametrize(
    ("channel", "first"), [(Channel.EMAIL, 0x10), (Channel.SMS, 0x11), (Channel.VOICE, 0x12)]
)
def test_first_byte_is_version_and_channel(channel: Channel, first: int) -> None:
    """Byte 0 is version 1 in the high nibble, the channel in the low: 0 email, 1 sms,
    2 voice (a call's one-click refusal stops calls)."""
    token = issue(channel=channel)
    assert raw(token)[0] == first
    assert keys().verify(token, SENDERS, NOW).channel is channel


def test_tokens_differ_by_every_field() -> None:
    """Sender, channel, consumer, minute and key each change the token."""
    base = issue()
    variants = {
        issue("beta"),
        issue(channel=Channel.SMS),
        keys().issue("acme", Channel.EMAIL, b"\xff" * CONSUMER_ID_BYTES, NOW),
        issue(at=NOW + 60),
        issue(key=OTHER_KEY),
    }
    assert base not in variants
    assert len(variants) == 5
    assert issue(at=NOW + 59) == base  # the same minute spells the same token


def test_token_holds_no_address_and_fits_a_local_part() -> None:
    """43 base64url characters (32 bytes); `unsubscribe+TOKEN` fits 64 octets; the token
    carries the consumer id, never an address."""
    token = issue()
    assert (len(token), len(raw(token)), TOKEN_BYTES) == (43, 32, 32)
    assert len(f"unsubscribe+{token}".encode()) <= 64
    assert raw(token)[6:16] == CONSUMER


# ---- altered tokens ---------------------------------------------------------------


@pytest.mark.parametrize("bit", range(TOKEN_BYTES * 8))
def test_any_single_bit_flip_is_rejected(bit: int) -> None:
    """Flipping any one of the 256 bits of a valid token gives 400, whatever field it hits."""
    data = bytearray(raw(issue()))
    data[bit // 8] ^= 1 << (bit % 8)
    error = rejected(spell(bytes(data)))
    assert error.status == 400


@pytest.mark.parametrize("length", range(TOKEN_CHARS))
def test_truncated_token_is_rejected(length: int) -> None:
    """Every proper prefix of a token (down to empty) is rejected with 400."""
    assert rejected(issue()[:length]).status == 400


@pytest.mark.parametrize("suffix", ["A", "AA", "AAAA", "=", "==", "%3D", "\n", " "])
def test_extended_token_is_rejected(suffix: str) -> None:
    """A token with anything appended (padding, more base64, whitespace) is rejected."""
    assert rejected(issue() + suffix).status == 400


@pytest.mark.parametrize("char", ["+", "/", "=", ".", "~", "*", " ", "é", "\x00", "Ａ"])
def test_non_base64url_characters_are_rejected(char: str) -> None:
    """A token of the right length holding a character outside base64url is rejected."""
    token = issue()
    assert rejected(token[:10] + char + token[11:]).status == 400


def test_non_canonical_last_character_is_rejected() -> None:
    """The last character carries 2 padding bits: setting them gives a token that decodes
    to the same bytes but is not the canonical spelling, and it is rejected."""
    token = issue()
    last = B64URL.index(token[-1])
    assert last & 0b11 == 0
    for low in (1, 2, 3):
        altered = token[:-1] + B64URL[last | low]
        assert raw(altered) == raw(token)  # same bytes once decoded leniently
        assert rejected(altered).status == 400


def test_token_of_another_key_is_rejected() -> None:
    """A token signed with a key the verifier does not hold is rejected (400)."""
    assert rejected(issue(key=OTHER_KEY)).status == 400


def test_re_signed_with_another_key_is_rejected() -> None:
    """Changing the sender tag and recomputing the tag with a key of one's own (keeping
    the key id byte of the real key) is rejected."""
    data = bytearray(raw(issue()))
    data[16:20] = sender_tag("beta")
    body = bytes(data[: TOKEN_BYTES - MAC_BYTES])
    forged = body + hmac.new(OTHER_KEY, body, hashlib.sha256).digest()[:MAC_BYTES]
    assert rejected(spell(forged)).status == 400


def test_registry_secret_itself_does_not_sign() -> None:
    """Tokens are signed with a key derived from the secret, not the secret: a token whose
    tag is made with the raw secret does not verify."""
    secret = b"registry secret of at least 32 bytes!"
    assert derive_key(secret) == KEY != secret
    assert len(KEY) == 32
    with pytest.raises(TokenError):
        keys().verify(issue(key=secret), SENDERS, NOW)


@pytest.mark.parametrize(
    ("first", "reason"),
    [(0x20, "unsupported token version"), (0x15, "unsupported token version")],
)
def test_signed_token_with_unknown_version_or_channel_is_rejected(first: int, reason: str) -> None:
    """A correctly signed token of another version (2) or an unknown channel code (5) is
    still refused with 400."""
    data = bytearray(raw(issue()))
    data[0] = first
    body = bytes(data[: TOKEN_BYTES - MAC_BYTES])
    token = spell(body + hmac.new(KEY, body, hashlib.sha256).digest()[:MAC_BYTES])
    error = rejected(token)
    assert (error.status, error.reason) == (400, reason)


@given(st.text(max_size=60))
@example("")
@example("A" * TOKEN_CHARS)
@example("_" * TOKEN_CHARS)
@example("-" * TOKEN_CHARS)
def test_any_text_verifies_or_raises_token_error(text: str) -> None:
    """Any string either verifies or raises TokenError (400/404), never anything else."""
    try:
        wanted = keys().verify(text, SENDERS, NOW)
    except TokenError as exc:
        status = exc.status
    else:
        status = 200
        assert wanted.sender in SENDERS.values()
    assert status in (200, 400, 404)


@given(st.binary(min_size=TOKEN_BYTES, max_size=TOKEN_BYTES))
def test_random_32_bytes_never_verify(data: bytes) -> None:
    """Random well-formed 43-character tokens are rejected with TokenError 400 (the tag
    is not guessed)."""
    assert rejected(spell(data)).status == 400


# ---- time -----------------------------------------------------------------------------


def test_expiry_boundary() -> None:
    """A token verifies up to max_age after its issue minute, and is 400 'expired' after."""
    token_keys = keys(max_age_s=DAY)
    token = token_keys.issue("acme", Channel.EMAIL, CONSUMER, NOW)
    assert token_keys.verify(token, SENDERS, NOW + DAY).sender == "acme"
    with pytest.raises(TokenError) as info:
        token_keys.verify(token, SENDERS, NOW + DAY + 1)
    assert (info.value.status, info.value.reason) == (400, "token expired")


def test_issued_in_the_future_is_rejected() -> None:
    """A token from up to 5 minutes ahead (clock skew) verifies; further ahead is 400."""
    token = issue(at=NOW)
    assert keys().verify(token, SENDERS, NOW - 300).sender == "acme"
    error = rejected(token, now=NOW - 301)
    assert (error.status, error.reason) == (400, "token issued in the future")


def test_negative_issue_time_is_clamped_to_the_epoch() -> None:
    """A clock before 1970 issues a token dated at the epoch (no struct error)."""
    token = keys().issue("acme", Channel.EMAIL, CONSUMER, -5)
    assert keys().verify(token, SENDERS, 0).issued_s == 0


# ---- senders --------------------------------------------------------------------


def test_unknown_sender_is_404() -> None:
    """A genuine token for a sender not in the table is a TokenError with status 404."""
    error = rejected(issue("gamma"))
    assert (error.status, error.reason) == (404, "unknown sender")


def test_bad_and_unknown_sender_check_signature_first() -> None:
    """An altered token naming an unknown sender is 400, not 404: nothing about the sender
    table leaks before the signature is checked."""
    data = bytearray(raw(issue("gamma")))
    data[-1] ^= 1
    assert rejected(spell(bytes(data))).status == 400


def test_sender_table_maps_tags_to_names() -> None:
    """sender_table maps each sender's 4-byte tag to its name; repeats are fine."""
    table = sender_table(["acme", "beta", "acme"])
    assert table == {sender_tag("acme"): "acme", sender_tag("beta"): "beta"}
    assert len(sender_tag("acme")) == 4
    assert sender_tag("acme") == hashlib.sha256(b"acme").digest()[:4]


def test_sender_table_refuses_a_tag_collision() -> None:
    """Two sender names sharing a token tag are refused, naming both."""
    first, second = "brand-64174", "brand-78693"
    assert sender_tag(first) == sender_tag(second)
    with pytest.raises(ValueError, match="share a token tag") as info:
        sender_table(["acme", first, second])
    assert first in str(info.value)
    assert second in str(info.value)


# ---- keys -----------------------------------------------------------------------


def test_retired_key_still_verifies() -> None:
    """After rotation, a token signed with a retired key verifies; the new key signs."""
    old_token = issue(key=OTHER_KEY)
    rotated = keys(KEY, OTHER_KEY)
    assert rotated.verify(old_token, SENDERS, NOW).consumer == CONSUMER
    new_token = rotated.issue("acme", Channel.EMAIL, CONSUMER, NOW)
    assert new_token == issue(key=KEY)
    assert keys(KEY).verify(new_token, SENDERS, NOW).sender == "acme"


def test_key_not_listed_does_not_verify() -> None:
    """Once a key is dropped from the retired list its tokens are rejected."""
    third = derive_key(b"a third secret that is long enough to use")
    with pytest.raises(TokenError):
        keys(KEY, third).verify(issue(key=OTHER_KEY), SENDERS, NOW)


def test_max_age_applies_to_retired_keys_too() -> None:
    """An old token under a retired key is still refused once older than max_age."""
    old_token = issue(key=OTHER_KEY, at=NOW)
    with pytest.raises(TokenError, match="expired"):
        keys(KEY, OTHER_KEY, max_age_s=DAY).verify(old_token, SENDERS, NOW + 2 * DAY)


@pytest.mark.parametrize(
    ("current", "retired", "max_age"),
    [(b"short", (), DAY), (KEY, (b"short",), DAY), (KEY, (), 0), (KEY, (), -1)],
)
def test_bad_keys_or_age_are_refused(
    current: bytes, retired: tuple[bytes, ...], max_age: int
) -> None:
    """Keys under 32 bytes and a max_age below 1 second are ValueErrors."""
    with pytest.raises(ValueError, match=r"key|max_age"):
        TokenKeys(current, retired, max_age_s=max_age)


@pytest.mark.parametrize("size", [0, 9, 11, 32])
def test_issue_needs_a_consumer_id(size: int) -> None:
    """issue() takes a 10-byte consumer id only (never an address)."""
    with pytest.raises(ValueError, match="consumer id"):
        keys().issue("acme", Channel.EMAIL, b"x" * size, NOW)


def test_token_error_is_a_value_error_with_status() -> None:
    """TokenError carries a reason and an HTTP status (default 400)."""
    error = TokenError("invalid token")
    assert isinstance(error, ValueError)
    assert (error.reason, error.status, str(error)) == ("invalid token", 400, "invalid token")
    assert TokenError("unknown sender", status=404).status == 404


@given(st.binary(min_size=10, max_size=10), st.sampled_from(list(Channel)))
@settings(max_examples=200)
def test_mailto_spelling_round_trips_in_any_case(consumer: bytes, channel: Channel) -> None:
    """mailto_form spells a token in 52 lower-case base32 characters; from_mailto_form
    gives the same token back from any case, and None for anything that is not one."""
    token = TokenKeys(bytes(32), max_age_s=DAY).issue("acme", channel, consumer, 1_790_000_000)
    spelt = mailto_form(token)
    assert len(spelt) == 52
    assert spelt == spelt.lower()
    assert from_mailto_form(spelt) == from_mailto_form(spelt.upper()) == token
    assert from_mailto_form(spelt[:-1]) is None
    assert from_mailto_form(spelt[:-1] + "9") is None  # not base32
    assert from_mailto_form(token) is None  # the base64url spelling is not a mailto one
