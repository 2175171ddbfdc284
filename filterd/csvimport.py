"""Reading an import CSV into fact requests, row by row (pure: no Redis).

Rows are `address[,created_at,source,evidence]`; a first row whose first cell
is `address` is a header. A bad row becomes a `BadRow` with its file line
number (header included) and the reason; good rows go on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from filterd.errors import InvalidAddress
from filterd.model import Channel, FactRequest, Kind
from filterd.normalize import channel_of, normalize

_FUTURE_SLACK_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """What every row of one file stands for."""

    kind: Kind
    sender: str
    channel: Channel | None
    """None: the channel each address implies (refusals: None means all channels)."""
    all_channels: bool
    source: str
    default_region: str | None
    ttl_s: int | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class GoodRow:
    """A row ready to write."""

    line: int
    request: FactRequest


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be imported, and why."""

    line: int
    reason: str


def read_rows(lines: Iterable[str], spec: ImportSpec) -> Iterator[GoodRow | BadRow]:
    """Parse CSV text lines; yield one result per data row."""
    reader = csv.reader(lines)
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if line == 1 and row[0].strip().lower() == "address":
            continue
        yield _row(row, line, spec)


def _row(row: list[str], line: int, spec: ImportSpec) -> GoodRow | BadRow:
    if len(row) > 4:
        return BadRow(line, f"{len(row)} columns; expected address[,created_at,source,evidence]")
    raw = row[0]
    try:
        address = normalize(raw, spec.default_region)
    except InvalidAddress as exc:
        return BadRow(line, str(exc))
    channel = spec.channel
    if spec.kind is not Kind.REFUSAL or not spec.all_channels:
        channel = channel or channel_of(raw)
        if channel is not address.channel:
            return BadRow(line, f"{raw!r} is not an address for channel {channel.value}")
    else:
        channel = None
    at_ms = None
    if len(row) > 1 and row[1].strip():
        try:
            at_ms = parse_time(row[1].strip())
        except ValueError as exc:
            return BadRow(line, str(exc))
        if at_ms > spec.now_ms + _FUTURE_SLACK_MS:
            return BadRow(line, f"created_at {row[1].strip()!r} is in the future")
    source = row[2].strip() if len(row) > 2 and row[2].strip() else spec.source
    evidence = row[3].strip() if len(row) > 3 and row[3].strip() else None
    return GoodRow(
        line,
        FactRequest(
            address=address,
            kind=spec.kind,
            sender=spec.sender,
            channel=channel,
            source=source,
            evidence=evidence,
            at_ms=at_ms,
            ttl_s=spec.ttl_s,
        ),
    )


def parse_time(text: str) -> int:
    """ISO 8601 (naive means UTC) or Unix seconds → ms since the epoch."""
    if text.replace(".", "", 1).isdigit():
        return int(float(text) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"created_at {text!r} is not ISO 8601 or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
