"""filterd.compliance: quiet hours as the decision path applies them, by the
recipient's time zone (the phone number's own zone, else [compliance] time_zone)."""

from __future__ import annotations

from datetime import UTC, datetime

from filterd.compliance import QuietRule
from filterd.model import Address, Channel
from filterd.normalize import normalize
from filterd.quiet_hours import parse_window
from filterd.settings import ComplianceSettings


def at(text: str) -> float:
    """Unix seconds of a UTC time written 2026-12-07T13:00."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


WINDOW = parse_window("21:00-08:00")


def test_a_chinese_number_is_judged_in_beijing_time() -> None:
    """+86 numbers are in Asia/Shanghai whatever time_zone says: 13:30 UTC is 21:30 in
    Beijing (quiet until 08:00 Asia/Shanghai), 01:00 UTC is 09:00 there (allowed)."""
    assert WINDOW is not None
    rule = QuietRule(WINDOW, "America/New_York")
    phone = normalize("+8613800138000")
    resume = rule.resume(phone, at("2026-12-07T13:30"))
    assert resume is not None
    assert str(resume) == "08:00 Asia/Shanghai"
    assert rule.resume(phone, at("2026-12-08T01:00")) is None


def test_a_call_is_judged_in_the_numbers_zone() -> None:
    """A call (voice) to a +86 number is judged in Beijing time, as an SMS to it is:
    13:30 UTC is 21:30 there, quiet until 08:00 Asia/Shanghai."""
    assert WINDOW is not None
    rule = QuietRule(WINDOW, "America/New_York")
    call = Address("+8613800138000", Channel.VOICE)
    resume = rule.resume(call, at("2026-12-07T13:30"))
    assert resume is not None
    assert str(resume) == "08:00 Asia/Shanghai"
    assert rule.resume(call, at("2026-12-08T01:00")) is None


def test_email_and_multi_zone_numbers_use_the_configured_zone() -> None:
    """An email address tells no zone, nor does a US number spread over several: both
    are judged in time_zone. 13:30 UTC is 08:30 in New York (allowed), 03:00 UTC is
    22:00 there (quiet until 08:00 America/New_York)."""
    assert WINDOW is not None
    rule = QuietRule(WINDOW, "America/New_York")
    for address in (normalize("jane@example.com"), normalize("+18005550100")):
        assert rule.resume(address, at("2026-12-07T13:30")) is None
        resume = rule.resume(address, at("2026-12-08T03:00"))
        assert resume is not None
        assert str(resume) == "08:00 America/New_York"


def test_no_rule_without_the_table_or_the_window() -> None:
    """No [compliance] table, or one without quiet_hours: no rule at all."""
    assert QuietRule.of(None) is None
    assert QuietRule.of(ComplianceSettings()) is None
    rule = QuietRule.of(ComplianceSettings(quiet_hours=WINDOW))
    assert rule is not None
    assert rule.default_zone.key == "Asia/Shanghai"


def test_the_answer_changes_at_the_window_edge_on_one_rule() -> None:
    """One rule asked again and again (its answers are kept for the current minute):
    at 20:59:59 Beijing time sending is allowed, at 21:00:00 it is quiet until 08:00,
    at 07:59:59 still quiet, at 08:00:00 allowed again."""
    assert WINDOW is not None
    rule = QuietRule(WINDOW, "Asia/Shanghai")
    email = normalize("jane@example.com")
    edge = at("2026-12-07T13:00")  # 21:00 in Shanghai
    assert rule.resume(email, edge - 1) is None
    assert rule.resume(email, edge - 30) is None
    quiet = rule.resume(email, edge)
    assert quiet is not None
    assert str(quiet) == "08:00 Asia/Shanghai"
    assert rule.resume(email, edge + 59) == quiet
    morning = at("2026-12-08T00:00")  # 08:00 in Shanghai
    assert rule.resume(email, morning - 1) == quiet
    assert rule.resume(email, morning) is None
