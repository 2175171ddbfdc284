"""Abuse Reporting Format reports (RFC 5965), read: what a mailbox provider's
feedback loop says about a message it returns.

A report is a message whose top-level Content-Type is `multipart/report;
report-type=feedback-report`; anything else is not one (`read_report` gives
None). Of a report, the top-level parts are read, never deeper: the
machine-readable `message/feedback-report` part (Feedback-Type, Arrival-Date
or its older spelling Received-Date, Source-IP) and the returned original,
`message/rfc822` or its headers alone (`text/rfc822-headers`; RFC 6532/6533's
`message/global` and `message/global-headers` too), of which only the header
block is parsed: the List-Unsubscribe targets it carries. Nested parts are
never parsed, so depth costs nothing; the size is bounded by the listener's
message size limit and the number of top-level parts by MAX_PARTS. A report
that cannot be read in full is still a report, with `problem` saying why.

The standard library's email package reads every header block and decodes
every part's transfer encoding (policy.default). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default
from email.utils import parsedate_to_datetime

MAX_PARTS = 16
"""Top-level parts read at most (a report has three)."""
MAX_FIELD_CHARS = 80
"""Longest Arrival-Date or Source-IP value kept (they end up in evidence)."""
ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"}
)
"""Content types of the returned original (or its headers)."""


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """What one report says: its type, when and from where the reported message
    arrived at the provider, and the List-Unsubscribe targets of the original."""

    feedback_type: str = ""
    """Lower case (`abuse`, `fraud`, `not-spam`, …); empty when the report has none."""
    arrival_date: str | None = None
    """ISO 8601 in UTC when it parses as a mail date, else the text as written."""
    source_ip: str | None = None
    """The IP address the reported message came from, when given and valid."""
    unsubscribe: tuple[str, ...] = ()
    """Each `<…>` target of the original's List-Unsubscribe fields, in order."""
    problem: str | None = None
    """Why the report could not be read in full (`no_parts`, `too_many_parts`,
    `no_feedback_part`, `no_original`, `unparsable`), or None."""

    @property
    def abuse(self) -> bool:
        """Whether this is a complaint (Feedback-Type: abuse)."""
        return self.feedback_type == "abuse"


def read_report(content: bytes) -> FeedbackReport | None:
    """The feedback report `content` is, or None when it is not one."""
    head, body = _split(content)
    boundary = _report_boundary(head)
    if boundary is None:
        return None
    parts = _parts(body, boundary) if boundary else []
    if not parts or len(parts) > MAX_PARTS:
        return FeedbackReport(problem="too_many_parts" if parts else "no_parts")
    try:
        return _read_parts(parts)
    except Exception:  # as above: a malformed part is a report we cannot read
        return FeedbackReport(problem="unparsable")


def _report_boundary(head: bytes) -> str | None:
    """The top-level boundary of a feedback report ('' when it declares none), or
    None when the header block is not that of a feedback report."""
    try:
        top = _headers(head)
        report_type = str(top.get_param("report-type", "")).strip().lower()
        if top.get_content_type() != "multipart/report" or report_type != "feedback-report":
            return None
        return top.get_boundary() or ""
    except Exception:  # the email package raises on some malformed fields (CPython
        return None  # issues): what cannot be read as a report is not one


def _read_parts(parts: list[bytes]) -> FeedbackReport:
    """The report its top-level parts make: the first feedback part, the first original."""
    fields: Message | None = None
    original: Message | None = None
    for part in parts:
        head, _ = _split(part)
        kind = _headers(head).get_content_type()
        if kind == "message/feedback-report" and fields is None:
            fields = _headers(_decoded_body(part))
        elif kind in ORIGINAL_TYPES and original is None:
            original = _headers(_decoded_body(part))
    if fields is None:
        return FeedbackReport(problem="no_feedback_part")
    targets = _targets(original) if original is not None else ()
    return FeedbackReport(
        feedback_type=_field(fields, "Feedback-Type").lower(),
        arrival_date=_date(_field(fields, "Arrival-Date") or _field(fields, "Received-Date")),
        source_ip=_ip(_field(fields, "Source-IP")),
        unsubscribe=targets,
        problem=None if original is not None else "no_original",
    )


def unsubscribe_targets(value: str) -> tuple[str, ...]:
    """The `<…>` targets of one List-Unsubscribe value (RFC 2369: whitespace inside
    the brackets is not part of the target)."""
    return tuple(re.sub(r"\s+", "", target) for target in _TARGET.findall(value))


def _targets(original: Message) -> tuple[str, ...]:
    values = original.get_all("List-Unsubscribe") or []
    return tuple(target for value in values for target in unsubscribe_targets(str(value)))


def _split(entity: bytes) -> tuple[bytes, bytes]:
    """A MIME entity's header block and body (at the first empty line)."""
    if entity.startswith((b"\r\n", b"\n")):  # no header fields at all
        return b"", entity[entity.index(b"\n") + 1 :]
    end = _BLANK_LINE.search(entity)
    if end is None:
        return entity, b""
    return entity[: end.start()], entity[end.end() :]


def _headers(head: bytes) -> EmailMessage:
    """The fields of one header block (the email package, policy.default)."""
    message = BytesParser(policy=default).parsebytes(head, headersonly=True)
    assert isinstance(message, EmailMessage)  # noqa: S101 - policy.default makes these
    return message


def _decoded_body(part: bytes) -> bytes:
    """A part's body with its Content-Transfer-Encoding undone (by the email package)."""
    message = BytesParser(policy=default).parsebytes(part, headersonly=True)
    body = message.get_payload(decode=True)
    return body if isinstance(body, bytes) else b""


def _parts(body: bytes, boundary: str) -> list[bytes]:
    """The top-level parts of a multipart body (RFC 2046 §5.1.1: between delimiter
    lines, after the preamble, up to the close delimiter); at most MAX_PARTS + 1."""
    delimiter = re.compile(
        rb"^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*\r?$", re.M
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            end = match.start()
            end -= 2 if body[end - 2 : end] == b"\r\n" else 1  # the CRLF is the delimiter's
            parts.append(body[start : max(start, end)])
            if len(parts) > MAX_PARTS:
                break
        if match.group(1):
            break
        start = match.end() + 1
    return parts


def _field(fields: Message, name: str) -> str:
    """A field's first value, unfolded, printable ASCII only and bounded, or ''."""
    value = fields.get(name)
    if value is None:
        return ""
    text = "".join(c for c in str(value) if c.isascii() and c.isprintable())
    return " ".join(text.split())[:MAX_FIELD_CHARS]


def _date(text: str) -> str | None:
    """A mail date as ISO 8601 in UTC; other text as written; None when empty."""
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return text
    if when.tzinfo is None:
        return text  # "-0000": no zone known, as written
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _ip(text: str) -> str | None:
    """An IPv4 or IPv6 address (brackets allowed) in its normal spelling, else None."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_TARGET = re.compile(r"<([^<>]*)>")
