"""filterd.csvimport.read_rows(): import CSV rows → GoodRow / BadRow.

Rows are `address[,created_at,source,evidence]`; a header is recognised only
on line 1; each bad row is reported with its file line number (header and
blank lines counted) and a reason naming the value, and the rows after it are
still read.
"""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.csvimport import BadRow, GoodRow, ImportSpec, parse_time, read_rows
from filterd.model import BulkRow, Channel, Kind

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PHONE = "+8613800138000"
SPEC = ImportSpec(
    kind=Kind.CONSENT,
    sender="acme",
    channel=None,
    all_channels=False,
    source="import:test.csv",
    default_region="CN",
    ttl_s=30 * 86400,
    now_ms=NOW_MS,
    consumer_id=lambda address: address.canonical.encode(),
)


def read(text: str, **changes: object) -> list[GoodRow | BadRow]:
    """All results of read_rows() for `text`, with SPEC changed by `changes`."""
    spec = dataclasses.replace(SPEC, **changes)  # type: ignore[arg-type]
    return list(read_rows(io.StringIO(text, newline=""), spec))


def ms(*args: int) -> int:
    """Milliseconds since the epoch of a UTC datetime."""
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def only_good(results: list[GoodRow | BadRow]) -> GoodRow:
    """The single result, which must be a GoodRow."""
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, GoodRow), result
    return result


def only_bad(results: list[GoodRow | BadRow]) -> BadRow:
    """The single result, which must be a BadRow."""
    assert len(results) == 1
    (result,) = results
    assert isinstance(result, BadRow), result
    return result


# ---- header -------------------------------------------------------------------


def test_header_on_line_1_is_skipped() -> None:
    """A first row whose first cell is `address` is a header, not a row."""
    results = read("address,created_at,source,evidence\n+8613800138000\n")
    assert [r.line for r in results] == [2]
    assert isinstance(results[0], GoodRow)


def test_header_match_ignores_case_and_spaces() -> None:
    """` Address ` on line 1 is still the header."""
    results = read(" Address ,Created_At\n+8613800138000\n")
    assert [r.line for r in results] == [2]


def test_header_text_after_line_1_is_a_bad_row() -> None:
    """`address` on a later line is data: a bad address on that line."""
    results = read("+8613800138000\naddress,created_at\nuser@example.com\n")
    assert [type(r) for r in results] == [GoodRow, BadRow, GoodRow]
    bad = results[1]
    assert isinstance(bad, BadRow)
    assert bad.line == 2
    assert "'address'" in bad.reason


def test_header_after_blank_first_line_is_not_skipped() -> None:
    """A header is only recognised on the file's line 1, not after a blank line."""
    bad = only_bad(read("\naddress\n"))
    assert bad.line == 2


def test_file_without_header() -> None:
    """Without a header the first line is data, reported as line 1."""
    good = only_good(read("user@example.com\n"))
    assert good.line == 1


# ---- bad rows and line numbers ---------------------------------------------------


def test_bad_rows_carry_file_line_numbers() -> None:
    """Line numbers are the file's, header counted; good rows go on after bad ones."""
    text = (
        "address,created_at\n"  # 1
        "+8613800138000\n"  # 2
        "not-a-number\n"  # 3
        "user@@\n"  # 4
        "user@example.com\n"  # 5
        "+8613800138001,yesterday\n"  # 6
        "13900139000\n"  # 7
    )
    results = read(text)
    assert [(type(r).__name__, r.line) for r in results] == [
        ("GoodRow", 2),
        ("BadRow", 3),
        ("BadRow", 4),
        ("GoodRow", 5),
        ("BadRow", 6),
        ("GoodRow", 7),
    ]


