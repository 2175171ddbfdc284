"""One admission path (filterd/admission.py): raw recipient text becomes an Address
or a refusal with its reason by the same rules on every front end; the SMTP relay
and the Postfix policy service, fed the same hostile recipients, give the same
verdict."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.admission import (
    NOT_EMAIL,
    NOT_PHONE,
    NOT_UTF8,
    UNUSABLE,
    Refused,
    email_recipient,
    phone_recipient,
    recipient,
    shown,
    unusable,
)
from filterd.model import Address, Channel
from tests.conftest import ServerPool, flush
from tests.helpers import SinkServer
from tests.smtp_helpers import SECRET, start_listeners, stop_filterd

BAD_BYTE = b"j\xffne@example.com".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", NOT_EMAIL),
        ("no-at\x00sign", NOT_EMAIL),
        ("ja ne@example.com", UNUSABLE),
        ("jane@example.com\r\n", UNUSABLE),
        ("jane\x00@example.com", UNUSABLE),
        (BAD_BYTE, NOT_UTF8),
        ("not-an-address", NOT_EMAIL),
        ("+8613800138000", NOT_EMAIL),
        ("jane@", "the domain must be a host name"),
        ("jane@localhost", "the domain needs at least two labels"),
    ],
)
def test_email_recipient_refusals(raw: str, reason: str) -> None:
    """Each kind of unusable email recipient is refused with its reason."""
    verdict = email_recipient(raw, "CN")
    assert isinstance(verdict, Refused)
    assert verdict.reason == reason


def test_email_recipient_normalises() -> None:
    """A usable recipient, trimmed of surrounding spaces, becomes its canonical address."""
    assert email_recipient(" Jane@Example.COM\t", None) == Address(
        "jane@example.com", Channel.EMAIL
    )


@pytest.mark.parametrize(
    ("raw", "ton", "expected"),
    [
        ("8613800138000", 1, "+8613800138000"),
        ("\t8613800138000", 1, "+8613800138000"),
        (" 8613800138000 ", 1, "+8613800138000"),
        ("13800138000", 0, "+8613800138000"),
        ("+86 138 0013 8000", 0, "+8613800138000"),
    ],
)
def test_phone_recipient_reads_type_of_number(raw: str, ton: int, expected: str) -> None:
    """TON 1 is international digits without '+'; others are read with the region;
    spaces between digits are allowed."""
    assert phone_recipient(raw, ton, "CN") == Address(expected, Channel.SMS)


@pytest.mark.parametrize("raw", ["", "jane@example.com", "138\x000013", "12", BAD_BYTE])
def test_phone_recipient_refusals(raw: str) -> None:
    """No email address, control character, undecodable byte or short number is a
    phone number (so no email consent can let an SMS through)."""
    assert isinstance(phone_recipient(raw, 1, "CN"), Refused)


@pytest.mark.parametrize("channel", [Channel.SMS, Channel.VOICE])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+8613800138000", "+8613800138000"), (" 138 0013 8000\t", "+8613800138000")],
)
def test_recipient_on_a_phone_channel(channel: Channel, raw: str, expected: str) -> None:
    """On sms or voice a recipient is a phone number (E.164, or national with the
    region; spaces allowed), an Address on that channel."""
    assert recipient(raw, channel, "CN") == Address(expected, channel)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("jane@example.com", NOT_PHONE),
        ("+86138@example.com", NOT_PHONE),
        ("", UNUSABLE),
        ("138\x000013", UNUSABLE),
        (b"138\xff0013".decode("utf-8", "surrogateescape"), NOT_UTF8),
    ],
)
def test_voice_recipient_refusals(raw: str, reason: str) -> None:
    """A call goes to a phone number: an email address (no email consent lets a call
    through), a control character or an undecodable byte is refused with its reason;
    a short number with the normaliser's reason."""
    verdict = recipient(raw, Channel.VOICE, "CN")
    assert isinstance(verdict, Refused)
    assert verdict.reason == reason
    short = recipient("12", Channel.VOICE, "CN")
    assert isinstance(short, Refused)
    assert short.reason not in (NOT_PHONE, UNUSABLE, NOT_UTF8)


