"""MAIL and RCPT of the SMTP relay (filterd/smtp/envelope.py), end to end against
`filterd serve` as a real process: each recipient's consent decision, admission and
limits, the registry down, unsubscribe recipients and the feedback address on the
unsubscribe listener, one recipient per signed commercial message."""

from __future__ import annotations

import time

from filterd.model import ALL_SENDERS, Kind
from tests.conftest import ServerPool
from tests.smtp_helpers import (
    MESSAGE,
    Relay,
    facts_of,
    unsubscribe_token,
)


def test_refused_and_no_consent_replies(relay: Relay) -> None:
    """A refused recipient gets 550 5.7.1 'refused'; one without consent 550 5.7.1 'no consent'."""
    relay.record("bob@example.com", Kind.REFUSAL, ALL_SENDERS)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("bob@example.com") == (
        550, b"5.7.1 <bob@example.com>: recipient has refused commercial messages",
    )  # fmt: skip
    assert client.rcpt("carol@example.com") == (
        550, b"5.7.1 <carol@example.com>: no consent or request on record",
    )  # fmt: skip
    client.quit()
    assert relay.sink.handler.messages == []
    assert [e for e in relay.audit() if e[0] == "drop"] == [
        ("drop", "no_consent"), ("drop", "refused"),
    ]  # fmt: skip


def test_expired_request_is_no_consent(relay: Relay) -> None:
    """A request past its TTL no longer permits: 550 no consent."""
    old = int(time.time() * 1000) - 60_000
    relay.record("dan@example.com", Kind.REQUEST, at_ms=old, ttl_s=1)
    relay.record("eve@example.com", Kind.REQUEST, ttl_s=3600)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("dan@example.com")[0] == 550
    assert client.rcpt("eve@example.com")[0] == 250
    client.quit()


def test_mixed_recipients_only_permitted_relayed(relay: Relay) -> None:
    """In one message, each recipient is decided on its own; only permitted ones are relayed."""
    relay.record("jane@example.com", Kind.CONSENT)
    relay.record("bob@example.com", Kind.REFUSAL, ALL_SENDERS)
    client = relay.login()
    refused = client.sendmail("shop@acme.test", ["jane@example.com", "bob@example.com",
                                                 "carol@example.com"], MESSAGE)  # fmt: skip
    client.quit()
    assert set(refused) == {"bob@example.com", "carol@example.com"}
    assert [m[1] for m in relay.sink.handler.messages] == [["jane@example.com"]]


def test_registry_down_451_then_recovers(relay: Relay, server_pool: ServerPool) -> None:
    """Registry killed: 451 4.3.0 (never delivered unverified); back: decisions resume
    without restarting filterd."""
    relay.record("jane@example.com", Kind.CONSENT)
    relay.registry_server.kill()
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("jane@example.com") == (
        451, b"4.3.0 consent registry unavailable, try again later",
    )  # fmt: skip
    client.rset()
    server_pool.get("valkey")  # restarts it on the same data (AOF)
    client.mail("shop@acme.test")
    assert client.rcpt("jane@example.com")[0] == 250
    client.quit()
    assert relay.sink.handler.messages == []


def test_limits_and_bad_addresses(relay: Relay) -> None:
    """Oversize → 552; malformed recipients → 553 5.1.3; more than max_recipients RCPTs
    (refused ones count too: a client cannot probe without end) → 452."""
    for name in ("a", "b", "c", "d", "e"):
        relay.record(f"{name}@example.com", Kind.CONSENT)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("jane@")[0] == 553
    assert client.rcpt("+8613800138000")[0] == 553
    assert client.rcpt("nobody@example.com")[0] == 550  # no consent
    for name in ("a", "b"):
        assert client.rcpt(f"{name}@example.com")[0] == 250
    assert client.rcpt("c@example.com")[0] == 452  # the 6th RCPT of 5 allowed
    client.rset()  # a new transaction counts afresh
    client.mail("shop@acme.test")
    assert client.rcpt("not an address")[0] in (501, 553)
    for name in ("a", "b", "c", "d"):
        assert client.rcpt(f"{name}@example.com")[0] == 250
    assert client.rcpt("e@example.com")[0] == 452
    client.rset()
    client.mail("shop@acme.test")
    client.rcpt("a@example.com")
    code, _ = client.data(b"Subject: big\r\n\r\n" + b"x" * 70 * 400 + b"\r\n")
    assert code == 500  # one line over 998 bytes
    client.rset()
    client.mail("shop@acme.test")
    client.rcpt("a@example.com")
    code, _ = client.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 400)
    assert code == 552
    client.quit()
    assert relay.sink.handler.messages == []


