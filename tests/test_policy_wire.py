"""The Postfix policy protocol's wire format (filterd/policy_wire.py), sans-IO: the
parser and the serializer on their own, fed requests as Postfix writes them, broken
input, and arbitrary bytes split at arbitrary points."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.policy_wire import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    PolicyParser,
    PolicyProtocolError,
    serialize_reply,
)
from tests.policy_helpers import BOB, JANE, request


def test_parser_reads_postfix_requests() -> None:
    """A Postfix request parses into its attributes; '=' inside a value is kept, an empty
    value is an empty string, and a trailing CR is tolerated."""
    parser = PolicyParser()
    [parsed] = parser.feed(request(queue_id="3F2A1"))
    assert parsed["protocol_state"] == "RCPT"
    assert (parsed["recipient"], parsed["queue_id"], parsed["stress"]) == (JANE, "3F2A1", "")
    assert len(parsed) == 29
    assert parser.feed(b"ccert_subject=CN=a=b\r\nx=\r\n\r\n") == [
        {"ccert_subject": "CN=a=b", "x": ""}
    ]
    assert not parser.pending


def test_parser_is_incremental() -> None:
    """Bytes fed one at a time give the same requests as one write; `pending` tells a
    half-received request apart from a clean boundary."""
    data = request() + request(BOB, state="DATA")
    whole = PolicyParser().feed(data)
    parser = PolicyParser()
    pieces: list[dict[str, str]] = []
    for index in range(len(data)):
        pieces += parser.feed(data[index : index + 1])
        if index == 10:
            assert parser.pending
    assert pieces == whole
    assert [r["protocol_state"] for r in whole] == ["RCPT", "DATA"]
    assert not parser.pending


def test_empty_request_is_a_request() -> None:
    """An empty line with no attributes before it is an (empty) request, as in Postfix's
    own example policy server."""
    assert PolicyParser().feed(b"\n") == [{}]


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"protocol_state=RCPT\nno equals sign here\n\n", "without '='"),
        (b"=value\n\n", "without a name"),
        (b"recipient=" + b"a" * MAX_LINE + b"\n\n", f"longer than {MAX_LINE}"),
        (b"recipient=" + b"a" * (MAX_LINE + 10), f"longer than {MAX_LINE}"),
        (b"".join(b"a%d=1\n" % i for i in range(MAX_ATTRIBUTES + 1)) + b"\n", "more than 100"),
    ],
)
def test_parser_rejects_malformed_input(data: bytes, rule: str) -> None:
    """A line without '=', an empty name, an overlong line (even before its newline) or
    too many attributes raise PolicyProtocolError naming the rule, never the bytes; the
    parser then stays failed."""
    parser = PolicyParser()
    with pytest.raises(PolicyProtocolError, match=re.escape(rule)) as caught:
        parser.feed(data)
    assert "aaaa" not in str(caught.value)
    with pytest.raises(PolicyProtocolError):
        parser.feed(request())


def test_line_limit_is_exact() -> None:
    """A line of exactly MAX_LINE bytes (newline excluded, CR tolerated) is accepted."""
    line = b"recipient=" + b"a" * (MAX_LINE - len(b"recipient="))
    assert PolicyParser().feed(line + b"\r\n\n") == [{"recipient": "a" * (MAX_LINE - 10)}]
    with pytest.raises(PolicyProtocolError):
        PolicyParser().feed(line + b"a\n\n")


def test_requests_before_an_error_are_returned_first() -> None:
    """Requests completed before a malformed line are returned; `error` is then set and
    the next feed raises."""
    parser = PolicyParser()
    assert parser.feed(request() + b"garbage\n") == PolicyParser().feed(request())
    assert parser.error == "a line without '='"
    with pytest.raises(PolicyProtocolError):
        parser.feed(b"\n")


def test_non_utf8_bytes_survive_as_surrogates() -> None:
    """Bytes that are not UTF-8 parse (surrogateescape) and go back out unchanged."""
    [parsed] = PolicyParser().feed(b"recipient=j\xffne@example.com\n\n")
    assert parsed["recipient"] == "j\udcffne@example.com"
    assert (
        serialize_reply(f"553 <{parsed['recipient']}>") == b"action=553 <j\xffne@example.com>\n\n"
    )


def test_serialize_reply_is_one_line() -> None:
    """A reply is `action=...` plus an empty line; control characters cannot split it."""
    assert serialize_reply("DUNNO") == b"action=DUNNO\n\n"
    assert serialize_reply("553 5.1.3 <a\r\nb>: x") == b"action=553 5.1.3 <a??b>: x\n\n"


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6))
def test_parser_fuzz_invariant(data: bytes, cuts: list[int]) -> None:
    """Any bytes either parse into requests or raise PolicyProtocolError, nothing else;
    and how the bytes are split does not change the outcome."""

    def run(chunks: Sequence[bytes]) -> tuple[list[dict[str, str]], bool]:
        parser = PolicyParser()
        out: list[dict[str, str]] = []
        try:
            for chunk in chunks:
                out += parser.feed(chunk)
        except PolicyProtocolError:
            return out, True
        return out, parser.error is not None

    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole_requests, whole_failed = run([data])
    split_requests, split_failed = run(chunks)
    assert whole_failed == split_failed
    if not whole_failed:
        assert split_requests == whole_requests


NAMES = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="=\n\r"),
    min_size=1,
    max_size=30,
)
VALUES = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n"), max_size=60
).filter(lambda v: not v.endswith("\r"))


@settings(max_examples=200)
@given(st.lists(st.dictionaries(NAMES, VALUES, max_size=40), max_size=5))
def test_parser_round_trip(requests: list[dict[str, str]]) -> None:
    """Requests written in the wire format (UTF-8, any characters but newline in values,
    '=' allowed there) parse back to exactly the same attributes."""
    wire = b"".join(b"".join(f"{k}={v}\n".encode() for k, v in r.items()) + b"\n" for r in requests)
    assert PolicyParser(max_line=10_000).feed(wire) == requests


@settings(max_examples=200)
@given(st.lists(st.dictionaries(NAMES, VALUES, max_size=40), max_size=5), st.integers(1, 700))
def test_whole_requests_parse_as_line_by_line(requests: list[dict[str, str]], step: int) -> None:
    """Whole requests in one feed, the same cut into pieces of `step` bytes, and the same
    with CRLF line ends (a telnet user) all give the same attributes."""
    lines = [[f"{k}={v}".encode() for k, v in r.items()] + [b""] for r in requests]
    wire = b"".join(line + b"\n" for request_lines in lines for line in request_lines)
    crlf = b"".join(line + b"\r\n" for request_lines in lines for line in request_lines)
    parser = PolicyParser(max_line=10_000)
    pieces = [r for at in range(0, len(wire), step) for r in parser.feed(wire[at : at + step])]
    assert PolicyParser(max_line=10_000).feed(wire) == pieces == requests
    assert PolicyParser(max_line=10_000).feed(crlf) == requests