def test_recipient_on_email_is_email_recipient() -> None:
    """On the email channel `recipient` gives email_recipient's verdict."""
    assert recipient(" Jane@Example.COM", Channel.EMAIL, None) == Address(
        "jane@example.com", Channel.EMAIL
    )
    assert recipient("+8613800138000", Channel.EMAIL, "CN") == Refused(NOT_EMAIL, "+8613800138000")


def test_shown_is_safe_to_echo() -> None:
    """Undecodable bytes and control characters are echoed as '?', spaces kept."""
    assert shown(BAD_BYTE) == "j?ne@example.com"
    assert shown("a\r\nb c") == "a??b c"
    assert unusable("a b", spaces=True) is None
    assert unusable("a b") == UNUSABLE


@given(st.text())
def test_any_text_gets_a_verdict(raw: str) -> None:
    """Any text is admitted or refused (never an exception), and what a refusal would
    echo holds no control character."""
    verdicts = (
        email_recipient(raw, "CN"),
        phone_recipient(raw, 1, "CN"),
        recipient(raw, Channel.VOICE, "CN"),
    )
    for verdict in verdicts:
        if isinstance(verdict, Refused):
            assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in verdict.shown)
        else:
            assert isinstance(verdict, Address)


HOSTILE = [
    b"jane@example.com",
    b"Jane@EXAMPLE.com",
    b"jane@",
    b"@example.com",
    b"jane@localhost",
    b"not-an-address",
    b"+8613800138000",
    b"j\xffne@example.com",
    b"jane@exa_mple.com",
    b"jane@xn--.com",
    b"jane..doe@example.com",
    "张三@例子.中国".encode(),
    b"ja ne@example.com",
    b"jane\x01@example.com",
    b"",
]


def _smtp_reply(sock: socket.socket, recipient: bytes) -> str:
    """The reply to RCPT TO:<recipient> on an open transaction."""
    sock.sendall(b"RCPT TO:<" + recipient + b">\r\n")
    line = b""
    while not line.endswith(b"\r\n"):
        line += sock.recv(4096)
    return line.decode().strip()


def _policy_reply(port: int, recipient: bytes) -> str:
    """The policy service's action for `recipient` (DUNNO as the relay's 250)."""
    request = (
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        b"client_address=127.0.0.1\nsasl_username=newsletter\nsender=shop@acme.test\n"
        b"recipient=" + recipient + b"\n\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            assert chunk
            answer += chunk
    action = answer.removeprefix(b"action=").decode().strip()
    return "250 2.1.5 OK" if action == "DUNNO" else action


def test_smtp_relay_and_policy_service_give_the_same_verdict(server_pool: ServerPool) -> None:
    """The same hostile recipients sent to the SMTP relay (RCPT) and to the policy
    service (Postfix's recipient attribute) get the same reply, word for word: 553
    with admission's reason for what it refuses, the decision's 550 for a usable
    address without consent."""
    registry = server_pool.get("valkey")
    flush(registry)
    home = Path(tempfile.mkdtemp(prefix="admit", dir="/tmp"))
    sink = SinkServer().start()
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    config = home / "filterd.toml"
    config.write_text(f"""
[registry]
url = "{registry.url}"
secret_file = "secret"
default_region = "CN"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink.port}"
hostname = "filterd.test"
max_recipients = 100

[[smtp.accounts]]
username = "newsletter"
password = "pw-news"
sender = "acme"
stream = "commercial"

[policy]
listen = "127.0.0.1:0"
""")
    process, _, ports = start_listeners(config, 2)
    try:
        with socket.create_connection(("127.0.0.1", ports["smtp"]), timeout=15) as smtp:
            smtp.recv(4096)
            auth = b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==\r\n"  # newsletter / pw-news
            for command in (b"EHLO tool.test\r\n", auth, b"MAIL FROM:<shop@acme.test>\r\n"):
                smtp.sendall(command)
                reply = b""
                while not any(line[3:4] == b" " for line in reply.split(b"\r\n")):
                    reply += smtp.recv(4096)
                assert reply.split(b"\r\n")[-2][:1] in (b"2", b"3")
            verdicts = [
                (recipient, _smtp_reply(smtp, recipient), _policy_reply(ports["policy"], recipient))
                for recipient in HOSTILE
            ]
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert [(r, s) for r, s, _ in verdicts] == [(r, p) for r, _, p in verdicts]
    assert {reply[:3] for _, reply, _ in verdicts} == {"550", "553"}
