"""SMTP reply texts (filterd/replies.py): each decision maps to the exact text of
SPEC §4, shared by the SMTP relay and the Postfix policy service."""

from __future__ import annotations

import re

import pytest

from filterd import replies
from filterd.model import Action, Channel, Decision, Fact, Kind, Reason

ADDRESS = "jane@example.com"


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (Decision(Action.DELIVER), None),
        (
            Decision(Action.DELIVER, None, Fact(Kind.CONSENT, "acme", Channel.EMAIL, 1, "t")),
            None,
        ),
        (Decision(Action.DELIVER, Reason.REGISTRY_UNAVAILABLE), None),  # fail_mode = "open"
        (
            Decision(Action.DROP, Reason.REFUSED),
            "550 5.7.1 <jane@example.com>: recipient has refused commercial messages",
        ),
        (
            Decision(Action.DROP, Reason.REFUSED, Fact(Kind.REFUSAL, "*", None, 1, "t")),
            "550 5.7.1 <jane@example.com>: recipient has refused commercial messages",
        ),
        (
            Decision(Action.DROP, Reason.NO_CONSENT),
            "550 5.7.1 <jane@example.com>: no consent or request on record",
        ),
        (
            Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE),
            "451 4.3.0 consent registry unavailable, try again later",
        ),
        (
            Decision(Action.DEFER, Reason.QUIET_HOURS, None, "08:00 Asia/Shanghai"),
            "451 4.7.0 <jane@example.com>: outside sending hours in the recipient's time "
            "zone, try again after 08:00 Asia/Shanghai",
        ),
    ],
)
def test_for_decision(decision: Decision, expected: str | None) -> None:
    """Deliver → None (no reply of its own); refused, no consent, registry unavailable
    and quiet hours (with the time sending may resume) → their exact texts."""
    assert replies.for_decision(decision, ADDRESS) == expected


def test_address_is_echoed_as_given() -> None:
    """The address in a 550 is the one the client wrote, not the canonical form."""
    text = replies.for_decision(Decision(Action.DROP, Reason.NO_CONSENT), "Jane@Example.COM")
    assert text == "550 5.7.1 <Jane@Example.COM>: no consent or request on record"


def test_fixed_texts() -> None:
    """The replies that do not depend on a decision, verbatim."""
    assert replies.UNAVAILABLE == "451 4.3.0 consent registry unavailable, try again later"
    assert replies.AUTH_REQUIRED == "530 5.7.0 Authentication required"
    assert replies.NO_ACCOUNT == (
        "554 5.7.1 client is not allowed to send through filterd (no account)"
    )
    assert replies.TOO_MANY_RECIPIENTS == "452 4.5.3 Too many recipients"
    assert replies.ALL_DROPPED == "550 5.7.1 no recipient has consented to commercial messages"
    assert replies.BAD_ADDRESS.format(address="x@y", reason="why") == "553 5.1.3 <x@y>: why"


def all_texts() -> list[str]:
    """Every reply text the module can produce (decisions for a sample address)."""
    decisions = [
        Decision(Action.DROP, Reason.REFUSED),
        Decision(Action.DROP, Reason.NO_CONSENT),
        Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE),
    ]
    texts = [replies.for_decision(d, ADDRESS) or "" for d in decisions]
    fixed = [replies.AUTH_REQUIRED, replies.NO_ACCOUNT, replies.TOO_MANY_RECIPIENTS]
    return [
        *texts,
        *fixed,
        replies.ALL_DROPPED,
        replies.BAD_ADDRESS.format(address="a", reason="b"),
    ]


@pytest.mark.parametrize("text", all_texts())
def test_codes_are_consistent(text: str) -> None:
    """Every reply is `NNN X.Y.Z text` on one line, the enhanced status code's class
    matching the reply code's (RFC 3463), so Postfix and SMTP clients keep it as is."""
    match = re.fullmatch(r"([245])\d\d ([245])\.\d{1,3}\.\d{1,3} [^\r\n]+", text)
    assert match is not None, text
    assert match.group(1) == match.group(2)
