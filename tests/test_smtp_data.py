"""DATA of the SMTP relay (filterd/smtp/data.py), end to end against `filterd serve`
as a real process: the message relayed unchanged, the transactional upgrade and its
redo, NUL bytes, smuggling, opt-outs recorded at DATA, DKIM signing with one-click
headers, and feedback reports to the feedback address (complaints)."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import time
from pathlib import Path

import dkim
import pytest

from filterd.identity import ConsumerHasher
from filterd.model import Channel, Kind
from filterd.normalize import normalize
from filterd.tokens import TokenKeys, derive_key, from_mailto_form, mailto_form
from tests.arf_helpers import (
    BOUNDARY,
    MICROSOFT_FIELDS,
    RFC5965_FIELDS,
    YAHOO_FIELDS,
    original,
    report,
)
from tests.conftest import ServerPool
from tests.smtp_helpers import (
    MESSAGE,
    SECRET,
    UNSIGNED,
    Relay,
    facts_of,
    unsubscribe_token,
)


def test_consented_recipient_is_relayed_unchanged(relay: Relay) -> None:
    """A consented recipient is accepted and the message reaches the upstream byte for byte
    (a DKIM-signed header is not rewritten)."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["Jane@Example.com"], MESSAGE) == {}
    client.quit()
    [(sender, recipients, content)] = relay.sink.handler.messages
    assert (sender, recipients) == ("shop@acme.test", ["Jane@Example.com"])
    assert content.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")


def test_transactional_passes_and_signals_upgrade(relay: Relay) -> None:
    """A transactional account relays without consent; with a List-Unsubscribe header the
    message is commercial: recipients without consent are dropped and audited."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login("receipts", "pw-tx")
    assert client.sendmail("shop@acme.test", ["carol@example.com"], MESSAGE) == {}
    bulk = b"List-Unsubscribe: <mailto:u@acme.test>\r\n" + MESSAGE
    assert client.sendmail("shop@acme.test", ["jane@example.com", "carol@example.com"], bulk) == {}
    with pytest.raises(smtplib.SMTPDataError) as error:
        client.sendmail("shop@acme.test", ["carol@example.com"], bulk)
    assert error.value.smtp_code == 550
    client.quit()
    assert [m[1] for m in relay.sink.handler.messages] == [
        ["carol@example.com"], ["jane@example.com"],
    ]  # fmt: skip
    assert relay.audit().count(("drop", "no_consent")) == 2


def test_smuggling_attempt_stays_one_message(relay: Relay) -> None:
    """A bare-LF dot inside DATA does not end the message: no second message is relayed."""
    relay.record("jane@example.com", Kind.CONSENT)
    relay.record("bob@example.com", Kind.CONSENT)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        reader.readline()

        def command(line: bytes) -> bytes:
            sock.sendall(line + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            return reply

        command(b"EHLO tool.test")
        command(b"AUTH PLAIN " + __import__("base64").b64encode(b"\0newsletter\0pw-news"))
        assert command(b"MAIL FROM:<shop@acme.test>").startswith(b"250")
        assert command(b"RCPT TO:<jane@example.com>").startswith(b"250")
        assert command(b"DATA").startswith(b"354")
        smuggled = (
            b"Subject: one\r\n\r\nhello\n.\r\nMAIL FROM:<x@acme.test>\r\n"
            b"RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: two\r\n\r\nevil\r\n"
        )
        assert command(smuggled + b".").startswith(b"250")
        command(b"QUIT")
    assert len(relay.sink.handler.messages) == 1
    assert relay.sink.handler.messages[0][1] == ["jane@example.com"]
    assert b"evil" in relay.sink.handler.messages[0][2]


def test_upgrade_redo_refused_by_upstream_is_not_hidden(relay: Relay) -> None:
    """When some recipients are dropped at DATA and the upstream then refuses a permitted
    one on the redone transaction, the client gets that refusal (4xx), not a 250 for a
    message that silently lost a recipient."""
    relay.record("jane@example.com", Kind.CONSENT)
    relay.record("carol@example.com", Kind.CONSENT)
    client = relay.login("receipts", "pw-tx")
    client.mail("shop@acme.test")
    for address in ("jane@example.com", "bob@example.com", "carol@example.com"):
        assert client.rcpt(address)[0] == 250
    relay.sink.handler.refuse_rcpt["carol@example.com"] = "451 4.3.2 try again later"
    code, _ = client.data(b"List-Unsubscribe: <mailto:u@acme.test>\r\n" + MESSAGE)
    assert code == 451
    client.quit()
    assert relay.sink.handler.messages == []


def _token_bytes(token: str) -> bytes:
    """A token's 32 bytes."""
    return base64.urlsafe_b64decode(token + "=")