def test_smtputf8_recipient(relay: Relay) -> None:
    """An internationalised recipient (SMTPUTF8, IDNA domain) is decided on its canonical form
    and relayed with SMTPUTF8."""
    relay.record("用户@例子.广告", Kind.CONSENT)
    client = relay.login()
    assert client.mail("shop@acme.test", ["SMTPUTF8"])[0] == 250
    client.command_encoding = "utf-8"
    assert client.rcpt("用户@例子.广告")[0] == 250
    assert client.data(MESSAGE)[0] == 250
    client.quit()
    assert relay.sink.handler.messages[0][1] == ["用户@例子.广告"]


def test_without_login_only_valid_unsubscribe_addresses_are_taken(optout_relay: Relay) -> None:
    """The relay listener still answers MAIL without a login with 530 5.7.0 (SPEC §4).
    The unsubscribe listener takes nothing but valid unsubscribe addresses: any other
    recipient 550 5.7.1 (never a relay), an altered token 550 5.1.1; nothing written."""
    relay = optout_relay
    token = unsubscribe_token(relay, "jane@example.com")
    altered = token[:5] + ("B" if token[5] == "A" else "A") + token[6:]
    relay_client = relay.smtp()
    assert relay_client.mail("x@example.com")[0] == 530
    relay_client.quit()
    client = relay.intake()
    assert client.mail("x@example.com")[0] == 250
    assert client.rcpt("jane@example.com")[:1] == (550,)
    code, text = client.rcpt(f"unsubscribe+{altered}@unsub.test")
    assert (code, text.split(b" ", 1)[0]) == (550, b"5.1.1")
    assert client.rcpt(f"unsubscribe+{token}@elsewhere.test")[0] == 550
    client.quit()
    assert facts_of(relay, "jane@example.com") == []
    assert relay.sink.handler.messages == []


def test_the_feedback_address_is_taken_on_the_unsubscribe_listener_only(
    optout_relay: Relay,
) -> None:
    """smtp.feedback_address (any case) is taken without login on the unsubscribe
    listener, from a null sender too, beside unsubscribe addresses; other addresses are
    still refused there. On the relay listener it is an ordinary recipient (no
    consent: refused for the commercial account)."""
    relay = optout_relay
    token = unsubscribe_token(relay, "jane@example.com")
    client = relay.intake()
    assert client.mail("<>")[0] == 250
    assert client.rcpt("Fbl@Acme.Test")[0] == 250
    assert client.rcpt(f"unsubscribe+{token}@unsub.test")[0] == 250
    assert client.rcpt("fbl2@acme.test")[0] == 550
    client.quit()
    logged_in = relay.login()
    logged_in.mail("shop@acme.test")
    assert logged_in.rcpt("fbl@acme.test")[0] == 550
    logged_in.quit()
    assert relay.sink.handler.messages == []


def test_signed_commercial_mail_takes_one_recipient_per_message(optout_relay: Relay) -> None:
    """With [dkim], a second recipient in a commercial transaction gets 452 4.5.3 (the
    client sends it in another message); a message already DKIM-signed passes unchanged."""
    relay = optout_relay
    relay.record("jane@example.com", Kind.CONSENT)
    relay.record("joe@example.com", Kind.CONSENT)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("jane@example.com")[0] == 250
    code, text = client.rcpt("joe@example.com")
    assert (code, text.split(b" ", 1)[0]) == (452, b"4.5.3")
    assert client.data(MESSAGE)[0] == 250
    client.quit()
    [(_, recipients, content)] = relay.sink.handler.messages
    assert recipients == ["jane@example.com"]
    assert content.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
