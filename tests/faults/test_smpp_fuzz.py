"""Hostile SMPP sessions over a socket to a real filterd SMPP relay: every request gets
exactly the answer the model in smppfuzz.py owes it (or filterd closes after a framing
error, a refused bind or an unbind), a fresh client can bind and submit after each
session, and filterd keeps running, logs no unexpected exception and stops with exit 0."""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings

from filterd.model import Kind
from filterd.smpp.encode import encode
from filterd.smpp.header import BIND_TRANSCEIVER, HEADER, RESPONSE_BIT, SUBMIT_SM
from filterd.smpp.pdu import BindTransceiver, EnquireLink, SubmitSm, Unbind
from filterd.smpp.status import ESME_RINVCMDLEN, ESME_RINVDSTADR, ESME_RINVPASWD, ESME_ROK
from tests.faults import smppfuzz
from tests.faults.conftest import (
    JANE,
    Daemon,
    Reaper,
    daemon_on_valkey,
    report,
    unexpected_log_lines,
)
from tests.smsc import FakeSmsc

pytestmark = pytest.mark.timeout(180)

STATUSES: Counter[int] = Counter()
ENDINGS: Counter[str] = Counter()
ANSWERED: Counter[str] = Counter()
TOTALS: Counter[str] = Counter()


@dataclass
class Relay:
    """The shared filterd (SMPP relay) and its fake carrier."""

    daemon: Daemon
    smsc: FakeSmsc

    @property
    def port(self) -> int:
        """filterd's SMPP port."""
        return self.daemon.ports["smpp"]


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    """One filterd SMPP relay (consent for one number, a refusal for another, an email
    consent, a fake SMSC as the carrier) shared by the examples."""
    reaper = Reaper()
    smsc = FakeSmsc().start()
    reaper.finalizers.append(smsc.shutdown)
    facts = [
        ("+" + smppfuzz.JANE_SMS, Kind.CONSENT),
        ("+" + smppfuzz.REFUSED_SMS, Kind.REFUSAL),
        (JANE, Kind.CONSENT),  # her email: no SMS may rely on it
    ]
    with daemon_on_valkey(reaper, "fzs", facts, ("smpp",), smsc_port=smsc.port) as daemon:
        smsc.wait_bound()
        yield Relay(daemon, smsc)
        report("smpp_fuzz", sessions=TOTALS["sessions"], frames=TOTALS["frames"],
               owed=TOTALS["owed"], answers=TOTALS["answers"],
               write_failed=TOTALS["write_failed"], endings=dict(sorted(ENDINGS.items())),
               statuses={f"{k:#x}": v for k, v in sorted(STATUSES.items())},
               relayed=len(smsc.submits),
               answered=dict(sorted(ANSWERED.items())))  # fmt: skip


@given(smppfuzz.SESSIONS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_smpp_sessions_get_exactly_the_owed_answers(
    relay: Relay, session: smppfuzz.Session
) -> None:
    """Each hostile session (random bytes, broken lengths and bodies, binds with bad
    credentials or overlong fields, submits before a bind, unknown command ids, stray
    responses, PDUs batched or split across writes) gets one well-formed answer per owed
    request, with the status the model names (never ESME_RSYSERR), and the connection
    closes exactly when filterd's server says it does; then a fresh client still binds and
    has a submit_sm accepted."""
    try:
        outcome = smppfuzz.run(relay.port, session)
    except BaseException:
        # a refused bind left filterd's back-off up: clear it, so that the next (shrunk)
        # example meets filterd as the first one did
        with contextlib.suppress(Exception):
            smppfuzz.still_serves(relay.port)
        raise
    smppfuzz.still_serves(relay.port)
    TOTALS.update(sessions=1, frames=outcome.plan.frames, owed=len(outcome.plan.expected),
                  answers=outcome.responses, write_failed=int(outcome.write_failed))  # fmt: skip
    ENDINGS[f"{outcome.plan.ending}:{outcome.plan.reason.split(' octets')[0]}"] += 1
    STATUSES.update(outcome.statuses)
    ANSWERED.update(outcome.answered)


def test_wrong_password_is_refused_and_closed(relay: Relay) -> None:
    """A bind with the right system_id and a wrong password gets ESME_RINVPASWD (after
    the back-off delay) and filterd closes the connection; a valid bind then works."""
    body = smppfuzz.bind_body(smppfuzz.SYSTEM_ID.encode(), b"wrong")
    chunk = smppfuzz.Chunk(smppfuzz.frame(BIND_TRANSCEIVER, body, 7), "bind_wrong")
    outcome = smppfuzz.run(relay.port, smppfuzz.Session(None, (chunk,), ()))
    assert (outcome.plan.ending, outcome.plan.reason) == ("closed", "bind refused")
    assert outcome.statuses == Counter({ESME_RINVPASWD: 1})
    smppfuzz.still_serves(relay.port)


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [(smppfuzz.SYSTEM_ID.encode(), b"123456789", ESME_RINVPASWD), (b"s" * 16, b"pw", 0x0F)],
)
def test_bind_with_an_overlong_field_is_a_failed_bind(
    relay: Relay, system_id: bytes, password: bytes, status: int
) -> None:
    """A first bind whose password (9+ octets) or system_id (16+) the codec refuses is
    answered with the codec's status (ESME_RINVPASWD, ESME_RINVSYSID) after the failed-bind
    back-off, and filterd closes the connection, as for a wrong password."""
    body = smppfuzz.bind_body(system_id, password)
    chunk = smppfuzz.Chunk(smppfuzz.frame(BIND_TRANSCEIVER, body, 9), "bind_overlong")
    outcome = smppfuzz.run(relay.port, smppfuzz.Session(None, (chunk,), ()))
    assert (outcome.plan.ending, outcome.plan.reason) == ("closed", "bind refused")
    assert outcome.statuses == Counter({status: 1})
    smppfuzz.still_serves(relay.port)


