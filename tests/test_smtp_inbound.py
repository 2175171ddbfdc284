"""The SMTP relay end to end: `filterd serve` as a real process, smtplib (and raw
sockets) as the marketing tool, an aiosmtpd sink as the upstream, a real
Valkey registry."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.identity import ConsumerHasher
from filterd.model import ALL_SENDERS, Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smtp.inbound import RelaySMTP
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from filterd.tokens import from_mailto_form, mailto_form
from tests.conftest import ServerPool, flush
from tests.helpers import LogReader, RedisProcess, SinkServer
from tests.helpers import dkim_key as make_dkim_key

FILTERD = str(Path(sys.executable).parent / "filterd")
SECRET = "ab" * 32
MESSAGE = (
    b"From: shop@acme.test\r\nTo: you@example.com\r\nSubject: hello\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=s1; h=from:to:subject; b=xyz\r\n"
    b"\r\nBody line 1\r\n.leading dot line\r\nBody line 3\r\n"
)


@dataclass
class Relay:
    """A running filterd with its upstream sink and registry."""

    process: subprocess.Popen[bytes]
    log: LogReader
    port: int
    sink: SinkServer
    registry_server: RedisProcess
    home: Path
    intake_port: int = 0
    """smtp.unsubscribe_listen's port, when configured."""

    def smtp(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        """A client connection (EHLO done)."""
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30, source_address=(source, 0))
        client.ehlo("tool.test")
        return client

    def intake(self) -> smtplib.SMTP:
        """A client connection to the unsubscribe listener (EHLO done)."""
        client = smtplib.SMTP("127.0.0.1", self.intake_port, timeout=30)
        client.ehlo("mx.mailbox.test")
        return client

    def login(self, user: str = "newsletter", password: str = "pw-news") -> smtplib.SMTP:  # noqa: S107
        """A client logged in with AUTH."""
        client = self.smtp()
        client.login(user, password)
        return client

    def record(self, address: str, kind: Kind, sender: str = "acme", **kw: object) -> None:
        """Write a fact into the registry filterd reads (same secret)."""

        async def write() -> None:
            registry = RedisRegistry.from_url(self.registry_server.url)
            service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
            channel = None if sender == ALL_SENDERS else Channel.EMAIL
            request = FactRequest(normalize(address), kind, sender, channel, "test", **kw)  # type: ignore[arg-type]
            await service.record(request, origin="test")
            await registry.close()

        asyncio.run(write())

    def audit(self) -> list[tuple[str, str | None]]:
        """(event, reason) of the audit log, newest first, read after filterd has stopped
        (drop entries are written in the background; a clean stop writes them all)."""
        assert stop_filterd(self.process) == 0

        async def read() -> list[tuple[str, str | None]]:
            registry = RedisRegistry.from_url(self.registry_server.url)
            entries = await registry.read_audit(AuditQuery(limit=50))
            await registry.close()
            return [(e.event, e.reason) for e in entries]

        return asyncio.run(read())


def write_config(home: Path, registry_url: str, sink_port: int, extra: str = "") -> Path:
    """The relay config used by these tests."""
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink_port}"
hostname = "filterd.test"
max_message_size = "20KB"
max_recipients = 5
{extra}

[[smtp.accounts]]
username = "newsletter"
password = "pw-news"
sender = "acme"
stream = "commercial"

[[smtp.accounts]]
username = "receipts"
password = "pw-tx"
sender = "acme"
stream = "transactional"

[[smtp.accounts]]
username = "legacy"
networks = ["127.0.0.2/32"]
sender = "acme"
stream = "commercial"
""")
    return path


def start_filterd(config: Path) -> tuple[subprocess.Popen[bytes], LogReader, int]:
    """`filterd serve`, its log reader, and the port its SMTP listener got."""
    process, reader, ports = start_listeners(config, 1)
    return process, reader, ports["smtp"]


def start_listeners(
    config: Path, count: int
) -> tuple[subprocess.Popen[bytes], LogReader, dict[str, int]]:
    """`filterd serve`, its log reader, and the ports of its first `count` listeners
    by front end."""
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    reader = LogReader(process)
    ports: dict[str, int] = {}
    try:
        while len(ports) < count:
            record = reader.wait_for("listening")
            ports[str(record["front_end"])] = int(record["port"])  # type: ignore[call-overload]
    except AssertionError:
        process.kill()
        stop_filterd(process)
        raise
    return process, reader, ports


def stop_filterd(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, the exit code; the pipes closed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


@pytest.fixture
def relay(server_pool: ServerPool) -> Iterator[Relay]:
    """filterd relaying to a fresh sink, on a flushed Valkey registry."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(home, registry_server.url, sink.port)
    try:
        process, reader, port = start_filterd(config)
    except BaseException:
        sink.shutdown()
        raise
    try:
        yield Relay(process, reader, port, sink, registry_server, home)
    finally:
        code = stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0


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


