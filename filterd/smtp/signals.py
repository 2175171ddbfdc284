"""Commercial signals in a message's header (pure).

A transactional account's message that carries any of these is treated as
commercial (SPEC §1: signals can upgrade, never downgrade): List-Unsubscribe,
List-Id, `Precedence: bulk` or `list`, Feedback-ID, or a Subject that starts
with 广告 or AD (China's rule for commercial email; RFC 2047 encoded words are
decoded first, and a leading bracket such as 【 or [ is skipped).

Every field counts, not only the first of its name (a second Subject that
starts with AD is a signal), and a name is read as receivers read it: case
aside, and with the white space RFC 5322's obsolete syntax allows before the
colon (`List-Unsubscribe : <...>`).
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header

_SUBJECT_AD = re.compile(r"^[\s\[【(（<«]*(?:广告|廣告|AD(?![A-Za-z]))")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")


def header_block(message: bytes) -> bytes:
    """The header part of a message (up to the first empty line)."""
    match = _HEADER_END.search(message)
    return message[: match.start()] if match else message


def commercial_signals(message: bytes) -> list[str]:
    """The names of the commercial signals found in the header; empty when none."""
    fields = header_fields(message)
    found = [
        name for name in ("List-Unsubscribe", "List-Id", "Feedback-ID") if name.lower() in fields
    ]
    precedence = {value.strip().lower() for value in fields.get("precedence", [])}
    if precedence & {"bulk", "list"}:
        found.append("Precedence")
    if any(_SUBJECT_AD.match(_decoded(subject)) for subject in fields.get("subject", [])):
        found.append("Subject")
    return found


def header_fields(message: bytes) -> dict[str, list[str]]:
    """Every header field's value by its lower-cased name, in order, unfolded.

    Read as a receiving MTA reads it, not as Python's email parser does (which
    ends the header at the first line with white space before its colon, so
    that whatever follows would go unseen): a line without a colon is skipped;
    raw 8-bit (SMTPUTF8) text is read as UTF-8.
    """
    text = header_block(message).decode("utf-8", "replace")
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in _LINE_END.split(text):
        if line[:1] in (" ", "\t") and last is not None:
            last[-1] += " " + line.strip()  # a folded continuation
            continue
        name, colon, value = line.partition(":")
        name = name.strip(" \t").lower()
        if not colon or not name or any(c.isspace() for c in name):
            last = None
            continue
        last = fields.setdefault(name, [])
        last.append(value.strip())
    return fields


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value