def test_bad_command_length_gets_generic_nack_and_close(relay: Relay) -> None:
    """A header with command_length 8 after a valid bind gets generic_nack ESME_RINVCMDLEN
    with its sequence number, and filterd closes the connection; the enquire_link behind
    it is never answered."""
    bad = HEADER.pack(8, SUBMIT_SM, 0, 42)
    after = encode(EnquireLink(sequence_number=43))
    chunks = (smppfuzz.Chunk(bad, "bad_length"), smppfuzz.Chunk(after, "enquire_link"))
    outcome = smppfuzz.run(relay.port, smppfuzz.Session("trx", chunks, (3, 20)))
    assert outcome.plan.ending == "closed"
    assert outcome.statuses == Counter({ESME_ROK: 1, ESME_RINVCMDLEN: 1})


def test_listener_still_serves_after_the_fuzzer(relay: Relay) -> None:
    """After the fuzz sessions a fresh client binds, has a submit_sm to the consenting
    number accepted and relayed to the carrier, and unbinds."""
    before = len(relay.smsc.submits)
    smppfuzz.still_serves(relay.port)
    relay.smsc.wait_submits(before + 1)


def test_regression_email_destination_is_not_a_number(relay: Relay) -> None:
    """A submit_sm whose destination_addr is an email address (TON 0, unknown) gets
    ESME_RINVDSTADR and reaches no carrier: SMS destinations are phone numbers (SPEC §4),
    and a consent given for email must not let an SMS through (found by this fuzzer: the
    destination was read by normalize(), which takes anything with an `@` for an email
    address, so jane@example.com's email consent let the submit_sm through)."""
    bind = BindTransceiver(
        sequence_number=1, system_id=smppfuzz.SYSTEM_ID, password=smppfuzz.PASSWORD
    )
    submit = SubmitSm(sequence_number=2, source_addr="10690001", dest_addr_ton=0,
                               destination_addr=JANE, short_message=b"offer")  # fmt: skip
    with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as sock:
        reader = smppfuzz.Reader(sock)
        sock.sendall(b"".join(encode(p) for p in (bind, submit)))
        reader.until(SUBMIT_SM | RESPONSE_BIT, 2, "the submit_sm")
        sock.sendall(encode(Unbind(sequence_number=3)))
        reader.to_eof("after unbind")
    statuses = {sequence: status for _, status, sequence in reader.pdus}
    assert statuses[2] == ESME_RINVDSTADR
    assert JANE not in {pdu.destination_addr for pdu in relay.smsc.submits}


def test_filterd_stops_cleanly_after_the_fuzzer(relay: Relay) -> None:
    """filterd is still alive after every session, logged no error-level line or
    exception (no handler crash, no unretrieved task exception) and stops with exit 0 on
    SIGTERM. Runs last: it stops the shared relay."""
    assert relay.daemon.alive(), "filterd died under the fuzzer"
    assert relay.daemon.stop() == 0
    assert unexpected_log_lines(relay.daemon) == []