@pytest.mark.parametrize(
    ("row", "named"),
    [
        pytest.param("not-a-number", "'not-a-number'", id="junk"),
        pytest.param("12345", "'12345'", id="too-short-number"),
        pytest.param("user@", "'user@'", id="email-without-domain"),
        pytest.param("user@localhost", "'user@localhost'", id="single-label-domain"),
        pytest.param("+8613800138000,yesterday", "'yesterday'", id="created-at"),
        pytest.param("+8613800138000,2025-13-01", "'2025-13-01'", id="created-at-month-13"),
    ],
)
def test_bad_row_reason_names_the_value(row: str, named: str) -> None:
    """The reason of a bad row quotes the offending value."""
    bad = only_bad(read(row + "\n"))
    assert bad.line == 1
    assert named in bad.reason


def test_national_number_needs_default_region() -> None:
    """Without default_region a national number is a bad row that says so."""
    bad = only_bad(read("13800138000\n", default_region=None))
    assert "'13800138000'" in bad.reason
    assert "default_region" in bad.reason


def test_too_many_columns() -> None:
    """A row with more than four columns is bad, with the column count in the reason."""
    bad = only_bad(read("+8613800138000,2025-01-01,src,evidence,extra\n"))
    assert bad.line == 1
    assert "5 columns" in bad.reason


def test_channel_mismatch() -> None:
    """With --channel sms an email address is bad (and the reverse), naming the value."""
    bad_email = only_bad(read("user@example.com\n", channel=Channel.SMS))
    assert "'user@example.com'" in bad_email.reason
    assert "sms" in bad_email.reason
    bad_phone = only_bad(read("+8613800138000\n", channel=Channel.EMAIL))
    assert "'+8613800138000'" in bad_phone.reason
    assert "email" in bad_phone.reason


def test_voice_rows_are_phone_numbers() -> None:
    """With --channel voice a phone number (E.164 or national) is a voice row of the
    same consumer as its sms row; an email address is bad, naming the value and voice."""
    results = read("+8613800138000\n138 0013 8000\nuser@example.com\n", channel=Channel.VOICE)
    good = [r for r in results if isinstance(r, GoodRow)]
    assert [(r.row.consumer, r.row.channel) for r in good] == [(PHONE.encode(), Channel.VOICE)] * 2
    [bad] = [r for r in results if isinstance(r, BadRow)]
    assert bad.line == 3
    assert "'user@example.com'" in bad.reason
    assert "voice" in bad.reason


def test_all_channel_refusal_accepts_both_forms() -> None:
    """A refusal for all channels takes phones and emails, with channel None."""
    results = read(
        "+8613800138000\nuser@example.com\n",
        kind=Kind.REFUSAL,
        sender="*",
        all_channels=True,
    )
    assert [type(r) for r in results] == [GoodRow, GoodRow]
    assert all(isinstance(r, GoodRow) and r.row.channel is None for r in results)


def test_blank_lines_are_skipped_but_counted() -> None:
    """Empty and whitespace-only rows yield nothing; later line numbers still count them."""
    results = read("\n+8613800138000\n\n  ,  \n\nbad\n")
    assert [(type(r).__name__, r.line) for r in results] == [("GoodRow", 2), ("BadRow", 6)]


def test_crlf_line_endings() -> None:
    """Windows line endings read the same, with the same line numbers."""
    results = read("address\r\n+8613800138000\r\nbad\r\n")
    assert [(type(r).__name__, r.line) for r in results] == [("GoodRow", 2), ("BadRow", 3)]


# ---- good rows ------------------------------------------------------------------


def test_good_row_builds_bulk_row() -> None:
    """A bare address becomes a row keyed by its consumer id, with the spec's kind,
    sender and source, the time of the import, and the request's expiry."""
    good = only_good(read("138 0013 8000\n", kind=Kind.REQUEST, ttl_s=86400))
    assert good.row == BulkRow(
        consumer=PHONE.encode(),
        kind=Kind.REQUEST,
        sender="acme",
        channel=Channel.SMS,
        at_ms=NOW_MS,
        source="import:test.csv",
        evidence=None,
        expires_ms=NOW_MS + 86_400_000,
    )


