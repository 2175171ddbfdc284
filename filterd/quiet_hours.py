"""Quiet hours: when a commercial message must wait for the recipient's morning.

Config `[compliance] quiet_hours = "21:00-08:00"` is a window of the recipient's
local wall time (`""`: none); `time_zone` is the zone used when the recipient's
own is not known. Pure: a function of (window, zone, instant), no clock read.

The rule is the wall clock's alone: an instant is quiet when the recipient's
local wall time `t` has `start <= t < end` (a window with `start > end` crosses
midnight). Inside it, `quiet_until` says when sending may resume: the first
instant at or after now that the wall clock reads `end`. Across DST changes:

- `end` skipped by a spring-forward gap (end 02:30 in New York on that day):
  sending resumes at the first instant after the gap (03:00 EDT), and the reply
  names that wall time, "03:00".
- `end` happening twice at a fall-back (01:30): sending resumes at the first
  01:30. The repeated stretch is judged by its wall times like any other, so its
  times inside the window are quiet again, until the second 01:30.
- Clocks set back across `start` (window 01:30-08:00; 02:00 EDT -> 01:00 EST)
  take the wall time out of the window for a while (01:00-01:29 EST may send);
  the resume time given stays the window's end: a true "try again after",
  though not the earliest.
- A gap that skips the end and lands inside the window again (Pacific/Apia
  skipped 2011-12-30; a window leaving less than the gap's hour outside it)
  resumes at the next end the clock reads: that day's clock never left the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

_WINDOW = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
_MAX_STEPS = 4  # window ends to pass before one is outside the window (gaps of a day)


class InvalidWindow(ValueError):
    """A `quiet_hours` text that is not a window "HH:MM-HH:MM"; names the text."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r} is not a window HH:MM-HH:MM: {reason}")
        self.text = text
        self.reason = reason


class UnknownZone(ValueError):
    """A time zone name that is not in the time zone database; names it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a time zone name (e.g. Asia/Shanghai)")
        self.name = name


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A window of local wall time, start inclusive, end exclusive."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise InvalidWindow(str(self), "the start and the end are the same time")

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def crosses_midnight(self) -> bool:
        """True for a window like 21:00-08:00 (its end is on the next day)."""
        return self.start > self.end

    def contains(self, wall: time) -> bool:
        """True when the local wall time `wall` is inside the window."""
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end


@dataclass(frozen=True, slots=True)
class Resume:
    """When a deferred message may be sent: `str()` gives "08:00 Asia/Shanghai"."""

    at_s: float
    """The instant (Unix seconds) the window ends."""
    local: str
    """The recipient's wall time at that instant, "HH:MM"."""
    zone: str
    """The IANA name of the recipient's zone, e.g. "Asia/Shanghai"."""

    def __str__(self) -> str:
        return f"{self.local} {self.zone}"


def parse_window(text: str) -> QuietHours | None:
    """The window written "HH:MM-HH:MM" (00-23 and 00-59), None for ""."""
    if text == "":
        return None
    found = _WINDOW.fullmatch(text)
    if found is None:
        raise InvalidWindow(text, "write it like 21:00-08:00")
    hour1, minute1, hour2, minute2 = (int(part) for part in found.groups())
    if max(hour1, hour2) > 23 or max(minute1, minute2) > 59:
        raise InvalidWindow(text, "hours run 00-23 and minutes 00-59")
    if (hour1, minute1) == (hour2, minute2):
        raise InvalidWindow(text, "the start and the end are the same time")
    return QuietHours(time(hour1, minute1), time(hour2, minute2))


def zone(name: str) -> ZoneInfo:
    """The time zone `name` (an IANA name such as Asia/Shanghai); UnknownZone if none."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise UnknownZone(name) from None


def recipient_zone(phone_zone: str | None, default: ZoneInfo) -> ZoneInfo:
    """The zone to judge a recipient by: the phone number's own zone when there is
    one (`normalize.phone_time_zone`) and the database knows it, else `default`
    (`compliance.time_zone`; always for email)."""
    if phone_zone is None:
        return default
    try:
        return zone(phone_zone)
    except UnknownZone:
        return default


def quiet_until(window: QuietHours | None, zone: ZoneInfo, now_s: float) -> Resume | None:
    """None when sending is allowed at `now_s` (no window, or the recipient's wall
    time in `zone` is outside it), else when sending resumes."""
    if window is None:
        return None
    at_s = now_s
    local = datetime.fromtimestamp(at_s, zone)
    if not window.contains(local.time()):
        return None
    for _ in range(_MAX_STEPS):  # more than one only when a gap of hours skips the end
        day = local.date()
        if window.crosses_midnight and local.time() >= window.start:
            day += timedelta(days=1)
        at_s = _first_at_or_after(datetime.combine(day, window.end), zone, at_s)
        local = datetime.fromtimestamp(at_s, zone)
        if not window.contains(local.time()):
            break
    return Resume(at_s, f"{local:%H:%M}", str(zone))


def _first_at_or_after(wall: datetime, zone: ZoneInfo, not_before: float) -> float:
    """The first instant from `not_before` on whose wall time in `zone` is `wall`
    or, when the clocks skip `wall`, the instant they jump past it."""
    for fold in (0, 1):  # the first and the second occurrence of a repeated time
        instant = wall.replace(tzinfo=zone, fold=fold).timestamp()
        if instant >= not_before and _wall(instant, zone) == wall:
            return instant
    # In a gap: read with the offset after the jump, `wall` is an instant before
    # the jump; read with the offset before it, an instant after. Search between.
    ends = (int(wall.replace(tzinfo=zone, fold=fold).timestamp()) for fold in (0, 1))
    low, high = sorted(ends)
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return float(high)


def _wall(instant: float, zone: ZoneInfo) -> datetime:
    """The naive local wall time of `instant` in `zone`."""
    return datetime.fromtimestamp(instant, zone).replace(tzinfo=None, fold=0)
