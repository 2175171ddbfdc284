"""filterd.smtp.cancel: what the relay does about a commercial email's way to cancel,
by its header, [compliance] cancel_method and its number of recipients."""

from __future__ import annotations

import re
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from filterd.model import Kind
from filterd.settings import CancelMethod
from filterd.smtp.cancel import MailCancel, mail_cancel
from filterd.smtp.signals import header_fields
from tests.helpers import RedisProcess
from tests.smtp_helpers import MESSAGE, UNSIGNED, facts_of, relay_with

PLAIN = b"From: a@acme.test\r\nSubject: sale\r\n\r\nbody\r\n"
WITH_LU = b"From: a@acme.test\r\nList-Unsubscribe : <https://acme.test/u>\r\n\r\nbody\r\n"
SIGNED = b"DKIM-Signature: v=1; d=acme.test\r\nFrom: a@acme.test\r\n\r\nbody\r\n"
ADD, REQUIRE, OFF = CancelMethod.ADD, CancelMethod.REQUIRE, CancelMethod.OFF
KEEP, ADDS, REFUSE = MailCancel.KEEP, MailCancel.ADD, MailCancel.REFUSE


@pytest.mark.parametrize(
    ("message", "method", "recipients", "signing", "action"),
    [
        (WITH_LU, ADD, 1, False, KEEP),
        (WITH_LU, REQUIRE, 3, False, KEEP),
        (PLAIN, ADD, 1, False, ADDS),
        (PLAIN, ADD, 1, True, ADDS),
        (PLAIN, ADD, 2, False, REFUSE),
        (SIGNED, ADD, 1, False, REFUSE),
        (PLAIN, REQUIRE, 1, True, REFUSE),
        (PLAIN, OFF, 1, True, KEEP),
        (SIGNED, OFF, 1, False, KEEP),
        (PLAIN, None, 1, True, ADDS),
        (PLAIN, None, 1, False, KEEP),
        (PLAIN, None, 2, True, KEEP),
        (SIGNED, None, 1, True, KEEP),
    ],
)
def test_the_action_for_each_case(
    message: bytes, method: CancelMethod | None, recipients: int, signing: bool, action: MailCancel
) -> None:
    """A message with List-Unsubscribe (even written with a space before the colon) is
    kept; without one: add adds the headers for one recipient and refuses a message
    with several or one already DKIM-signed (a header added would break it); require
    refuses; off keeps; without [compliance] (None) the headers are added only where
    filterd signs a one-recipient message itself, as before the table existed."""
    assert mail_cancel(header_fields(message), method, recipients, signing=signing) is action


# ---- end to end: `filterd serve` with [compliance], a real sink ------------------------

HTTP = '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://u.acme.test"\n'


def compliance(method: str, quiet_hours: str = "", time_zone: str = "Asia/Shanghai") -> str:
    """[http] and a [compliance] table, as extra config text for relay_with."""
    return (
        f'{HTTP}[compliance]\ncancel_method = "{method}"\nquiet_hours = "{quiet_hours}"\n'
        f'time_zone = "{time_zone}"\n'
    )


def window_around_now(zone: str, *, inside: bool) -> str:
    """A quiet_hours window that holds the current time in `zone` (from an hour ago to
    an hour from now), or one that does not (two to three hours from now)."""
    now = datetime.now(ZoneInfo(zone))
    start, end = (now - timedelta(hours=1), now + timedelta(hours=1))
    if not inside:
        start, end = (now + timedelta(hours=2), now + timedelta(hours=3))
    return f"{start:%H:%M}-{end:%H:%M}"


def test_add_gives_a_message_without_one_its_recipients_own_headers(
    valkey_server: RedisProcess,
) -> None:
    """cancel_method = "add" without [dkim]: a commercial message without
    List-Unsubscribe reaches the upstream with List-Unsubscribe naming its recipient's
    token and List-Unsubscribe-Post; a second RCPT in the same transaction gets 452
    4.5.3; POSTing the added URL opts the recipient out."""
    with relay_with(valkey_server, compliance("add")) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        relay.record("joe@example.com", Kind.CONSENT)
        client = relay.login()
        client.mail("shop@acme.test")
        assert client.rcpt("jane@example.com")[0] == 250
        code, text = client.rcpt("joe@example.com")
        assert (code, text[:5]) == (452, b"4.5.3")
        assert client.data(UNSIGNED)[0] == 250
        client.quit()
        [(_, rcpts, content)] = relay.sink.handler.messages
        assert rcpts == ["jane@example.com"]
        head = content.split(b"\r\n\r\n", 1)[0].decode()
        found = re.search(
            r"List-Unsubscribe: <https://u\.acme\.test/unsubscribe/([\w-]{43})>", head
        )
        assert found is not None, head
        assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
        assert b"DKIM-Signature" not in content
        status = post_one_click(relay.http_port, found.group(1))
        assert status == 200
        assert (Kind.REFUSAL, "acme", "one-click") in facts_of(relay, "jane@example.com")