def test_mail_to_an_unsubscribe_address_records_the_refusal_without_login(
    optout_relay: Relay,
) -> None:
    """On the unsubscribe listener a client with no login (a mailbox provider) may mail
    unsubscribe+TOKEN@unsub.test: 250 at RCPT, the refusal is on record (source mailto)
    when DATA answers 250, nothing is relayed; no AUTH is offered there."""
    relay = optout_relay
    token = unsubscribe_token(relay, "jane@example.com")
    client = relay.intake()
    assert not client.has_extn("auth")
    assert client.mail("jane@example.com")[0] == 250
    assert client.rcpt(f"unsubscribe+{token}@unsub.test")[0] == 250
    assert client.data(b"Subject: unsubscribe\r\n\r\nplease\r\n") == (
        250, b"2.0.0 unsubscribed",
    )  # fmt: skip
    client.quit()
    assert facts_of(relay, "jane@example.com") == [(Kind.REFUSAL, "acme", "mailto")]
    assert relay.sink.handler.messages == []


def test_mailto_spelling_of_the_token_works_in_any_case(optout_relay: Relay) -> None:
    """The base32 spelling used in List-Unsubscribe mailto targets is taken in lower
    or upper case (mail systems may change a local part's case)."""
    relay = optout_relay
    spelt = mailto_form(unsubscribe_token(relay, "joe@example.com"))
    client = relay.intake()
    assert client.mail("joe@example.com")[0] == 250
    assert client.rcpt(f"UNSUBSCRIBE+{spelt.upper()}@UNSUB.TEST")[0] == 250
    assert client.data(b"Subject: stop\r\n\r\n\r\n")[0] == 250
    client.quit()
    assert facts_of(relay, "joe@example.com") == [(Kind.REFUSAL, "acme", "mailto")]


def test_logged_in_client_may_send_to_an_unsubscribe_address(optout_relay: Relay) -> None:
    """On the relay listener a logged-in client's unsubscribe recipient is taken as an
    opt-out too (not relayed), beside ordinary recipients that are relayed."""
    relay = optout_relay
    relay.record("joe@example.com", Kind.CONSENT)
    token = unsubscribe_token(relay, "jane@example.com")
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt(f"unsubscribe+{token}@unsub.test")[0] == 250
    assert client.rcpt("joe@example.com")[0] == 250
    assert client.data(MESSAGE)[0] == 250
    client.quit()
    assert facts_of(relay, "jane@example.com") == [(Kind.REFUSAL, "acme", "mailto")]
    assert [m[1] for m in relay.sink.handler.messages] == [["joe@example.com"]]


def test_commercial_mail_is_signed_with_one_click_headers(
    optout_relay: Relay, dkim_key: tuple[Path, bytes]
) -> None:
    """With [dkim], a commercial message arrives upstream with List-Unsubscribe (https
    and mailto, carrying the recipient's token) and List-Unsubscribe-Post, signed by a
    DKIM signature that verifies and covers both headers."""
    relay = optout_relay
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], UNSIGNED) == {}
    client.quit()
    [(_, _, content)] = relay.sink.handler.messages
    head = content.split(b"\r\n\r\n", 1)[0].decode()
    found = re.search(
        r"List-Unsubscribe: <https://u\.acme\.test/unsubscribe/([\w-]{43})>, "
        r"<mailto:unsubscribe\+([a-z2-7]{52})@unsub\.test>", head,
    )  # fmt: skip
    assert found is not None, head
    assert from_mailto_form(found.group(2)) == found.group(1)  # one token, two spellings
    expected = unsubscribe_token(relay, "jane@example.com")
    # same consumer and sender (bytes 6-19 of the token; the issue minute may differ)
    assert _token_bytes(found.group(1))[6:20] == _token_bytes(expected)[6:20]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
    assert dkim.verify(content, dnsfunc=lambda name, timeout=5: dkim_key[1])


