"""SMTP reply texts for decisions (SPEC §4), shared by the SMTP relay and the
Postfix policy service (pure)."""

from __future__ import annotations

from filterd.model import Action, Decision, Reason

UNAVAILABLE = "451 4.3.0 consent registry unavailable, try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
NO_ACCOUNT = "554 5.7.1 client is not allowed to send through filterd (no account)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
BAD_ADDRESS = "553 5.1.3 <{address}>: {reason}"
ALL_DROPPED = "550 5.7.1 no recipient has consented to commercial messages"


def for_decision(decision: Decision, address: str) -> str | None:
    """The reply that drops or defers this recipient, or None when it is delivered."""
    if decision.action is Action.DELIVER:
        return None
    if decision.action is Action.DEFER and decision.reason is Reason.QUIET_HOURS:
        return (
            f"451 4.7.0 <{address}>: outside sending hours in the recipient's time zone, "
            f"try again after {decision.resume}"
        )
    if decision.action is Action.DEFER:
        return UNAVAILABLE
    if decision.reason is Reason.REFUSED:
        return f"550 5.7.1 <{address}>: recipient has refused commercial messages"
    return f"550 5.7.1 <{address}>: no consent or request on record"
