"""The decision of SPEC §1 as one pure function.

`decide()` takes the facts that the registry holds for one consumer (or None
when it could not be read) and returns a Decision with its
reason and the fact that settled it. It performs no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from filterd.model import (
    Action,
    Decision,
    Fact,
    Kind,
    MessageClass,
    Reason,
    Submission,
)

_NO_CONSENT = Decision(Action.DROP, Reason.NO_CONSENT)
"""The decision without consent has no basis: one (immutable) value serves all."""
_TRANSACTIONAL = Decision(Action.DELIVER)
"""A transactional message's decision, the same for every recipient."""


class FailMode(Enum):
    """What to do when the registry cannot be read."""

    CLOSED = "closed"
    OPEN = "open"


def decide(
    submission: Submission,
    facts: Iterable[Fact] | None,
    now_ms: int,
    fail_mode: FailMode = FailMode.CLOSED,
) -> Decision:
    """Decide one recipient. `facts` None means the registry is unavailable."""
    if submission.message_class is MessageClass.TRANSACTIONAL:
        return _TRANSACTIONAL
    if facts is None:
        if fail_mode is FailMode.OPEN:
            return Decision(Action.DELIVER, Reason.REGISTRY_UNAVAILABLE)
        return Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE)
    refusal: Fact | None = None
    permission: Fact | None = None
    for fact in facts:
        if not fact.applies_to(submission.sender, submission.channel):
            continue
        if fact.kind is Kind.REFUSAL:
            if refusal is None or fact.at_ms > refusal.at_ms:
                refusal = fact
        elif _permits(fact, now_ms) and (permission is None or fact.at_ms > permission.at_ms):
            permission = fact
    if refusal is not None and (permission is None or refusal.at_ms >= permission.at_ms):
        return Decision(Action.DROP, Reason.REFUSED, refusal)
    if permission is not None:
        return Decision(Action.DELIVER, None, permission)
    return _NO_CONSENT


def _permits(fact: Fact, now_ms: int) -> bool:
    """A consent always; a request while it has not expired."""
    if fact.kind is Kind.CONSENT:
        return True
    return fact.expires_ms is not None and fact.expires_ms > now_ms