def test_a_message_with_its_own_list_unsubscribe_is_relayed_as_it_is(
    valkey_server: RedisProcess,
) -> None:
    """Under add and under require, a message that carries List-Unsubscribe reaches the
    upstream byte for byte."""
    own = b"List-Unsubscribe: <mailto:u@acme.test>\r\n" + UNSIGNED
    for method in ("add", "require"):
        with relay_with(valkey_server, compliance(method)) as relay:
            relay.record("jane@example.com", Kind.CONSENT)
            client = relay.login()
            assert client.sendmail("shop@acme.test", ["jane@example.com"], own) == {}
            client.quit()
            assert relay.sink.handler.messages[0][2] == own


def test_require_refuses_a_message_without_list_unsubscribe_and_audits_it(
    valkey_server: RedisProcess,
) -> None:
    """cancel_method = "require": a commercial message without List-Unsubscribe gets
    550 5.7.1 at DATA, nothing reaches the upstream, and the recipient is audited as a
    drop with reason no_cancel_method; the same message under "off" is relayed."""
    with relay_with(valkey_server, compliance("require")) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.login()
        client.mail("shop@acme.test")
        client.rcpt("jane@example.com")
        code, text = client.data(UNSIGNED)
        client.quit()
        assert (code, text) == (550, b"5.7.1 commercial message has no List-Unsubscribe header")
        assert relay.sink.handler.messages == []
        assert [e for e in relay.audit() if e[0] != "consent"] == [("drop", "no_cancel_method")]
    with relay_with(valkey_server, compliance("off")) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.login()
        assert client.sendmail("shop@acme.test", ["jane@example.com"], UNSIGNED) == {}
        client.quit()
        assert relay.sink.handler.messages[0][2] == UNSIGNED


def test_add_refuses_a_client_signed_message_without_list_unsubscribe(
    valkey_server: RedisProcess,
) -> None:
    """Under add, a message the client DKIM-signed but without List-Unsubscribe cannot
    be given one without breaking the signature: 550 5.7.1, nothing relayed."""
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=x; b=AAAA\r\n" + UNSIGNED
    with relay_with(valkey_server, compliance("add")) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.login()
        client.mail("shop@acme.test")
        client.rcpt("jane@example.com")
        assert client.data(signed)[0] == 550
        client.quit()
        assert relay.sink.handler.messages == []


def test_quiet_hours_defer_commercial_mail_with_the_time_it_may_resume(
    valkey_server: RedisProcess,
) -> None:
    """Inside the quiet hours of the recipient's zone (an email address: time_zone) a
    commercial RCPT gets 451 4.7.0 naming when sending may resume, and an audit entry
    defer/quiet_hours; the transactional account's message passes; outside the
    window the same RCPT is accepted."""
    zone = "America/New_York"
    window = window_around_now(zone, inside=True)
    with relay_with(valkey_server, compliance("off", window, zone)) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.login()
        client.mail("shop@acme.test")
        code, text = client.rcpt("jane@example.com")
        client.quit()
        resume = window.split("-")[1]
        assert code == 451
        assert text.decode() == (
            "4.7.0 <jane@example.com>: outside sending hours in the recipient's time zone, "
            f"try again after {resume} {zone}"
        )
        receipts = relay.login("receipts", "pw-tx")
        assert receipts.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
        receipts.quit()
        assert [e for e in relay.audit() if e[0] != "consent"] == [("defer", "quiet_hours")]
    outside = window_around_now(zone, inside=False)
    with relay_with(valkey_server, compliance("off", outside, zone)) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.login()
        assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
        client.quit()


def post_one_click(port: int, token: str) -> int:
    """POST the RFC 8058 one-click form to /unsubscribe/TOKEN on filterd's HTTP port."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/unsubscribe/{token}",
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


def test_require_with_dkim_takes_several_recipients(
    valkey_server: RedisProcess, dkim_key: tuple[Path, bytes]
) -> None:
    """Under require, filterd adds no header, so a commercial transaction may carry
    several recipients even with [dkim]: both RCPTs get 250 and a message with its own
    List-Unsubscribe reaches both, signed."""
    dkim = f'[dkim]\nselector = "mail"\ndomain = "acme.test"\nkey_file = "{dkim_key[0]}"\n'
    with relay_with(valkey_server, compliance("require") + dkim) as relay:
        relay.record("jane@example.com", Kind.CONSENT)
        relay.record("joe@example.com", Kind.CONSENT)
        client = relay.login()
        own = b"List-Unsubscribe: <mailto:u@acme.test>\r\n" + UNSIGNED
        assert client.sendmail("shop@acme.test", ["jane@example.com", "joe@example.com"], own) == {}
        client.quit()
        [(_, rcpts, content)] = relay.sink.handler.messages
        assert rcpts == ["jane@example.com", "joe@example.com"]
        assert content.startswith(b"DKIM-Signature:")
