"""Quiet hours (filterd/quiet_hours.py): the window text, zone names, and the rule
`quiet_until(window, zone, instant)` by the recipient's local wall time, across
midnight and across DST changes. Instants are passed in; no clock is read."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.quiet_hours import (
    InvalidWindow,
    QuietHours,
    Resume,
    UnknownZone,
    parse_window,
    quiet_until,
    recipient_zone,
    zone,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(time(21), time(8))
HOUR = 3600.0


def at(wall: str, tz: ZoneInfo = NEW_YORK, fold: int = 0) -> float:
    """The instant the wall clock in `tz` reads `wall` (ISO text); `fold=1` for the
    second of a time that happens twice."""
    return datetime.fromisoformat(wall).replace(tzinfo=tz, fold=fold).timestamp()


def utc(text: str) -> float:
    """The instant written as UTC ISO text."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


def wall_of(instant: float, tz: ZoneInfo) -> datetime:
    """The local wall time of `instant` in `tz`."""
    return datetime.fromtimestamp(instant, tz)


# --- the window text ----------------------------------------------------------


def test_empty_text_means_no_window() -> None:
    """`quiet_hours = ""` (the default) is no window, and no window is never quiet."""
    assert parse_window("") is None
    assert quiet_until(None, SHANGHAI, at("2024-01-01T23:00", SHANGHAI)) is None


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("21:00-08:00", time(21), time(8)),
        ("12:30-14:45", time(12, 30), time(14, 45)),
        ("00:00-23:59", time(0), time(23, 59)),
        ("22:00-00:00", time(22), time(0)),
    ],
)
def test_window_text_parses_and_prints_back(text: str, start: time, end: time) -> None:
    """The text "HH:MM-HH:MM" gives the window from the first time to the second, and the
    window prints as the same text."""
    window = parse_window(text)
    assert window == QuietHours(start, end)
    assert str(window) == text


@pytest.mark.parametrize(
    "text",
    [
        "21:00",
        "9:00-17:00",
        "21:00-8:00",
        " 21:00-08:00",
        "21:00-08:00 ",
        "21:00 - 08:00",
        "21:00–08:00",
        "21.00-08.00",
        "２１:00-08:00",
        "24:00-08:00",
        "21:00-24:00",
        "21:60-08:00",
        "21:00-08:75",
        "08:00-08:00",
        "none",
    ],
)
def test_malformed_window_raises_naming_the_text(text: str) -> None:
    """Anything but HH:MM-HH:MM with hours 00-23, minutes 00-59 and two different
    times raises InvalidWindow, a ValueError whose message names the text."""
    with pytest.raises(InvalidWindow) as caught:
        parse_window(text)
    assert isinstance(caught.value, ValueError)
    assert repr(text) in str(caught.value)
    assert caught.value.text == text


def test_window_of_no_length_cannot_be_built() -> None:
    """A QuietHours whose start is its end is refused when built directly too."""
    with pytest.raises(InvalidWindow, match="'08:00-08:00'"):
        QuietHours(time(8), time(8))


# --- zone names ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["Asia/Shanghai", "America/New_York", "UTC"])
def test_zone_gives_the_named_zone(name: str) -> None:
    """A name from the time zone database gives that zone, its key the name."""
    assert zone(name).key == name


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "asia/shanghai", "Asia", "/Asia/Shanghai", "../Asia/Shanghai"]
)
def test_unknown_zone_raises_naming_it(name: str) -> None:
    """An unknown, empty, mis-cased, directory or path-like name raises UnknownZone,
    a ValueError whose message names it."""
    with pytest.raises(UnknownZone) as caught:
        zone(name)
    assert isinstance(caught.value, ValueError)
    assert repr(name) in str(caught.value)


def test_recipient_zone_prefers_the_phone_numbers_own() -> None:
    """The phone number's zone is used when there is one the database knows;
    otherwise (email, several zones, unknown name) the configured default."""
    assert recipient_zone("America/New_York", SHANGHAI) == NEW_YORK
    assert recipient_zone(None, SHANGHAI) is SHANGHAI
    assert recipient_zone("Etc/Unknown", SHANGHAI) is SHANGHAI


# --- the rule: one day, across midnight, boundaries -----------------------------


