"""The compliance rules the decision path applies after the registry says deliver:
quiet hours in the recipient's time zone (the SMS cancel text and signature are
in filterd.smpp.cancel, the email List-Unsubscribe rule in the SMTP relay).

A phone number (an SMS or a call) is judged in the one time zone its number
places it in (`normalize.phone_time_zone`: +86 → Asia/Shanghai), any other
recipient (every email address, numbers spread over several zones such as most
US ones) in `[compliance] time_zone`.
"""

from __future__ import annotations

from filterd.model import Address, Channel
from filterd.normalize import phone_time_zone
from filterd.quiet_hours import QuietHours, Resume, quiet_until, recipient_zone, zone
from filterd.settings import ComplianceSettings


class QuietRule:
    """Quiet hours as `Service` applies them to commercial recipients."""

    def __init__(self, window: QuietHours, default_zone: str) -> None:
        self.window = window
        self.default_zone = zone(default_zone)
        self._minute = -1
        self._answers: dict[str, Resume | None] = {}
        """This minute's answer per zone: the window's ends are whole minutes of the
        zone's wall clock, and every zone's offset is whole minutes, so the answer
        cannot change inside a minute of UTC (a decision costs a dict look-up, not
        the calendar arithmetic)."""

    @classmethod
    def of(cls, settings: ComplianceSettings | None) -> QuietRule | None:
        """The rule of a [compliance] table; None without the table or its quiet_hours."""
        if settings is None or settings.quiet_hours is None:
            return None
        return cls(settings.quiet_hours, settings.time_zone)

    def resume(self, address: Address, now_s: float) -> Resume | None:
        """When a commercial message to `address` may be sent, if not now; None: now."""
        phone = address.channel is not Channel.EMAIL  # sms or voice: a phone number
        own = phone_time_zone(address.canonical) if phone else None
        where = recipient_zone(own, self.default_zone)
        minute = int(now_s // 60)
        if minute != self._minute:
            self._minute, self._answers = minute, {}
        key = str(where.key)
        if key not in self._answers:
            self._answers[key] = quiet_until(self.window, where, now_s)
        return self._answers[key]
