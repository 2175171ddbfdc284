"""Signed one-click unsubscribe tokens (RFC 8058 URLs and mailto local parts).

A token names one sender, one channel and one consumer (by its registry hash,
never the address) and when it was issued; an HMAC-SHA256 tag truncated to 96
bits makes it unforgeable. 32 bytes in all, base64url without padding: 43
characters; in a mailto local part it is spelt in lower-case base32 (52
characters, `mailto_form`), so `unsubscribe+TOKEN@domain` fits the 64 octets of
a local part and survives mail systems that change its case.

Layout (big-endian):

    0      version (high nibble, 1) | channel (low nibble: 0 email, 1 sms, 2 voice)
    1      key id: first byte of SHA-256 of the signing key
    2..5   issue time, minutes since the Unix epoch
    6..15  consumer id (10 bytes, identity.CONSUMER_ID_BYTES)
    16..19 sender tag: first 4 bytes of SHA-256 of the sender name
    20..31 tag: HMAC-SHA256(key, bytes 0..19), first 12 bytes

The signing key is derived from the registry secret unless a token secret of
its own is configured. Rotation: keep the old key among the retired keys; a
token verifies under any key it names, current or retired, as long as it is
not older than `max_age_s`. Pure: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from filterd.identity import CONSUMER_ID_BYTES
from filterd.model import Channel, Fact, Kind

VERSION = 1
TOKEN_BYTES = 32
TOKEN_CHARS = 43
MAC_BYTES = 12
_SIGNED = TOKEN_BYTES - MAC_BYTES
_CHANNELS = {Channel.EMAIL: 0, Channel.SMS: 1, Channel.VOICE: 2}
_CHANNEL_OF = {code: channel for channel, code in _CHANNELS.items()}
_HEAD = struct.Struct(">BBI")
_KEY_LABEL = b"filterd one-click unsubscribe token v1"
_FUTURE_SLACK_S = 300
"""Clock difference between hosts tolerated for a token issued 'in the future'."""
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenError(ValueError):
    """A token that must not be honoured; `status` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a verified token asks for: refuse `sender` on `channel` for `consumer`."""

    sender: str
    channel: Channel
    consumer: bytes
    issued_s: int

    def refusal(self, *, source: str, how: str, peer: str | None, now_s: float) -> Fact:
        """The refusal this opt-out records: scope the sender, the token's channel;
        evidence is how and when it came, and from which client address."""
        when = datetime.fromtimestamp(now_s, UTC).isoformat(timespec="seconds")
        return Fact(
            kind=Kind.REFUSAL,
            sender=self.sender,
            channel=self.channel,
            at_ms=int(now_s * 1000),
            source=source,
            evidence=f"{how} at {when} from {peer or 'unknown'}",
        )


MAILTO_CHARS = 52
"""A token spelt for a mailto local part: base32, lower case, no padding (52 characters),
so that mail systems that change the case of local parts cannot break it."""


def mailto_form(token: str) -> str:
    """The case-insensitive spelling of a (base64url) token, for `unsubscribe+…@`."""
    raw = _decode(token)
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def from_mailto_form(text: str) -> str | None:
    """The base64url token a mailto spelling stands for (any case), or None if it is none."""
    if len(text) != MAILTO_CHARS or not text.isascii():
        return None
    upper = text.upper()
    try:
        raw = base64.b32decode(upper + "====")
    except binascii.Error:
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != upper:
        return None  # one spelling per token (the last character's spare bits are zero)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def derive_key(secret: bytes) -> bytes:
    """The token signing key derived from the registry secret (not the secret itself)."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def sender_tag(sender: str) -> bytes:
    """The 4-byte tag that stands for a sender name inside a token."""
    return hashlib.sha256(sender.encode()).digest()[:4]


def sender_table(senders: Iterable[str]) -> dict[bytes, str]:
    """Tag → sender name for the configured senders; two names with one tag are refused."""
    table: dict[bytes, str] = {}
    for sender in senders:
        tag = sender_tag(sender)
        if table.get(tag, sender) != sender:
            raise ValueError(f"senders {table[tag]!r} and {sender!r} share a token tag; rename one")
        table[tag] = sender
    return table


def _key_id(key: bytes) -> int:
    return hashlib.sha256(key).digest()[0]


class TokenKeys:
    """The current signing key, the retired keys still accepted, and the age limit."""

    def __init__(self, current: bytes, retired: Sequence[bytes] = (), *, max_age_s: int) -> None:
        if len(current) < 32 or any(len(key) < 32 for key in retired):
            raise ValueError("token keys must be at least 32 bytes")
        if max_age_s < 1:
            raise ValueError("max_age_s must be positive")
        self._current = current
        self._keys = [current, *retired]
        self.max_age_s = max_age_s

    def issue(self, sender: str, channel: Channel, consumer: bytes, now_s: int) -> str:
        """A token for (sender, channel, consumer), issued at `now_s`."""
        if len(consumer) != CONSUMER_ID_BYTES:
            raise ValueError(f"a consumer id has {CONSUMER_ID_BYTES} bytes")
        head = _HEAD.pack(
            VERSION << 4 | _CHANNELS[channel], _key_id(self._current), max(now_s, 0) // 60
        )
        body = head + consumer + sender_tag(sender)
        raw = body + _mac(self._current, body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str, senders: Mapping[bytes, str], now_s: int) -> Unsubscribe:
        """The request a token carries, or TokenError (400 bad/expired, 404 unknown sender)."""
        raw = _decode(token)
        version_channel, key_id, minutes = _HEAD.unpack_from(raw)
        signed, tag = raw[:_SIGNED], raw[_SIGNED:]
        keys = [key for key in self._keys if _key_id(key) == key_id]
        if not any(hmac.compare_digest(_mac(key, signed), tag) for key in keys):
            raise TokenError("invalid token")
        # only a correctly signed token gets past this point
        if version_channel >> 4 != VERSION or (version_channel & 0x0F) not in _CHANNEL_OF:
            raise TokenError("unsupported token version")
        issued_s = minutes * 60
        if issued_s > now_s + _FUTURE_SLACK_S:
            raise TokenError("token issued in the future")
        if now_s - issued_s > self.max_age_s:
            raise TokenError("token expired")
        sender = senders.get(raw[16:20])
        if sender is None:
            raise TokenError("unknown sender", status=404)
        return Unsubscribe(sender, _CHANNEL_OF[version_channel & 0x0F], raw[6:16], issued_s)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]


def _decode(token: str) -> bytes:
    if len(token) != TOKEN_CHARS or not token.isascii():
        raise TokenError("invalid token")
    data = token.encode("ascii")
    if not _B64_ALPHABET.issuperset(data):
        raise TokenError("invalid token")
    try:
        raw = base64.urlsafe_b64decode(data + b"=")
    except binascii.Error:
        raise TokenError("invalid token") from None
    # 43 characters carry 258 bits: the last character's low 2 bits must be 0,
    # so that each token has exactly one spelling.
    if len(raw) != TOKEN_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=") != data:
        raise TokenError("invalid token")
    return raw