@pytest.mark.parametrize(
    ("wall", "resume"),
    [
        ("2024-05-01T11:59:59", None),
        ("2024-05-01T12:00", "2024-05-01T14:00"),
        ("2024-05-01T13:59:59.999", "2024-05-01T14:00"),
        ("2024-05-01T14:00", None),
        ("2024-05-01T23:00", None),
    ],
)
def test_window_inside_one_day(wall: str, resume: str | None) -> None:
    """12:00-14:00: quiet from 12:00 (inclusive) until 14:00 (exclusive), and the
    resume time is that day's 14:00."""
    found = quiet_until(QuietHours(time(12), time(14)), SHANGHAI, at(wall, SHANGHAI))
    if resume is None:
        assert found is None
    else:
        assert found == Resume(at(resume, SHANGHAI), "14:00", "Asia/Shanghai")


@pytest.mark.parametrize(
    ("wall", "resume"),
    [
        ("2024-01-01T20:59:59.999", None),
        ("2024-01-01T21:00", "2024-01-02T08:00"),
        ("2024-01-01T23:59:59", "2024-01-02T08:00"),
        ("2024-01-02T00:00", "2024-01-02T08:00"),
        ("2024-01-02T07:59:59.999", "2024-01-02T08:00"),
        ("2024-01-02T08:00", None),
        ("2024-01-02T12:00", None),
    ],
)
def test_window_across_midnight(wall: str, resume: str | None) -> None:
    """21:00-08:00: quiet from 21:00 until the next morning's 08:00, start
    inclusive and end exclusive; before midnight the resume is the next day's."""
    found = quiet_until(NIGHT, SHANGHAI, at(wall, SHANGHAI))
    if resume is None:
        assert found is None
    else:
        assert found == Resume(at(resume, SHANGHAI), "08:00", "Asia/Shanghai")


def test_resume_reads_as_the_reply_wants() -> None:
    """str(Resume) is "HH:MM ZONE" with the IANA name: "08:00 Asia/Shanghai"."""
    found = quiet_until(NIGHT, SHANGHAI, at("2024-01-01T22:00", SHANGHAI))
    assert found is not None
    assert str(found) == "08:00 Asia/Shanghai"
    assert f"try again after {found}" == "try again after 08:00 Asia/Shanghai"


def test_window_ending_and_starting_at_midnight() -> None:
    """22:00-00:00 ends at the next midnight ("00:00"); 00:00-06:00 starts at it."""
    late = quiet_until(parse_window("22:00-00:00"), SHANGHAI, at("2024-01-01T23:30", SHANGHAI))
    assert late == Resume(at("2024-01-02T00:00", SHANGHAI), "00:00", "Asia/Shanghai")
    early = parse_window("00:00-06:00")
    assert quiet_until(early, SHANGHAI, at("2024-01-01T23:59:59", SHANGHAI)) is None
    assert quiet_until(early, SHANGHAI, at("2024-01-02T00:00", SHANGHAI)) is not None


def test_the_recipients_zone_decides() -> None:
    """One instant is night in Shanghai (22:00, quiet) and morning in New York
    (10:00, allowed)."""
    instant = utc("2024-06-01T14:00")
    assert quiet_until(NIGHT, SHANGHAI, instant) is not None
    assert quiet_until(NIGHT, NEW_YORK, instant) is None


# --- the rule across DST changes ------------------------------------------------


@pytest.mark.parametrize("wall", ["2024-03-09T21:00", "2024-03-10T01:59", "2024-03-10T03:00"])
def test_spring_forward_night_is_an_hour_shorter(wall: str) -> None:
    """New York, 2024-03-10 (02:00 EST -> 03:00 EDT): on both sides of the jump
    the window ends at 08:00 EDT (12:00 UTC), ten hours after 21:00 EST."""
    found = quiet_until(NIGHT, NEW_YORK, at(wall))
    assert found == Resume(utc("2024-03-10T12:00"), "08:00", "America/New_York")
    assert found.at_s - at("2024-03-09T21:00") == 10 * HOUR


def test_end_in_the_spring_forward_gap_resumes_after_the_jump() -> None:
    """Window 21:00-02:30 on the night 02:30 does not exist: sending resumes at the
    first instant after the gap, 03:00 EDT (07:00 UTC), named "03:00"; at 03:00
    sending is allowed."""
    window = parse_window("21:00-02:30")
    found = quiet_until(window, NEW_YORK, at("2024-03-10T01:30"))
    assert found == Resume(utc("2024-03-10T07:00"), "03:00", "America/New_York")
    assert quiet_until(window, NEW_YORK, utc("2024-03-10T06:59:59")) is not None
    assert quiet_until(window, NEW_YORK, utc("2024-03-10T07:00")) is None


