"""Commercial signals in a message's header (pure).

A transactional account's message that carries any of these is treated as
commercial (SPEC §1: signals can upgrade, never downgrade): List-Unsubscribe,
List-Id, `Precedence: bulk` or `list`, Feedback-ID, or a Subject that starts
with 广告 or AD (China's rule for commercial email; RFC 2047 encoded words are
decoded first, and a leading bracket such as 【 or [ is skipped).
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

_SUBJECT_AD = re.compile(r"^[\s\[【(（<«]*(?:广告|廣告|AD(?![A-Za-z]))")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_block(message: bytes) -> bytes:
    """The header part of a message (up to the first empty line)."""
    match = _HEADER_END.search(message)
    return message[: match.start()] if match else message


def commercial_signals(message: bytes) -> list[str]:
    """The names of the commercial signals found in the header; empty when none."""
    headers = _headers(message)
    found = [name for name in ("List-Unsubscribe", "List-Id", "Feedback-ID") if name in headers]
    precedence = {value.strip().lower() for value in headers.get_all("Precedence", [])}
    if precedence & {"bulk", "list"}:
        found.append("Precedence")
    subject = headers.get("Subject")
    if subject is not None and _SUBJECT_AD.match(_decoded(str(subject))):
        found.append("Subject")
    return found


def is_dkim_signed(message: bytes) -> bool:
    """True when the header carries a DKIM-Signature (its headers must not be rewritten)."""
    return "DKIM-Signature" in _headers(message)


def _headers(message: bytes) -> Message:
    """The header fields; raw 8-bit (SMTPUTF8) text is read as UTF-8."""
    text = header_block(message).decode("utf-8", "replace")
    return HeaderParser(policy=compat32).parsestr(text)


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value
