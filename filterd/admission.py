"""Raw recipient text → an Address, or why it is not one: one rule set for every
front end (pure).

The SMTP relay and the Postfix policy service take email recipients
(`email_recipient`); the SMPP relay (and every later SMS front end) takes phone
numbers with their type of number (`phone_recipient`); a front end told the
channel with the address (a dialer asking about a call: voice) takes
`recipient`. The same text gets the same verdict wherever it arrives:

- surrounding spaces and tabs are trimmed;
- an email recipient needs an `@` ("not an email address"); a phone recipient
  is never an email address (no email consent can let an SMS or a call
  through: "not a phone number");
- text that is not valid UTF-8 (undecodable bytes arrive as surrogate escapes),
  or that holds control characters (or, in an email address, spaces), is
  refused before anything else looks at it: it could not be relayed or echoed
  safely (a phone number may be written with spaces: `+86 138 …`);
- then the address is normalised (`filterd.normalize`), whose reason names
  what is wrong.

`Refused.shown` is the text as a reply may echo it: ASCII-safe, undecodable
bytes and control characters as `?`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from filterd.errors import InvalidAddress
from filterd.model import Address, Channel
from filterd.normalize import normalize, normalize_phone

INTERNATIONAL = 1
"""SMPP/CMPP type of number 1: international digits without the `+`."""
_FORBIDDEN = frozenset(chr(c) for c in [*range(0x21), 0x7F])
"""Spaces and control characters."""
_SPACES_OR_CONTROLS = re.compile("[\x00-\x20\x7f]")
_CONTROLS = re.compile("[\x00-\x1f\x7f]")
NOT_UTF8 = "not valid UTF-8"
UNUSABLE = "empty, or has spaces or control characters"
NOT_EMAIL = "not an email address"
NOT_PHONE = "not a phone number"


@dataclass(frozen=True, slots=True)
class Refused:
    """A recipient text that names no usable address, and why."""

    reason: str
    shown: str


def unusable(raw: str, *, spaces: bool = False) -> str | None:
    """Why `raw` cannot be used at all (relayed, echoed, looked up), or None; with
    `spaces`, a space is allowed (between the digits of a phone number)."""
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            return NOT_UTF8
    if not raw or (_CONTROLS if spaces else _SPACES_OR_CONTROLS).search(raw):
        return UNUSABLE
    return None


def shown(raw: str) -> str:
    """`raw` as a reply may echo it: undecodable bytes and control characters as `?`."""
    text = raw.encode("utf-8", "replace").decode("utf-8")
    return "".join("?" if c in _FORBIDDEN and c != " " else c for c in text)


def email_recipient(raw: str, default_region: str | None) -> Address | Refused:
    """The email address `raw` names (SMTP RCPT, Postfix's `recipient`), or why not."""
    text = raw.strip(" \t")
    problem = NOT_EMAIL if "@" not in text else unusable(text)
    if problem is not None:
        return Refused(problem, shown(raw))
    try:
        return normalize(text, default_region)
    except InvalidAddress as exc:
        return Refused(exc.reason, shown(raw))


def phone_recipient(raw: str, ton: int, default_region: str | None) -> Address | Refused:
    """The phone number an SMS address names (international digits when `ton` is 1,
    else read with `default_region`), or why not."""
    digits = raw.strip(" \t")
    problem = unusable(digits, spaces=True)
    if problem is not None:
        return Refused(problem, shown(raw))
    if ton == INTERNATIONAL and not digits.startswith("+"):
        digits = "+" + digits
    try:
        return Address(normalize_phone(digits, default_region), Channel.SMS)
    except InvalidAddress as exc:
        return Refused(exc.reason, shown(raw))


def recipient(raw: str, channel: Channel, default_region: str | None) -> Address | Refused:
    """The address `raw` names as a recipient on `channel`, or why not: an email
    address for email, a phone number (E.164, or national read with
    `default_region`) for sms and voice."""
    if channel is Channel.EMAIL:
        return email_recipient(raw, default_region)
    text = raw.strip(" \t")
    problem = NOT_PHONE if "@" in text else unusable(text, spaces=True)
    if problem is not None:
        return Refused(problem, shown(raw))
    try:
        return Address(normalize_phone(text, default_region), channel)
    except InvalidAddress as exc:
        return Refused(exc.reason, shown(raw))