def test_start_in_the_spring_forward_gap_begins_after_the_jump() -> None:
    """Window 02:30-08:00 on spring-forward day: 01:59:59 EST is allowed, the
    first instant after the jump (03:00 EDT) is quiet until 08:00 EDT."""
    window = parse_window("02:30-08:00")
    assert quiet_until(window, NEW_YORK, at("2024-03-10T01:59:59")) is None
    found = quiet_until(window, NEW_YORK, utc("2024-03-10T07:00"))
    assert found == Resume(utc("2024-03-10T12:00"), "08:00", "America/New_York")


@pytest.mark.parametrize(
    ("wall", "fold"),
    [
        ("2024-11-02T21:00", 0),
        ("2024-11-03T01:30", 0),
        ("2024-11-03T01:30", 1),
        ("2024-11-03T07:00", 0),
    ],
)
def test_fall_back_night_is_an_hour_longer(wall: str, fold: int) -> None:
    """New York, 2024-11-03 (02:00 EDT -> 01:00 EST): before, during and after the
    repeated hour the window ends at 08:00 EST (13:00 UTC), twelve hours after
    21:00 EDT."""
    found = quiet_until(NIGHT, NEW_YORK, at(wall, fold=fold))
    assert found == Resume(utc("2024-11-03T13:00"), "08:00", "America/New_York")
    assert found.at_s - at("2024-11-02T21:00") == 12 * HOUR


def test_end_in_the_repeated_hour() -> None:
    """Window 21:00-01:30 on fall-back night, 01:30 happening twice: sending
    resumes at the first 01:30 (EDT); the repeated stretch is judged by its wall
    time, so 01:10 EST is quiet again until the second 01:30 (EST)."""
    window = parse_window("21:00-01:30")
    first = quiet_until(window, NEW_YORK, at("2024-11-03T01:10"))
    assert first == Resume(utc("2024-11-03T05:30"), "01:30", "America/New_York")
    assert quiet_until(window, NEW_YORK, at("2024-11-03T01:40")) is None
    again = quiet_until(window, NEW_YORK, at("2024-11-03T01:10", fold=1))
    assert again == Resume(utc("2024-11-03T06:30"), "01:30", "America/New_York")
    assert quiet_until(window, NEW_YORK, at("2024-11-03T01:30", fold=1)) is None


def test_start_in_the_repeated_hour() -> None:
    """Window 01:30-08:00 on fall-back night: quiet from the first 01:30 (EDT);
    set back to 01:00 EST the wall time is outside the window, so sending is
    allowed until the second 01:30; the resume given in the first pass is 08:00."""
    window = parse_window("01:30-08:00")
    found = quiet_until(window, NEW_YORK, at("2024-11-03T01:45"))
    assert found == Resume(utc("2024-11-03T13:00"), "08:00", "America/New_York")
    assert quiet_until(window, NEW_YORK, at("2024-11-03T01:10", fold=1)) is None
    assert quiet_until(window, NEW_YORK, at("2024-11-03T01:30", fold=1)) == found


@pytest.mark.parametrize("day", ["2024-01-15", "2024-03-09", "2024-03-10", "2024-11-02",
                                 "2024-11-03", "2024-12-31"])  # fmt: skip
def test_zone_without_dst_has_nights_of_equal_length(day: str) -> None:
    """Asia/Shanghai keeps one offset all year: every night of 21:00-08:00, New
    York's DST dates included, is eleven hours long and ends at 08:00."""
    start = at(f"{day}T21:00", SHANGHAI)
    found = quiet_until(NIGHT, SHANGHAI, start)
    assert found is not None
    assert found.at_s - start == 11 * HOUR
    assert found.local == "08:00"


def test_half_hour_offset_zone() -> None:
    """Asia/Kolkata (UTC+05:30): 22:00 IST is quiet until 08:00 IST, 02:30 UTC."""
    kolkata = zone("Asia/Kolkata")
    found = quiet_until(NIGHT, kolkata, at("2024-07-01T22:00", kolkata))
    assert found == Resume(utc("2024-07-02T02:30"), "08:00", "Asia/Kolkata")


