"""Complaints from mailbox providers' feedback loops (SPEC §9).

Mail to `smtp.feedback_address` on the unsubscribe listener is an Abuse
Reporting Format report (smtp/feedback.py reads it). An abuse report whose
returned original carries a List-Unsubscribe target filterd added (the
`{http.public_url}/unsubscribe/TOKEN` URL or the
`unsubscribe+TOKEN@{smtp.unsubscribe_domain}` mailto) with a token that
verifies (tokens.py: signed, not expired, a known sender, the email channel)
records a refusal of that token's sender on email for its consumer, source
`complaint`, evidence the report's Arrival-Date and Source-IP (masked by the
service as all evidence is), durably before the 250. Any other report is
taken (250), audited as `complaint_unmatched` with the reason, and changes
nothing; a message that is not a report gets 550 5.6.0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import unquote

from filterd.logs import get_logger
from filterd.model import AuditEntry, Channel
from filterd.service import Service
from filterd.smtp.feedback import FeedbackReport
from filterd.smtp.oneclick import OneClick
from filterd.tokens import Unsubscribe

log = get_logger("smtp")

REPORT_TAKEN = "250 2.0.0 feedback report received"
NOT_A_REPORT = (
    "550 5.6.0 this address takes feedback reports only "
    "(RFC 5965: multipart/report; report-type=feedback-report)"
)
ORIGIN = "complaint"


class Complaints:
    """The feedback address of one unsubscribe listener and what its reports do."""

    def __init__(
        self,
        service: Service,
        oneclick: OneClick,
        address: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.oneclick = oneclick
        self.address = address.lower()
        """smtp.feedback_address (compared without regard to case)."""
        self._clock = clock

    def is_feedback_address(self, address: str) -> bool:
        """Whether a RCPT path names the feedback address."""
        return address.lower().rstrip(".") == self.address

    def match(self, report: FeedbackReport) -> Unsubscribe | str:
        """The opt-out an abuse report names, or why it names none (`not_abuse`,
        the report's `problem`, `no_token`, `bad_token`, `not_email`)."""
        if report.problem is not None and not report.unsubscribe:
            return report.problem
        if not report.abuse:
            return "not_abuse"
        tokens = [t for t in map(self._token, report.unsubscribe) if t is not None]
        if not tokens:
            return "no_token"
        for token in tokens:
            wanted = self.oneclick.verify(token, origin=ORIGIN)
            if wanted is not None:
                return wanted if wanted.channel is Channel.EMAIL else "not_email"
        return "bad_token"

    async def take(self, report: FeedbackReport, peer: str, *, message_id: str) -> None:
        """Record the refusal a complaint names (durably: raises RegistryUnavailable
        when the registry cannot take it), or audit it as `complaint_unmatched`."""
        matched = self.match(report)
        if isinstance(matched, str):
            log.info("complaint_unmatched", reason=matched, feedback_type=report.feedback_type,
                     message_id=message_id)  # fmt: skip
            self.service.audit_event(
                AuditEntry(
                    at_ms=self.service.now_ms(),
                    event="complaint_unmatched",
                    reason=matched,
                    origin=ORIGIN,
                    message_id=message_id,
                )
            )
            return
        how = (
            f"abuse report, Arrival-Date {report.arrival_date or 'unknown'}, "
            f"Source-IP {report.source_ip or 'unknown'}"
        )
        fact = matched.refusal(source=ORIGIN, how=how, peer=peer, now_s=self._clock())
        await self.service.record_consumer(matched.consumer, fact, origin=ORIGIN)

    def _token(self, target: str) -> str | None:
        """The token in one List-Unsubscribe target filterd would have added, or None."""
        prefix = f"{self.oneclick.public_url}/unsubscribe/"
        if target[: len(prefix)].lower() == prefix.lower():
            return _QUERY.split(target[len(prefix) :], maxsplit=1)[0] or None
        if target[:7].lower() == "mailto:":
            address = unquote(_QUERY.split(target[7:], maxsplit=1)[0])
            return self.oneclick.intake_token(address)
        return None


_QUERY = re.compile(r"[?#]")
