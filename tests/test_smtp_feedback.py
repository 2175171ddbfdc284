"""Reading feedback reports (filterd/smtp/feedback.py): the shapes providers send,
messages that are not reports, and hostile ones (no parts, too many, deep nesting,
bad encodings), which read as a report with a problem or as no report, never an
exception."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.smtp.feedback import MAX_FIELD_CHARS, MAX_PARTS, FeedbackReport, read_report
from filterd.smtp.feedback import unsubscribe_targets as targets_of
from tests.arf_helpers import (
    BOUNDARY,
    MICROSOFT_FIELDS,
    RFC5965_FIELDS,
    YAHOO_FIELDS,
    microsoft_original,
    original,
    report,
)

HTTPS = "https://u.acme.test/unsubscribe/TOKEN"
MAILTO = "mailto:unsubscribe+spelt@unsub.test"
ONE_CLICK = f"<{HTTPS}>,\r\n <{MAILTO}>"


def test_the_rfc_5965_example_reads_in_full() -> None:
    """RFC 5965's example report: abuse, Arrival-Date in UTC, Source-IP, and the
    List-Unsubscribe targets of the returned original, in order."""
    got = read_report(report(original(ONE_CLICK), fields=RFC5965_FIELDS))
    assert got == FeedbackReport(
        feedback_type="abuse",
        arrival_date="2026-12-07T09:59:58+00:00",
        source_ip="192.0.2.25",
        unsubscribe=(HTTPS, MAILTO),
    )
    assert got.abuse


def test_a_yahoo_report_with_received_date_reads() -> None:
    """Yahoo's shape: the historic Received-Date stands in for Arrival-Date (in UTC)."""
    got = read_report(report(original(ONE_CLICK), fields=YAHOO_FIELDS))
    assert got is not None
    assert (got.feedback_type, got.arrival_date, got.source_ip) == (
        "abuse", "2026-12-07T09:59:58+00:00", "192.0.2.25",
    )  # fmt: skip
    assert got.unsubscribe == (HTTPS, MAILTO)


def test_a_microsoft_report_reads() -> None:
    """Microsoft's ARF shape: an IPv6 Source-IP in its normal spelling, the targets of
    an original that carries X-HmXmrOriginalRecipient."""
    got = read_report(report(microsoft_original(ONE_CLICK), fields=MICROSOFT_FIELDS))
    assert got is not None
    assert (got.source_ip, got.arrival_date) == ("2001:db8::25", "2026-12-07T09:59:58+00:00")
    assert got.unsubscribe == (HTTPS, MAILTO)
    assert got.problem is None


def test_headers_only_and_encoded_originals_read() -> None:
    """The original's headers alone (text/rfc822-headers), or the original in base64,
    give the same targets."""
    headers = original(ONE_CLICK).split(b"\r\n\r\n")[0] + b"\r\n"
    for returned, kind, encoding in (
        (headers, "text/rfc822-headers", None),
        (original(ONE_CLICK), "message/rfc822", "base64"),
        (headers, "text/rfc822-headers", "base64"),
        (original(ONE_CLICK), "message/global", None),
    ):
        got = read_report(
            report(returned, fields=RFC5965_FIELDS, returned_type=kind, returned_encoding=encoding)
        )
        assert got is not None
        assert got.unsubscribe == (HTTPS, MAILTO), (kind, encoding)


def test_messages_that_are_not_reports() -> None:
    """Plain mail, a delivery status notification, Microsoft's older non-ARF format
    (multipart/mixed), empty and header-only input are not reports."""
    plain = b"From: a@b.test\r\nSubject: hi\r\n\r\nunsubscribe me\r\n"
    dsn = report(
        original(ONE_CLICK), fields=RFC5965_FIELDS,
        content_type=f'multipart/report; report-type=delivery-status; boundary="{BOUNDARY}"',
    )  # fmt: skip
    mixed = report(
        microsoft_original(ONE_CLICK), fields=MICROSOFT_FIELDS,
        content_type=f'multipart/mixed; boundary="{BOUNDARY}"',
    )  # fmt: skip
    for content in (plain, dsn, mixed, b"", b"\r\n\r\n", b"Subject: x", b"\xff\xfe\x00garbage"):
        assert read_report(content) is None, content[:40]