def test_successful_auth_logs_no_deprecation_warning(server_pool: ServerPool) -> None:
    """A successful AUTH (PLAIN and LOGIN) is logged as filterd's own `auth` line and
    the session may send; nothing on stdout or stderr mentions aiosmtpd's deprecated
    `Session.login_data`."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(home, registry_server.url, sink.port)
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    try:
        reader = LogReader(process)
        port = int(reader.wait_for("listening")["port"])  # type: ignore[call-overload]
        for mechanism in ("PLAIN", "LOGIN"):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("tool.test")
                client.user, client.password = "newsletter", "pw-news"
                authenticator = client.auth_plain if mechanism == "PLAIN" else client.auth_login
                assert client.auth(mechanism, authenticator, initial_response_ok=False)[0] == 235
                assert client.mail("shop@acme.test")[0] == 250
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stdout is not None
        assert process.stderr is not None
        stdout = reader.pending + process.stdout.read()
        stderr = process.stderr.read()
    finally:
        stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    logins = [line for line in stdout.decode().splitlines() if '"event":"auth"' in line]
    assert len(logins) == 2
    assert all('"ok":true' in line for line in logins)
    assert b"login_data" not in stdout
    assert b"login_data" not in stderr


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


def test_ehlo_advertises_pipelining_smtputf8(relay: Relay) -> None:
    """EHLO lists PIPELINING, SMTPUTF8, 8BITMIME, SIZE and AUTH (no TLS configured)."""
    client = relay.smtp()
    for extension in ("pipelining", "smtputf8", "8bitmime", "size", "auth"):
        assert client.has_extn(extension), extension
    client.quit()


def test_sigterm_finishes_open_transaction(relay: Relay) -> None:
    """SIGTERM while a transaction is open: the client can still finish it, then filterd exits 0."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("jane@example.com")[0] == 250
    relay.process.send_signal(signal.SIGTERM)
    relay.log.wait_for("stopping")
    assert client.data(MESSAGE)[0] == 250
    client.close()
    relay.process.wait(30)
    assert relay.process.returncode == 0
    assert len(relay.sink.handler.messages) == 1


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the STARTTLS listener (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=filterd.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_failed_logins_slow_down_the_next_auth_from_that_peer(relay: Relay) -> None:
    """Each wrong password from a peer makes its next AUTH wait longer before it is
    taken (0.5 s, then 1 s, ...); a right password clears the record (the next
    failure starts again at 0.5 s)."""

    def wrong() -> None:  # one AUTH PLAIN (login() would also try LOGIN)
        client = relay.smtp()
        client.user, client.password = "newsletter", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
        client.close()

    wrong()
    wrong()  # waits 0.5 s
    relay.login().quit()  # waits 1 s, then succeeds and clears
    wrong()
    wrong()  # waits 0.5 s again
    delays = [relay.log.wait_for("login_delayed")["delay_s"] for _ in range(3)]
    assert delays == [0.5, 1.0, 0.5]


def test_starttls_required_before_auth(server_pool: ServerPool) -> None:
    """With TLS configured: no AUTH offered before STARTTLS, MAIL refused before it;
    after STARTTLS, AUTH works and mail flows. A failed handshake is the client's
    doing: logged at info as smtp_tls_failed, not as an internal error."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="tls", dir="/tmp"))
    sink = SinkServer().start()
    cert, key = make_certificate(home)
    config = write_config(
        home, registry_server.url, sink.port, f'tls_cert = "{cert}"\ntls_key = "{key}"'
    )
    process, reader, port = start_filterd(config)
    relay = Relay(process, reader, port, sink, registry_server, home)
    try:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.smtp()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        assert client.mail("shop@acme.test")[0] == 530
        client.rset()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        client.ehlo("tool.test")
        assert client.has_extn("auth")
        client.login("newsletter", "pw-news")
        assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
        client.quit()
        assert len(sink.handler.messages) == 1
        # a client that answers STARTTLS's 220 with bytes that are no TLS handshake
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"EHLO tool.test\r\nSTARTTLS\r\n")
            seen = b""
            while seen.count(b"220 ") < 2:  # the greeting, then STARTTLS's "go ahead"
                chunk = raw.recv(1024)
                assert chunk
                seen += chunk
            raw.sendall(b"this is not a TLS ClientHello\r\n" * 4)
            with contextlib.suppress(ConnectionError):
                while raw.recv(1024):
                    pass
        failed = reader.wait_for("smtp_tls_failed")  # not smtp_internal_error at error
        assert failed["level"] == "info"
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)


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


# ---- opt-outs by mail and DKIM signing ([http] + unsubscribe_domain + [dkim]) ------------

UNSIGNED = b"From: shop@acme.test\r\nTo: you@example.com\r\nSubject: sale\r\n\r\nOffer\r\n"


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An RSA key file (0600) for [dkim] and the TXT record that publishes it."""
    return make_dkim_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def optout_relay(server_pool: ServerPool, dkim_key: tuple[Path, bytes]) -> Iterator[Relay]:
    """filterd with an unsubscribe domain, [http] and [dkim], relaying to a fresh sink."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    extra = (
        'unsubscribe_domain = "unsub.test"\nunsubscribe_listen = "127.0.0.1:0"\n'
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://u.acme.test"\n'
        f'[dkim]\nselector = "mail"\ndomain = "acme.test"\nkey_file = "{dkim_key[0]}"\n'
    )
    config = write_config(home, registry_server.url, sink.port, extra)
    try:
        process, reader, ports = start_listeners(config, 3)
    except BaseException:
        sink.shutdown()
        raise
    try:
        yield Relay(
            process, reader, ports["smtp"], sink, registry_server, home,
            intake_port=ports["smtp.unsubscribe"],
        )  # fmt: skip
    finally:
        code = stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert code == 0


def unsubscribe_token(relay: Relay, address: str) -> str:
    """The token of `filterctl unsubscribe-url ADDRESS --sender acme` for this relay."""
    done = subprocess.run(
        [str(Path(FILTERD).parent / "filterctl"), "--config", str(relay.home / "filterd.toml"),
         "unsubscribe-url", address, "--sender", "acme"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip().rsplit("/", 1)[1]


def _token_bytes(token: str) -> bytes:
    """A token's 32 bytes."""
    return base64.urlsafe_b64decode(token + "=")


def facts_of(relay: Relay, address: str) -> list[tuple[Kind, str, str]]:
    """(kind, sender, source) of every fact on record for an address."""

    async def read() -> list[tuple[Kind, str, str]]:
        registry = RedisRegistry.from_url(relay.registry_server.url)
        hasher = ConsumerHasher(bytes.fromhex(SECRET))
        facts = await registry.facts(hasher.consumer_id(normalize(address)))
        await registry.close()
        return [(f.kind, f.sender, f.source) for f in facts]

    return asyncio.run(read())


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


def _parsed(parser: SMTP, arg: str, stock: bool) -> tuple[str | None, str | None] | str:
    """What a _getaddr gives for `arg`: its result, or the name of what it raised."""
    try:
        return SMTP._getaddr(parser, arg) if stock else parser._getaddr(arg)
    except Exception as exc:  # aiosmtpd's parser raises IndexError on some inputs
        return type(exc).__name__


_PATH_TEXT = st.text(alphabet='aZ09.-+=?_@<> \t\n()"\\[],:;é!~', max_size=30)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        _PATH_TEXT,
        st.builds(lambda a, b: f"<{a}>{b}", _PATH_TEXT, _PATH_TEXT),
        st.builds(lambda a, b, c: f"<{a}@{b}>{c}", _PATH_TEXT, _PATH_TEXT, _PATH_TEXT),
        st.from_regex(
            r"<[a-z0-9.+=?-]{1,8}@[a-z0-9.-]{1,8}>([ \t\n][A-Z=0-9 (]{0,8})?", fullmatch=True
        ),
    ),
    st.sampled_from([0, 4, 64]),
)
@example("<1rcpt@example.com>", 0)
@example("<a.b+c@d-e.example.com> SIZE=100 BODY=8BITMIME", 0)
@example("<a@b.c>  SIZE=1", 0)
@example("<a@b.c> (comment) X", 0)
@example("<a@b.c> \nX", 0)
@example("<=?utf-8?q?a?=@b.c>", 0)
@example("<a..b@c.d>", 0)
@example("<.a@c.d>", 0)
@example("<abcdef@c.d>", 4)
@example("<>", 0)
@example("<", 0)
def test_recipient_paths_parse_as_aiosmtpd_parses_them(arg: str, local_limit: int) -> None:
    """The relay's own reading of MAIL FROM / RCPT TO paths (a fast path for
    `<local@domain>`) gives exactly what aiosmtpd's parser gives for any text:
    the same address and parameters, the same None for a malformed or too-long
    path, the same exception."""
    parser = RelaySMTP.__new__(RelaySMTP)
    parser.local_part_limit = local_limit
    assert _parsed(parser, arg, stock=False) == _parsed(parser, arg, stock=True)


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


