"""The SMTP relay's handler hooks (filterd/smtp/inbound.py), end to end against
`filterd serve` as a real process: AUTH against [[smtp.accounts]] (reloaded on
SIGHUP), MAIL without an account refused, EHLO's extensions."""

from __future__ import annotations

import signal
import smtplib

import pytest

from filterd.model import Kind
from tests.smtp_helpers import (
    MESSAGE,
    Relay,
)


def test_authentication_rules(relay: Relay) -> None:
    """Wrong password → 535; no AUTH → MAIL 530 5.7.0; an account's network needs no AUTH."""
    client = relay.smtp()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("newsletter", "wrong")
    assert client.mail("shop@acme.test") == (530, b"5.7.0 Authentication required")
    client.quit()
    relay.record("jane@example.com", Kind.CONSENT)
    legacy = relay.smtp(source="127.0.0.2")
    assert legacy.sendmail("tool@acme.test", ["jane@example.com"], MESSAGE) == {}
    legacy.quit()


def test_ehlo_advertises_pipelining_smtputf8(relay: Relay) -> None:
    """EHLO lists PIPELINING, SMTPUTF8, 8BITMIME, SIZE and AUTH (no TLS configured)."""
    client = relay.smtp()
    for extension in ("pipelining", "smtputf8", "8bitmime", "size", "auth"):
        assert client.has_extn(extension), extension
    client.quit()


def test_sighup_reloads_smtp_accounts_without_dropping_connections(relay: Relay) -> None:
    """A new [[smtp.accounts]] login works after SIGHUP, a removed one no longer does,
    and a client logged in before the reload keeps its session and sends."""
    relay.record("jane@example.com", Kind.CONSENT)
    before = relay.login()
    config_path = relay.home / "filterd.toml"
    text = config_path.read_text().replace('username = "receipts"', 'username = "receipts2"')
    config_path.write_text(
        text + '\n[[smtp.accounts]]\nusername = "late"\npassword = "pw-late"\n'
        'sender = "acme"\nstream = "commercial"\n'
    )
    relay.process.send_signal(signal.SIGHUP)
    assert relay.log.wait_for("reloaded")["restart_needed"] is None
    late = relay.login("late", "pw-late")
    assert late.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    late.quit()
    gone = relay.smtp()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        gone.login("receipts", "pw-tx")
    gone.close()
    assert before.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    before.quit()
    assert len(relay.sink.handler.messages) == 2
