"""Commercial signals in a message header (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.smtp.signals import commercial_signals, header_block, header_fields

BODY = b"\r\n\r\nList-Unsubscribe: in the body does not count\r\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"List-Unsubscribe: <mailto:u@x.test>", ["List-Unsubscribe"]),
        (b"list-id: News <news.x.test>", ["List-Id"]),
        (b"Feedback-ID: 1:camp:acme", ["Feedback-ID"]),
        (b"Precedence: bulk", ["Precedence"]),
        (b"Precedence:  List ", ["Precedence"]),
        (b"Precedence: junk", []),
        (b"Subject: AD: spring sale", ["Subject"]),
        (b"Subject: [AD] spring sale", ["Subject"]),
        (b"Subject: ADVICE for you", []),
        (b"Subject: ad lower case", []),
        ("Subject: 广告：春季促销".encode(), ["Subject"]),
        ("Subject: 【广告】春季促销".encode(), ["Subject"]),
        (b"Subject: =?UTF-8?B?5bm/5ZGK77ya5aSn5L+D?=", ["Subject"]),
        (b"Subject: your receipt", []),
        (b"Subject: your receipt\r\nSubject: AD spring sale", ["Subject"]),
        (b"List-Unsubscribe : <mailto:u@x.test>", ["List-Unsubscribe"]),
        (b"LIST-ID\t: News <news.x.test>", ["List-Id"]),
        (b"Precedence: junk\r\nPrecedence : bulk", ["Precedence"]),
    ],
)
def test_signals(header: bytes, expected: list[str]) -> None:
    """Each commercial signal is found (case-insensitive names, white space before the
    colon, every field of a repeated name, encoded subjects decoded); look-alikes are
    not."""
    assert commercial_signals(b"From: a@x.test\r\n" + header + BODY) == expected


def test_signals_only_in_header() -> None:
    """A signal-like line in the body is not a signal."""
    assert commercial_signals(b"Subject: hi\r\n" + BODY) == []


def test_header_fields_as_receivers_read_them() -> None:
    """Fields by lower-cased name, in order, folded lines joined; a line without a colon
    is skipped, not the end of the header; nothing of the body."""
    fields = header_fields(
        b"Subject: one\r\n  folded\r\nno colon here\r\nX-A : 1\r\nx-a: 2\r\n\r\nY: body"
    )
    assert fields == {"subject": ["one folded"], "x-a": ["1", "2"]}


def test_header_block_bare_lf() -> None:
    """The header ends at the first empty line, CRLF or LF."""
    assert header_block(b"A: 1\nB: 2\n\nbody") == b"A: 1\nB: 2"
    assert header_block(b"A: 1\r\n\r\nbody") == b"A: 1"


@given(st.binary(max_size=2000))
def test_any_bytes_never_crash(message: bytes) -> None:
    """Arbitrary bytes give a list of known signal names, never an exception."""
    assert set(commercial_signals(message)) <= {
        "List-Unsubscribe", "List-Id", "Feedback-ID", "Precedence", "Subject",
    }  # fmt: skip
