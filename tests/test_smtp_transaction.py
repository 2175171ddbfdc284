"""The upstream leg of the SMTP relay's transactions (filterd/smtp/transaction.py),
end to end against `filterd serve` as a real process and an aiosmtpd sink: upstream
refusals passed back, the upstream down and back, a client gone mid-DATA."""

from __future__ import annotations

import socket

from filterd.model import Kind
from tests.smtp_helpers import (
    MESSAGE,
    Relay,
)


def test_upstream_refusals_passed_back(relay: Relay) -> None:
    """An upstream refusal of one recipient, or of the message, reaches the client as such."""
    relay.record("jane@example.com", Kind.CONSENT)
    relay.record("ghost@example.com", Kind.CONSENT)
    relay.sink.handler.refuse_rcpt["ghost@example.com"] = "550 5.1.1 no such user"
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("ghost@example.com") == (550, b"5.1.1 no such user")
    assert client.rcpt("jane@example.com")[0] == 250
    relay.sink.handler.data_reply = "452 4.3.1 insufficient storage"
    assert client.data(MESSAGE) == (452, b"4.3.1 insufficient storage")
    client.quit()
    assert relay.sink.handler.messages == []


def test_upstream_down_gives_temporary_failure_then_recovers(relay: Relay) -> None:
    """Upstream stopped: 451 4.4.x, nothing acknowledged; upstream back: the retry succeeds."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    relay.sink.stop()
    client.mail("shop@acme.test")
    code, text = client.rcpt("jane@example.com")
    assert code == 451
    assert text.startswith(b"4.4.")
    client.rset()
    relay.sink.start()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    client.quit()
    assert len(relay.sink.handler.messages) == 2


def test_client_disconnect_mid_data_relays_nothing(relay: Relay) -> None:
    """A client that drops mid-DATA gets nothing relayed (nothing was acknowledged), and the
    next client's message goes through normally."""
    relay.record("jane@example.com", Kind.CONSENT)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        commands = [
            b"EHLO tool.test",
            b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==",
            b"MAIL FROM:<shop@acme.test>",
            b"RCPT TO:<jane@example.com>",
            b"DATA",
        ]
        for line in commands:
            sock.sendall(line + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            assert reply[:1] in (b"2", b"3"), reply
        sock.sendall(b"Subject: cut\r\n\r\nhalf a message")
        reader.close()
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    client.quit()
    assert len(relay.sink.handler.messages) == 1
    assert b"half a message" not in relay.sink.handler.messages[0][2]
