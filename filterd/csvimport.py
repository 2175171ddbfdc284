"""Reading an import CSV into registry rows, row by row (pure: no Redis).

Rows are `address[,created_at,source,evidence]`; a first row whose first cell
is `address` is a header. A bad row becomes a `BadRow` with its file line
number (header included) and the reason; good rows go on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from filterd.errors import InvalidAddress
from filterd.model import MAX_EVIDENCE_BYTES, Address, BulkRow, Channel, Kind
from filterd.normalize import fits, normalize, scrub

_FUTURE_SLACK_MS = 86_400_000
_LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """What every row of one file stands for."""

    kind: Kind
    sender: str
    channel: Channel | None
    """None: the channel each address implies, email or sms (refusals: None means all
    channels); voice is named. A phone number takes sms or voice, an email address email."""
    all_channels: bool
    source: str
    default_region: str | None
    ttl_s: int
    """Validity of a request (the --ttl, else registry.request_ttl)."""
    now_ms: int
    """Time of rows without created_at."""
    consumer_id: Callable[[Address], bytes]


@dataclass(frozen=True, slots=True)
class GoodRow:
    """A row ready to write."""

    line: int
    row: BulkRow


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be imported, and why."""

    line: int
    reason: str


def read_rows(
    lines: Iterable[str], spec: ImportSpec, first_line: int = 1
) -> Iterator[GoodRow | BadRow]:
    """Parse CSV text lines; yield one result per data row.

    A row's line number is the file line it starts on (`first_line` is the
    number of the first line given, for a part of a file). A row the CSV reader
    cannot read (an unclosed quote, a field over the size limit) is a bad row.
    A header is only recognised on line 1 of the file.
    """
    reader = csv.reader(lines, strict=True)
    offset = first_line - 1
    while True:
        line = reader.line_num + 1 + offset
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRow(line, f"unreadable CSV ({exc})")
            continue
        if not "".join(row).strip():
            continue
        if line == 1 and row[0].strip().lower() == "address":
            continue
        yield _row(row, line, spec)


def _row(row: list[str], line: int, spec: ImportSpec) -> GoodRow | BadRow:
    try:
        address, channel = _address(row, spec)
        at_ms, source, evidence = spec.now_ms, spec.source, None
        if len(row) > 1:
            at_ms, source, evidence = _optional_cells(row, spec, address)
    except (ValueError, InvalidAddress) as exc:
        return BadRow(line, str(exc))
    expires = at_ms + 1000 * spec.ttl_s if spec.kind is Kind.REQUEST else None
    bulk = BulkRow(
        spec.consumer_id(address), spec.kind, spec.sender, channel, at_ms, source, evidence, expires
    )
    return GoodRow(line, bulk)


def _address(row: list[str], spec: ImportSpec) -> tuple[Address, Channel | None]:
    """The row's address and the fact's channel; ValueError/InvalidAddress if bad."""
    if len(row) > 4:
        raise ValueError(f"{len(row)} columns; expected address[,created_at,source,evidence]")
    address = normalize(row[0], spec.default_region)
    channel = None if spec.all_channels else (spec.channel or address.channel)
    if channel is not None and not fits(address, channel):
        raise ValueError(f"{row[0]!r} is not an address for channel {channel.value}")
    return address, channel


def _optional_cells(
    row: list[str], spec: ImportSpec, address: Address
) -> tuple[int, str, str | None]:
    """created_at, source and evidence of a row (defaults where empty); ValueError if bad."""
    at_ms = spec.now_ms
    created = row[1].strip()
    if created:
        at_ms = parse_time(created)
        if at_ms > spec.now_ms + _FUTURE_SLACK_MS:
            raise ValueError(f"created_at {created!r} is in the future")
    source = spec.source
    if len(row) > 2 and row[2].strip():
        source = scrub(row[2].strip(), address) or spec.source
    evidence = row[3].strip() if len(row) > 3 else ""
    if len(evidence.encode("utf-8", "surrogateescape")) > MAX_EVIDENCE_BYTES:
        raise ValueError(f"evidence is longer than {MAX_EVIDENCE_BYTES} bytes")
    if "\x00" in evidence or "\x00" in source:
        raise ValueError("evidence or source contains a NUL character")
    return at_ms, source, scrub(evidence, address) or None


def parse_time(text: str) -> int:
    """ISO 8601 (naive means UTC; `20240101` is a date) or Unix seconds → ms."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        if text.replace(".", "", 1).isdigit() and text.isascii():
            return _in_range(text, int(float(text) * 1000))
        raise ValueError(f"created_at {text!r} is not ISO 8601 or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _in_range(text, int(moment.timestamp() * 1000))


def _in_range(text: str, ms: int) -> int:
    if not 0 <= ms <= _LATEST_MS:
        raise ValueError(f"created_at {text!r} is before 1970 or too far in the future")
    return ms
