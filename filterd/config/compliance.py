"""[compliance] and [[compliance.senders]]: the way to cancel every commercial message
must carry, the senders' SMS signatures and cancel texts, and quiet hours."""

from __future__ import annotations

from filterd.config.table import Table
from filterd.errors import ConfigError
from filterd.keywords import mentioned
from filterd.quiet_hours import parse_window, zone
from filterd.settings import (
    DEFAULT_TIME_ZONE,
    CancelMethod,
    ComplianceSettings,
    KeywordSettings,
    SenderCompliance,
)

_METHODS = ", ".join(method.value for method in CancelMethod)


def read_compliance(t: Table, keywords: KeywordSettings) -> ComplianceSettings:
    """The [compliance] table; each sender's cancel text must name one of the opt-out
    `keywords` (the instruction the consumer reads is then one filterd acts on)."""
    raw_method = t.take("cancel_method", str, CancelMethod.ADD.value)
    try:
        method = CancelMethod(raw_method)
    except ValueError:
        raise ConfigError(
            "compliance.cancel_method", f"{raw_method!r}: use one of {_METHODS}"
        ) from None
    quiet = t.parse("quiet_hours", parse_window, None)
    time_zone = t.take("time_zone", str, DEFAULT_TIME_ZONE)
    try:
        zone(time_zone)
    except ValueError as exc:
        raise ConfigError("compliance.time_zone", str(exc)) from None
    senders: dict[str, SenderCompliance] = {}
    for table in t.tables("senders"):
        rules = _sender(table, keywords)
        if rules.sender in senders:
            raise ConfigError(table.key("sender"), f"{rules.sender!r} has a table already")
        senders[rules.sender] = rules
    return ComplianceSettings(method, quiet, time_zone, tuple(senders.values()))


def _sender(t: Table, keywords: KeywordSettings) -> SenderCompliance:
    sender = t.take("sender", str, required=True)
    if not sender.strip():
        raise ConfigError(t.key("sender"), "must not be empty")
    signature = _text(t, "signature")
    cancel_text = _text(t, "sms_cancel_text")
    if cancel_text is not None and mentioned(cancel_text, keywords.opt_out) is None:
        raise ConfigError(
            t.key("sms_cancel_text"),
            f"{cancel_text!r} names no opt-out keyword of [keywords] opt_out "
            f"({', '.join(keywords.opt_out)}): a consumer who follows it would not be "
            "opted out",
        )
    t.done()
    return SenderCompliance(sender, signature, cancel_text)


def _text(t: Table, key: str) -> str | None:
    """An optional non-empty text without control characters."""
    value: str | None = t.take(key, str, None)
    if value is None:
        return None
    if not value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(t.key(key), f"{value!r}: must be text without control characters")
    return value.strip()