def test_reports_without_their_parts_say_why() -> None:
    """A message that says it is a report but has no boundary or no parts, no
    machine-readable part, or no original is a report with a problem."""
    head = b"Content-Type: multipart/report; report-type=feedback-report"
    assert read_report(head + b"\r\n\r\nno parts\r\n") == FeedbackReport(problem="no_parts")
    assert read_report(head + b'; boundary="b"\r\n\r\nno delimiter\r\n') == FeedbackReport(
        problem="no_parts"
    )
    no_fields = report(original(ONE_CLICK), fields=RFC5965_FIELDS).replace(
        b"message/feedback-report", b"text/plain"
    )
    assert read_report(no_fields) == FeedbackReport(problem="no_feedback_part")
    no_original = report(original(ONE_CLICK), fields=RFC5965_FIELDS, returned_type="text/plain")
    got = read_report(no_original)
    assert got is not None
    assert (got.problem, got.feedback_type, got.unsubscribe) == ("no_original", "abuse", ())


def test_too_many_parts_are_not_read() -> None:
    """More than MAX_PARTS top-level parts: a report that is not read further."""
    part = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    content = (
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{BOUNDARY}"\r\n'
        f"\r\n{part * (MAX_PARTS + 1)}--{BOUNDARY}--\r\n"
    ).encode()
    assert read_report(content) == FeedbackReport(problem="too_many_parts")


def test_deep_nesting_inside_the_original_is_not_parsed() -> None:
    """An original nested 100,000 levels deep (message/rfc822 in message/rfc822 …),
    beyond any recursion limit, still gives its targets: only its top header block
    is read."""
    nested = original(ONE_CLICK).replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b"Content-Type: message/rfc822\r\n\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 100_000,
    )
    got = read_report(report(nested, fields=RFC5965_FIELDS))
    assert got is not None
    assert (got.unsubscribe, got.problem) == ((HTTPS, MAILTO), None)


def test_other_feedback_types_are_not_abuse() -> None:
    """Feedback-Type not-spam (or none) is a report, not a complaint."""
    for fields, kind in ((RFC5965_FIELDS.replace("abuse", "not-spam"), "not-spam"),
                         ("Version: 1\r\n", "")):  # fmt: skip
        got = read_report(report(original(ONE_CLICK), fields=fields))
        assert got is not None
        assert (got.feedback_type, got.abuse) == (kind, False)


def test_field_values_are_checked_and_bounded() -> None:
    """A Source-IP that is no IP address is dropped; a date that does not parse is
    kept as written, printable and at most MAX_FIELD_CHARS long; bytes that are not
    UTF-8 or ASCII control characters in fields do not stop the report."""
    fields = (
        "Feedback-Type: ABUSE\r\nSource-IP: 192.0.2.300\r\n"
        f"Arrival-Date: yesterday \x07{'x' * 200}\r\n"
    )
    got = read_report(report(original(ONE_CLICK), fields=fields))
    assert got is not None
    assert got.abuse
    assert got.source_ip is None
    assert got.arrival_date is not None
    assert got.arrival_date.startswith("yesterday x")
    assert len(got.arrival_date) == MAX_FIELD_CHARS
    raw = report(original(ONE_CLICK), fields=RFC5965_FIELDS).replace(
        b"Version: 1", b"Version: \xff\xfe\xc3"
    )
    assert read_report(raw.replace(b"Subject: Winter", b"Subject: \xe9t\xe9")) is not None
    bad_base64 = report(b"!!!not base64***", fields=RFC5965_FIELDS, returned_encoding="base64")
    got = read_report(bad_base64.replace(b"ISEh", b"@@@@"))
    assert got is not None
    assert got.unsubscribe == ()


def test_list_unsubscribe_targets() -> None:
    """Each <…> target of a List-Unsubscribe value, whitespace inside brackets removed."""
    assert targets_of("<https://a.test/u/x>, <mailto:u@a.test?subject=stop>") == (
        "https://a.test/u/x", "mailto:u@a.test?subject=stop",
    )  # fmt: skip
    assert targets_of("<https://a.test/u/\r\n x>") == ("https://a.test/u/x",)
    assert targets_of("no brackets") == ()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
@example(b"Content-Type: multipart/report; report-type=feedback-report; boundary=\r\n\r\n")
@example(b'Content-Type: multipart/report; report-type="feedback-report"; boundary="\x00"\r\n\r\n')
def test_any_bytes_read_as_a_report_or_none(data: bytes) -> None:
    """Fuzz: any input is a FeedbackReport or None, never an exception."""
    head = b'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
    for content in (data, head + data, head + b"--b\r\n" + data):
        got = read_report(content)
        assert got is None or isinstance(got, FeedbackReport)