def test_email_is_normalised_and_channel_from_form() -> None:
    """An email is canonicalised (trimmed, lower-cased) and gets channel email."""
    good = only_good(read("  User@Example.COM  \n"))
    assert good.row.consumer == b"user@example.com"
    assert good.row.channel is Channel.EMAIL


def test_quoted_evidence_with_commas() -> None:
    """A quoted evidence field keeps its commas; source comes from column 3."""
    good = only_good(
        read('user@example.com,2025-01-01T00:00:00Z,web-form,"form https://x.test/a, ip 1.2.3.4"\n')
    )
    assert good.row.source == "web-form"
    assert good.row.evidence == "form https://x.test/a, ip 1.2.3.4"


def test_quoted_address_with_separators() -> None:
    """A quoted address cell is unquoted before it is normalised."""
    good = only_good(read('"+86 138-0013-8000",,,\n'))
    assert good.row.consumer == PHONE.encode()


def test_empty_optional_cells_fall_back() -> None:
    """Empty created_at, source and evidence mean: now, the spec's source, no evidence."""
    good = only_good(read("+8613800138000, , ,  \n"))
    assert good.row.at_ms == NOW_MS
    assert good.row.source == "import:test.csv"
    assert good.row.evidence is None


# ---- created_at ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        pytest.param("2025-01-02T03:04:05Z", ms(2025, 1, 2, 3, 4, 5), id="iso-z"),
        pytest.param("2025-01-02T11:04:05+08:00", ms(2025, 1, 2, 3, 4, 5), id="iso-offset"),
        pytest.param("2025-01-02T03:04:05", ms(2025, 1, 2, 3, 4, 5), id="iso-naive-utc"),
        pytest.param("2025-01-02 03:04:05", ms(2025, 1, 2, 3, 4, 5), id="iso-space"),
        pytest.param("2025-01-02", ms(2025, 1, 2), id="iso-date"),
        pytest.param("1735787045", ms(2025, 1, 2, 3, 4, 5), id="unix-seconds"),
        pytest.param("1735787045.25", ms(2025, 1, 2, 3, 4, 5) + 250, id="unix-fraction"),
    ],
)
def test_created_at_formats(cell: str, expected: int) -> None:
    """created_at is ISO 8601 (Z, offset, naive = UTC) or Unix seconds, in ms."""
    good = only_good(read(f"+8613800138000,{cell}\n"))
    assert good.row.at_ms == expected
    assert parse_time(cell) == expected


def test_future_created_at_is_rejected() -> None:
    """A created_at days ahead of now is a bad row naming the value."""
    bad = only_bad(read("+8613800138000,2025-06-10T00:00:00Z\n"))
    assert "'2025-06-10T00:00:00Z'" in bad.reason
    assert "future" in bad.reason


def test_future_unix_seconds_rejected() -> None:
    """A Unix-seconds created_at far ahead (e.g. milliseconds by mistake) is rejected."""
    bad = only_bad(read(f"+8613800138000,{NOW_MS}\n"))
    assert "future" in bad.reason


def test_created_at_now_is_accepted() -> None:
    """A created_at equal to now is accepted."""
    good = only_good(read("+8613800138000,2025-06-01T12:00:00Z\n"))
    assert good.row.at_ms == NOW_MS


def test_negative_unix_seconds_rejected() -> None:
    """A negative number is not a created_at."""
    bad = only_bad(read("+8613800138000,-5\n"))
    assert "'-5'" in bad.reason


def test_oversized_field_is_a_bad_row() -> None:
    """A row with a huge cell is one bad row; the rows after it are still read."""
    text = "+8613800138000,,," + "x" * 200_000 + "\nuser@example.com\n"
    results = read(text)
    assert [(type(r).__name__, r.line) for r in results] == [("BadRow", 1), ("GoodRow", 2)]


def test_evidence_naming_the_consumer_is_masked() -> None:
    """Evidence that repeats the consumer's address keeps only the masked form."""
    good = only_good(read("+8613800138000,,web,form for +8613800138000\n"))
    assert good.row.evidence == "form for +86138****8000"