def test_connection_caps_and_idle_timeout(server_pool: ServerPool) -> None:
    """Beyond max_connections_per_address a client gets 421 4.7.0 and is closed; a
    client silent for idle_timeout is closed; a freed place takes a new client."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="caps", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(
        home, registry_server.url, sink.port, 'idle_timeout = "1s"\nmax_connections_per_address = 2'
    )
    process, _reader, port = start_filterd(config)
    try:
        first = socket.create_connection(("127.0.0.1", port), timeout=15)
        second = socket.create_connection(("127.0.0.1", port), timeout=15)
        assert first.recv(1024).startswith(b"220 ")
        assert second.recv(1024).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=15) as third:
            answer = b""
            while chunk := third.recv(1024):
                answer += chunk
            assert answer.startswith(b"421 4.7.0")
        assert first.recv(1024) == b""  # closed after 1 s of silence
        assert second.recv(1024) == b""
        first.close()
        second.close()
        client = smtplib.SMTP("127.0.0.1", port, timeout=15)
        client.login("newsletter", "pw-news")
        client.quit()
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def test_rcpt_without_mail_is_503_even_for_a_bad_address(relay: Relay) -> None:
    """After a finished transaction, a RCPT without a new MAIL gets aiosmtpd's 503 (no
    transaction), not admission's 553, however bad its address."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    assert client.rcpt("jane@")[0] == 503
    assert client.rcpt("jane@example.com")[0] == 503
    client.quit()