def test_nul_byte_in_message_is_refused(relay: Relay) -> None:
    """A message holding a NUL byte is refused at DATA with 550 5.6.0 and not relayed
    (mail text may not hold NUL); the next message on the connection goes through."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    client.mail("shop@acme.test")
    client.rcpt("jane@example.com")
    code, text = client.data(b"Subject: hi\r\n\r\nbefore\x00after\r\n")
    assert (code, text[:5]) == (550, b"5.6.0")
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    client.quit()
    assert len(relay.sink.handler.messages) == 1
    assert b"\x00" not in relay.sink.handler.messages[0][2]


def test_an_upgraded_message_with_an_unsubscribe_recipient_is_relayed(
    optout_relay: Relay,
) -> None:
    """A transactional account's message upgraded by its headers, sent both to a
    consented recipient and to an unsubscribe+TOKEN address: the opt-out is recorded,
    the consented recipient gets the message, and the client gets the upstream's 250
    (the unsubscribe address is not a recipient to judge or relay)."""
    relay = optout_relay
    relay.record("jane@example.com", Kind.CONSENT)
    token = unsubscribe_token(relay, "bob@example.com")
    client = relay.login("receipts", "pw-tx")
    bulk = b"List-Id: <news.acme.test>\r\n" + MESSAGE
    recipients = ["jane@example.com", f"unsubscribe+{mailto_form(token)}@unsub.test"]
    assert client.sendmail("shop@acme.test", recipients, bulk) == {}
    client.quit()
    assert [m[1] for m in relay.sink.handler.messages] == [["jane@example.com"]]
    assert facts_of(relay, "bob@example.com") == [(Kind.REFUSAL, "acme", "mailto")]


def _relayed_to_jane(relay: Relay) -> bytes:
    """A commercial message to a consented jane@example.com as the upstream got it
    (with filterd's List-Unsubscribe and signature)."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], UNSIGNED) == {}
    client.quit()
    return relay.sink.handler.messages[-1][2]


def _report_to(
    relay: Relay, content: bytes, sender: str = "feedback@mailbox.test"
) -> tuple[int, bytes]:
    """DATA's reply to `content` sent to the feedback address on the unsubscribe listener."""
    client = relay.intake()
    assert client.mail(sender)[0] == 250
    assert client.rcpt("FBL@acme.test")[0] == 250
    reply = client.data(content)
    assert client.noop()[0] == 250  # the connection goes on
    client.quit()
    return reply


def test_a_complaint_records_a_refusal_before_250(optout_relay: Relay) -> None:
    """An abuse report (RFC 5965's shape, Yahoo's with the headers only, Microsoft's)
    returning a message filterd relayed with its List-Unsubscribe: 250 on the
    unsubscribe listener with no login, and jane's refusal of acme (source complaint)
    is on record by then; nothing is relayed."""
    relay = optout_relay
    relayed = _relayed_to_jane(relay)
    headers = relayed.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for content in (
        report(relayed, fields=RFC5965_FIELDS),
        report(headers, fields=YAHOO_FIELDS, returned_type="text/rfc822-headers"),
        report(b"X-HmXmrOriginalRecipient: <jane@example.com>\r\n" + relayed,
               fields=MICROSOFT_FIELDS, returned_encoding="base64"),
    ):  # fmt: skip
        assert _report_to(relay, content, "<>") == (250, b"2.0.0 feedback report received")
        assert (Kind.REFUSAL, "acme", "complaint") in facts_of(relay, "jane@example.com")
    assert len(relay.sink.handler.messages) == 1  # the message first relayed, no other
    assert relay.audit().count(("refusal", None)) == 3


def test_a_report_without_a_token_changes_nothing(optout_relay: Relay) -> None:
    """Reports with no target of filterd's, a forged, an expired or an unknown sender's
    token, a not-spam report, or none of the parts (empty, too many, deeply nested, bad
    encodings): 250, nothing recorded, each audited as complaint_unmatched; never a
    5xx, and filterd goes on."""
    relay = optout_relay
    relayed = _relayed_to_jane(relay)
    found = re.search(rb"/unsubscribe/([\w-]{43})>", relayed)
    assert found is not None
    token = found.group(1).decode()

    def swapped(new: str) -> bytes:
        """The relayed message with another token in both its targets."""
        spelt = mailto_form(token).encode()
        return relayed.replace(token.encode(), new.encode()).replace(
            spelt, mailto_form(new).encode()
        )

    expired_keys = TokenKeys(derive_key(bytes.fromhex(SECRET)), max_age_s=1)
    jane = ConsumerHasher(bytes.fromhex(SECRET)).consumer_id(normalize("jane@example.com"))
    expired = expired_keys.issue("acme", Channel.EMAIL, jane, 1_000_000_000)
    unknown = expired_keys.issue("nobody", Channel.EMAIL, jane, int(time.time()))
    head = f'Content-Type: multipart/report; report-type=feedback-report; boundary="{BOUNDARY}"\r\n'
    contents = [
        report(original("<https://elsewhere.test/unsubscribe/x>"), fields=RFC5965_FIELDS),
        report(swapped(token[:-4] + "AAAA"), fields=RFC5965_FIELDS),
        report(swapped(expired), fields=RFC5965_FIELDS),
        report(swapped(unknown), fields=RFC5965_FIELDS),
        report(relayed, fields=RFC5965_FIELDS.replace("abuse", "not-spam")),
        head.encode() + b"\r\nno parts at all\r\n",
        (head + "\r\n" + f"--{BOUNDARY}\r\n\r\nx\r\n" * 40).encode(),
        report(b"Content-Type: message/rfc822\r\n\r\n" * 500 + relayed, fields=RFC5965_FIELDS),
        report(relayed, fields=RFC5965_FIELDS, returned_encoding="base64")
        .replace(b"Version: 1", b"Version: \xff\xfe\xc3")
        .replace(b"Encoding: base64", b"Encoding: x-bogus"),
    ]  # fmt: skip
    for content in contents:
        assert _report_to(relay, content)[0] == 250, content[:300]
    assert facts_of(relay, "jane@example.com") == [(Kind.CONSENT, "acme", "test")]
    audit = relay.audit()
    assert audit.count(("complaint_unmatched", "no_token")) >= 2
    assert audit.count(("complaint_unmatched", "bad_token")) == 3
    assert ("complaint_unmatched", "not_abuse") in audit
    assert ("complaint_unmatched", "no_parts") in audit
    assert ("complaint_unmatched", "too_many_parts") in audit
    assert sum(event == "complaint_unmatched" for event, _ in audit) == len(contents)


def test_mail_to_the_feedback_address_that_is_not_a_report_is_refused(
    optout_relay: Relay,
) -> None:
    """Plain mail, a delivery status notification or Microsoft's older non-ARF format
    to the feedback address: 550 5.6.0, nothing recorded or audited; a report over
    the message size limit gets the size limit's 552."""
    relay = optout_relay
    relayed = _relayed_to_jane(relay)
    dsn = f'multipart/report; report-type=delivery-status; boundary="{BOUNDARY}"'
    mixed = f'multipart/mixed; boundary="{BOUNDARY}"'
    for content in (
        b"Subject: unsubscribe me\r\n\r\nplease\r\n",
        report(relayed, fields=RFC5965_FIELDS, content_type=dsn),
        report(relayed, fields=MICROSOFT_FIELDS, content_type=mixed),
    ):
        code, text = _report_to(relay, content)
        assert (code, text[:5]) == (550, b"5.6.0")
    big = report(relayed + (b"x" * 70 + b"\r\n") * 400, fields=RFC5965_FIELDS)
    assert _report_to(relay, big)[0] == 552
    assert facts_of(relay, "jane@example.com") == [(Kind.CONSENT, "acme", "test")]
    assert not any(event.startswith("complaint") for event, _ in relay.audit())


def test_a_complaint_the_registry_cannot_take_is_deferred(
    optout_relay: Relay, server_pool: ServerPool
) -> None:
    """Registry down: an abuse report gets 451 4.3.0 (the provider retries), never a
    250 for a refusal not on record; once it is back the retried report is recorded."""
    relay = optout_relay
    content = report(_relayed_to_jane(relay), fields=RFC5965_FIELDS)
    relay.registry_server.kill()
    assert _report_to(relay, content)[0] == 451
    server_pool.get("valkey")  # restarts it on the same data (AOF)
    assert _report_to(relay, content)[0] == 250
    assert (Kind.REFUSAL, "acme", "complaint") in facts_of(relay, "jane@example.com")


def test_a_report_beside_an_unsubscribe_address(optout_relay: Relay) -> None:
    """A transaction to the feedback address and an unsubscribe+TOKEN address: a report
    records both refusals before its 250; a message that is not a report gets 550
    5.6.0 and records neither."""
    relay = optout_relay
    content = report(_relayed_to_jane(relay), fields=RFC5965_FIELDS)
    bobs = unsubscribe_token(relay, "bob@example.com")
    joes = unsubscribe_token(relay, "joe@example.com")
    for recipient, message, code in (
        (f"unsubscribe+{joes}@unsub.test", b"Subject: stop\r\n\r\n\r\n", 550),
        (f"unsubscribe+{bobs}@unsub.test", content, 250),
    ):
        client = relay.intake()
        client.mail("<>")
        assert client.rcpt(recipient)[0] == 250
        assert client.rcpt("fbl@acme.test")[0] == 250
        assert client.data(message)[0] == code
        client.quit()
    assert facts_of(relay, "joe@example.com") == []
    assert facts_of(relay, "bob@example.com") == [(Kind.REFUSAL, "acme", "mailto")]
    assert (Kind.REFUSAL, "acme", "complaint") in facts_of(relay, "jane@example.com")
