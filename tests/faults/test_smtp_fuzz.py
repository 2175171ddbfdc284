"""Random and hostile command lines over a socket to a real filterd SMTP listener: every
line gets one well-formed reply, no exception escapes the handler, filterd keeps running."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from filterd.model import Kind
from tests.faults import smtpfuzz
from tests.faults.conftest import (
    BOB,
    JANE,
    Reaper,
    daemon_on_valkey,
    report,
)
from tests.helpers import SinkServer

pytestmark = pytest.mark.timeout(180)

CODES: Counter[int] = Counter()
KNOWN: Counter[str] = Counter()
SESSIONS: list[int] = []


@pytest.fixture(scope="module")
def smtp_port() -> Iterator[int]:
    """One filterd SMTP relay (consent for jane, refusal for bob) shared by the examples."""
    reaper = Reaper()
    sink = SinkServer().start()
    reaper.finalizers.append(sink.shutdown)
    facts = [(JANE, Kind.CONSENT), (BOB, Kind.REFUSAL)]
    with daemon_on_valkey(reaper, "fuz", facts, ("smtp",), smtp_upstream=sink.port) as daemon:
        yield daemon.ports["smtp"]
        assert daemon.alive(), "filterd died under the fuzzer"
        assert daemon.stop() == 0
        report("smtp_fuzz", sessions=len(SESSIONS), lines=sum(SESSIONS),
               codes=dict(sorted(CODES.items())), known_bug_hits=dict(KNOWN),
               relayed=len(sink.handler.messages))  # fmt: skip


@given(smtpfuzz.SCRIPTS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_smtp_commands_always_get_a_wellformed_reply(
    smtp_port: int, script: smtpfuzz.Script
) -> None:
    """Each random command line (after an optional login) gets one well-formed SMTP reply:
    NNN lines with one code, the last with a space; no handler exception; after the
    script, NOOP on the same connection is still answered."""
    session = smtpfuzz.run(smtp_port, script)
    CODES.update(session.codes)
    KNOWN.update(session.known_crashes)
    SESSIONS.append(session.codes.total())


def test_listener_still_serves_after_the_fuzzer(smtp_port: int) -> None:
    """After the fuzz sessions a fresh connection gets the 220 greeting and EHLO 250."""
    session = smtpfuzz.Session(smtp_port)
    try:
        assert session.reply() == 220
        assert session.command(b"EHLO after.test") == 250
    finally:
        session.close()


def test_null_reverse_path_is_relayed(smtp_port: int) -> None:
    """A bounce (MAIL FROM:<>, the null reverse-path) to a consented recipient is accepted
    at RCPT and relayed (250 after DATA)."""
    session = smtpfuzz.Session(smtp_port)
    try:
        assert session.reply() == 220
        session.command(b"EHLO bounce.test")
        assert session.command(b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==") == 235
        assert session.command(b"MAIL FROM:<>") == 250
        assert session.command(b"RCPT TO:<jane@example.com>") == 250
        assert session.command(b"DATA") == 354
        session.send(b"Subject: delivery status\r\n\r\nbounced")
        assert session.command(b".") == 250
    finally:
        session.close()


@pytest.mark.parametrize("sender", [b"\xc2\xa7\x1f", b"  \xd8\xa7 \xd9\x81", b'  1"d\x02d'])
def test_odd_sender_is_not_a_crash(smtp_port: int, sender: bytes) -> None:
    """A MAIL FROM address with a control character or a space is either refused at MAIL
    with a 5xx of filterd's own or relayed; no exception text reaches the client."""
    session = smtpfuzz.Session(smtp_port)
    try:
        assert session.reply() == 220
        session.command(b"EHLO odd.test")
        assert session.command(b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==") == 235
        if session.command(b"MAIL FROM:" + sender) == 250:
            session.command(b"RCPT TO:<jane@example.com>")
        assert not session.known_crashes
    finally:
        session.close()


@pytest.mark.parametrize(
    ("mail", "rcpt"),
    [
        (b"<shop@acme.test>", b"<\xf5@example.com>"),
        (b"<shop@acme.test>", b"<\xe9>"),
        (b"<\xf5@acme.test>", b"<jane@example.com>"),
    ],
)
def test_undecodable_address_gets_a_553(smtp_port: int, mail: bytes, rcpt: bytes) -> None:
    """An address that is not UTF-8 text is refused with a 5xx reply of filterd's own
    (553 5.1.3 or 501/550), not with an exception's text."""
    session = smtpfuzz.Session(smtp_port)
    try:
        assert session.reply() == 220
        session.command(b"EHLO bytes.test")
        assert session.command(b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==") == 235
        session.command(b"MAIL FROM:" + mail)
        code = session.command(b"RCPT TO:" + rcpt)
        assert code is not None
        assert 500 <= code < 600
        assert not session.known_crashes
    finally:
        session.close()


def test_mail_from_nbsp_domain_is_a_syntax_error(smtp_port: int) -> None:
    """A MAIL FROM whose domain is a no-break space gets a syntax error reply (5xx) that
    carries no exception text."""
    session = smtpfuzz.Session(smtp_port)
    try:
        assert session.reply() == 220
        session.command(b"EHLO nbsp.test")
        assert session.command(b"AUTH PLAIN AG5ld3NsZXR0ZXIAcHctbmV3cw==") == 235
        code = session.command(b"MAIL FROM:  a@\xc2\xa0")
        assert code is not None
        assert 500 <= code < 600
        assert not session.known_crashes
    finally:
        session.close()
