"""What the policy service answers a request (filterd/policy_rules.py), sans-IO: the
account, the protocol state and admission decide between a ready reply and a
recipient to screen; a decision becomes its action; actions become reply bytes."""

from __future__ import annotations

import ipaddress

import pytest

from filterd.accounts import AccountBook
from filterd.model import Action, Address, Channel, Decision, MessageClass, Reason
from filterd.policy_rules import (
    DUNNO,
    DUNNO_REPLY,
    Screen,
    action_for,
    find_account,
    loggable,
    plan,
    reply,
)
from filterd.policy_wire import PolicyParser
from filterd.settings import SmtpAccount
from tests.policy_helpers import BOB, JANE, request

NEWS = SmtpAccount("newsletter", "acme", MessageClass.COMMERCIAL, password="pw")  # noqa: S106
TOOL = SmtpAccount(
    "legacy-tool", "beta", MessageClass.COMMERCIAL, networks=(ipaddress.ip_network("10.1.2.0/24"),)
)
ACCOUNTS = AccountBook([NEWS, TOOL])
NO_ACCOUNT = "554 5.7.1 client is not allowed to send through filterd (no account)"


def parsed(data: bytes) -> dict[str, str]:
    """The one request in `data`."""
    [one] = PolicyParser().feed(data)
    return one


def test_rcpt_with_an_account_is_screened() -> None:
    """A RCPT request of a known account with a valid recipient is to be screened: the
    account, the normalised address, the recipient as sent and the queue id."""
    todo = plan(parsed(request("Jane@Example.COM", queue_id="3F2A1")), ACCOUNTS, None)
    assert isinstance(todo, Screen)
    assert (todo.account, todo.address) == (NEWS, Address(JANE, Channel.EMAIL))
    assert (todo.recipient, todo.message_id) == ("Jane@Example.COM", "3F2A1")


def test_empty_queue_id_is_no_message_id() -> None:
    """Postfix's empty queue_id (before the first recipient is accepted) is no message
    id; an undecodable one is shown with U+FFFD (valid UTF-8 for logs and audit)."""
    todo = plan(parsed(request(JANE)), ACCOUNTS, None)
    assert isinstance(todo, Screen)
    assert todo.message_id is None
    todo = plan(parsed(request(JANE).replace(b"queue_id=", b"queue_id=\xff1")), ACCOUNTS, None)
    assert isinstance(todo, Screen)
    assert todo.message_id == "\ufffd1"


@pytest.mark.parametrize("state", ["CONNECT", "MAIL", "DATA", "END-OF-MESSAGE", ""])
def test_other_states_are_dunno_without_an_account(state: str) -> None:
    """Outside RCPT (or without a protocol_state) the answer is DUNNO, account or not."""
    request_ = parsed(request(BOB, state=state, sasl_username="", client_address="192.0.2.1"))
    assert plan(request_, ACCOUNTS, None) == DUNNO
    assert plan({}, ACCOUNTS, None) == DUNNO


def test_protocol_state_is_case_blind() -> None:
    """`rcpt` is RCPT: the recipient is screened."""
    assert isinstance(plan(parsed(request(JANE, state="rcpt")), ACCOUNTS, None), Screen)


def test_account_by_username_else_by_address() -> None:
    """sasl_username picks the account; an empty one leaves it to client_address; an
    unknown username is not rescued by a known address."""
    assert find_account({"sasl_username": "newsletter"}, ACCOUNTS) is NEWS
    assert find_account({"sasl_username": "", "client_address": "10.1.2.3"}, ACCOUNTS) is TOOL
    assert find_account({"client_address": "10.1.2.3"}, ACCOUNTS) is TOOL
    assert find_account({"sasl_username": "x", "client_address": "10.1.2.3"}, ACCOUNTS) is None
    assert plan(parsed(request(JANE, sasl_username="x")), ACCOUNTS, None) == NO_ACCOUNT


@pytest.mark.parametrize(
    ("recipient", "answer"),
    [
        ("not-an-address", "553 5.1.3 <not-an-address>: not an email address"),
        ("ja ne@example.com", "553 5.1.3 <ja ne@example.com>: empty, or has spaces or "
         "control characters"),
        ("j\udcffne@example.com", "553 5.1.3 <j?ne@example.com>: not valid UTF-8"),
        ("jane@localhost", "553 5.1.3 <jane@localhost>: the domain needs at least two labels"),
    ],
)  # fmt: skip
def test_recipient_refused_by_admission_gets_553(recipient: str, answer: str) -> None:
    """A recipient admission refuses is answered 553 with admission's reason, echoed
    ASCII-safe; nothing is screened."""
    assert plan({"protocol_state": "RCPT", "sasl_username": "newsletter",
                 "recipient": recipient}, ACCOUNTS, None) == answer  # fmt: skip


def test_action_for_each_decision() -> None:
    """Delivery is DUNNO; a drop or deferral is the SMTP reply the relay gives."""
    assert action_for(Decision(Action.DELIVER), JANE) == DUNNO
    assert action_for(Decision(Action.DROP, Reason.REFUSED), BOB) == (
        f"550 5.7.1 <{BOB}>: recipient has refused commercial messages"
    )
    assert action_for(Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE), BOB) == (
        "451 4.3.0 consent registry unavailable, try again later"
    )


def test_replies_are_the_wire_bytes() -> None:
    """`reply` gives the action's bytes: the common ones are the very same object each
    time, any other made as serialize_reply makes it (control characters as `?`)."""
    assert reply(DUNNO) is DUNNO_REPLY == b"action=DUNNO\n\n"
    assert reply(NO_ACCOUNT) is reply(NO_ACCOUNT)
    assert reply("550 5.7.1 <a\r\nb>") == b"action=550 5.7.1 <a??b>\n\n"


def test_loggable_keeps_text_and_marks_undecodable_bytes() -> None:
    """ASCII and UTF-8 text is unchanged; a surrogate escape becomes U+FFFD."""
    assert loggable("4BqXyZ1") == "4BqXyZ1"
    assert loggable("jäne") == "jäne"
    assert loggable("j\udcffne") == "j\ufffdne"