def test_end_on_a_skipped_day() -> None:
    """Pacific/Apia skipped 2011-12-30 (UTC-10 -> UTC+14): from 21:30 on the 29th
    the window's next end that exists is 08:00 on the 31st (the first instant
    after the skip, midnight, is still inside the window)."""
    apia = zone("Pacific/Apia")
    found = quiet_until(NIGHT, apia, at("2011-12-29T21:30", apia))
    assert found == Resume(at("2011-12-31T08:00", apia), "08:00", "Pacific/Apia")


def test_time_outside_the_window_skipped_whole() -> None:
    """Window 01:15-01:00 in London leaves only 01:00-01:15 outside it; on
    2024-03-31 the clocks jump from 01:00 to 02:00, so that day never leaves the
    window and sending resumes at 01:00 on 1 April."""
    london = zone("Europe/London")
    found = quiet_until(parse_window("01:15-01:00"), london, utc("2024-03-30T01:15"))
    assert found == Resume(at("2024-04-01T01:00", london), "01:00", "Europe/London")


# --- the rule as a property ------------------------------------------------------

ZONES = [
    ZoneInfo(name)
    for name in (
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",  # a half-hour DST shift
        "America/St_Johns",  # a half-hour offset with DST
        "Asia/Kolkata",
    )
]
SINCE, UNTIL = utc("1975-01-01T00:00"), utc("2060-01-01T00:00")


def transitions(tz: ZoneInfo, year: int) -> list[float]:
    """Instants (to the hour) in `year` around which `tz` changes its offset."""
    start = utc(f"{year}-01-01T00:00")
    found, offset = [], wall_of(start, tz).utcoffset()
    for hour in range(366 * 24):
        now = wall_of(start + hour * HOUR, tz).utcoffset()
        if now != offset:
            found.append(start + hour * HOUR)
            offset = now
    return found


NEAR_CHANGES = sorted({t for tz in ZONES for year in (2024, 2045) for t in transitions(tz, year)})


@st.composite
def windows(draw: st.DrawFn) -> QuietHours:
    """Any window, its minutes often on the quarter hour (where DST changes fall)."""
    minutes = st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59))
    start = time(draw(st.integers(0, 23)), draw(minutes))
    end = time(draw(st.integers(0, 23)), draw(minutes))
    if start == end:
        end = time((end.hour + 1) % 24, end.minute)
    window = parse_window(f"{start:%H:%M}-{end:%H:%M}")
    assert window is not None
    return window


INSTANTS = st.one_of(
    st.floats(SINCE, UNTIL),
    st.sampled_from(NEAR_CHANGES).flatmap(lambda t: st.floats(t - 26 * HOUR, t + 26 * HOUR)),
)


@given(windows(), st.sampled_from(ZONES), INSTANTS)
@settings(max_examples=1500, deadline=None)
@example(parse_window("21:00-02:30"), NEW_YORK, at("2024-03-10T01:30"))
@example(parse_window("21:00-01:30"), NEW_YORK, at("2024-11-03T01:10", fold=1))
@example(parse_window("01:30-08:00"), NEW_YORK, at("2024-11-03T01:45"))
@example(parse_window("01:15-01:00"), ZoneInfo("Europe/London"), utc("2024-03-30T01:15"))
def test_quiet_exactly_when_the_wall_time_is_in_the_window(
    window: QuietHours, tz: ZoneInfo, now: float
) -> None:
    """quiet_until is None exactly when the local wall time is outside the window;
    otherwise sending resumes after now, at an instant whose wall time is outside
    the window and reads as `local`, one second before which is still quiet. That
    is at most 25 h later (a day and a DST hour), or 49 h when the time outside
    the window is an hour or less (a spring-forward gap can skip all of it)."""
    found = quiet_until(window, tz, now)
    assert (found is None) == (not window.contains(wall_of(now, tz).time()))
    if found is None:
        return
    start, end = (t.hour * 60 + t.minute for t in (window.start, window.end))
    outside_minutes = (start - end) % (24 * 60)
    assert now < found.at_s <= now + (25 if outside_minutes > 60 else 49) * HOUR
    resumed = wall_of(found.at_s, tz)
    assert not window.contains(resumed.time())
    assert found.local == f"{resumed:%H:%M}"
    assert found.zone == tz.key
    assert quiet_until(window, tz, max(now, found.at_s - 1)) is not None