def test_unclosed_quote_is_a_bad_row() -> None:
    """An unclosed quote is reported, not silently merged with the following lines."""
    results = read('+8613800138000,,,"open\nuser@example.com\n')
    assert [type(r).__name__ for r in results] == ["BadRow"]
    assert "unreadable CSV" in results[0].reason


def test_compact_iso_date() -> None:
    """`20240101` is the ISO 8601 basic date, not Unix seconds."""
    assert parse_time("20240101") == ms(2024, 1, 1)


# ---- fuzzing (issue 6; the long run is bench/fuzz.py) -------------------------------------

FUZZ_CELLS = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        PHONE, "13800138000", "+1 202 555 0143", "user@example.com", " User@Bücher.Example ",
        "2024-01-01T00:00:00Z", "2024-01-01T08:00:00+08:00", "20250102", "1700000000",
        "1700000000.5", "-1", "9" * 30, "inf", "nan", "2024-13-01", "", " ", '"', '""',
        "a\x00b", "x" * 5000, "line\nbreak",
    ]),
)  # fmt: skip
FUZZ_ROWS = st.lists(FUZZ_CELLS, max_size=6).map(",".join)
FUZZ_LINES = st.lists(st.one_of(FUZZ_ROWS, st.text(max_size=60)), max_size=6)


def fuzz_spec(kind: Kind, all_channels: bool) -> ImportSpec:
    """SPEC with another kind and channel rule."""
    return dataclasses.replace(SPEC, kind=kind, all_channels=all_channels)


@given(FUZZ_LINES, st.sampled_from(list(Kind)), st.booleans())
@settings(max_examples=300, deadline=None)
def test_fuzz_rows_are_good_or_bad_never_an_exception(
    lines: list[str], kind: Kind, all_channels: bool
) -> None:
    """Any text: read_rows() yields only GoodRow/BadRow with line numbers that rise and lie
    within the text; a good row carries a valid time, bounded evidence without NUL; a bad
    row a reason."""
    text = "\n".join(lines) + "\n"
    results = list(read_rows(io.StringIO(text, newline=""), fuzz_spec(kind, all_channels)))
    physical_lines = text.count("\n") + text.count("\r")
    numbers = [r.line for r in results]
    assert numbers == sorted(numbers)
    assert all(1 <= n <= physical_lines for n in numbers)
    for result in results:
        if isinstance(result, GoodRow):
            row = result.row
            assert 0 <= row.at_ms <= NOW_MS + 86_400_000
            assert row.evidence is None or (
                "\x00" not in row.evidence and len(row.evidence.encode()) <= 4096
            )
            assert (row.expires_ms is not None) is (kind is Kind.REQUEST)
        else:
            assert isinstance(result, BadRow)
            assert result.reason


@given(st.lists(FUZZ_ROWS.filter(lambda r: '"' not in r and r.strip(",").strip()), max_size=8))
@settings(max_examples=200, deadline=None)
def test_fuzz_unquoted_rows_one_result_per_line(rows: list[str]) -> None:
    """Without quotes, every line with a non-blank cell gives exactly one result, numbered
    with its own line."""
    rows = [r for r in rows if "\n" not in r and "\r" not in r and "\x00" not in r]
    text = "".join(f"{r}\n" for r in ["+8613800138000", *rows])
    results = read(text)
    expected = [n for n, r in enumerate(["+8613800138000", *rows], 1) if r.replace(",", "").strip()]
    assert [r.line for r in results] == expected


@given(st.one_of(st.text(max_size=40), FUZZ_CELLS))
@settings(max_examples=300)
def test_fuzz_parse_time(text: str) -> None:
    """parse_time() of any text is a time in 1970..9999 in ms, or a ValueError naming it."""
    try:
        outcome: int | str = parse_time(text)
    except ValueError as exc:
        outcome = str(exc)
    if isinstance(outcome, str):
        assert repr(text) in outcome
    else:
        assert 0 <= outcome <= 253_402_300_799_999
