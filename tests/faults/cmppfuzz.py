"""Hostile CMPP sessions for a real filterd CMPP listener, what filterd owes each, and a
driver that plays one over TCP and checks every answer (tests/faults/test_cmpp_fuzz.py).

A session is a first message, then (after a login) a list of chunks, each one message
built whole or broken on purpose, the bytes cut into writes at random points. The
model follows filterd's server as documented in filterd/cmpp/session.py:

- first message: a CONNECT with the account's secret logs in (Status 0, the session
  speaks 2.0 or 3.0 as asked); an unknown Source_Addr gets Status 2, a wrong
  authenticator 3, Version 0x31 Status 4, Version 0x10 Status 5, a CONNECT whose body
  is cut Status 1: then the connection closes. Any other first message: closed.
- after the login: SUBMIT → its SUBMIT_RESP (0 when a destination consented, only
  those forwarded, with a status report REFUSED / NOCONST for each other when
  Registered_Delivery is 1; 64 when all refused; 65 otherwise); a SUBMIT whose body
  is cut inside LinkID / Reserve, or has octets after it → Result 1; ACTIVE_TEST
  (with a stray body too) → ACTIVE_TEST_RESP; a DELIVER from the SP → DELIVER_RESP
  Result 2; a second CONNECT → Status 5; responses and unknown command ids → nothing;
  TERMINATE → TERMINATE_RESP, then closed; a Total_Length under 12 or over 4,096 →
  closed, nothing more answered; random octets → what follows is undetermined.

A session that ends open gets a TERMINATE from the driver, so every determined
session ends with filterd closing the connection after its last answer.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from hypothesis import strategies as st

from filterd.cmpp.auth import connect_for
from filterd.cmpp.encode import encode
from filterd.cmpp.header import (
    ACTIVE_TEST_RESP,
    CONNECT_RESP,
    DELIVER,
    DELIVER_RESP,
    HEADER,
    SUBMIT_RESP,
    TERMINATE_RESP,
    V20,
    V30,
)
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    Connect,
    Deliver,
    DeliverResp,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.report import decode_report, report_length
from tests.faults.conftest import CMPP_SECRET, CMPP_SP_ID, JANE_SMS, NUMBER

REFUSED_SMS = "8613900139000"
UNKNOWN_SMS = "8613700137000"
DESTINATIONS = (JANE_SMS, REFUSED_SMS, UNKNOWN_SMS)
"""A consenting number, one that refused acme, one with nothing on record."""


@dataclass(frozen=True)
class Owed:
    """One answer filterd owes: command id, Sequence_Id and Status / Result."""

    command_id: int
    sequence_id: int
    value: int


@dataclass(frozen=True)
class Chunk:
    """One message's bytes, what it is owed, and whether the session ends after it."""

    data: bytes
    kind: str
    owed: tuple[Owed, ...] = ()
    reports: tuple[str, ...] = ()
    """The Stat of each status report filterd owes for removed destinations."""
    ending: str = ""
    """"closed" (filterd closes), "undetermined" (what follows cannot be modelled)."""


@dataclass(frozen=True)
class Session:
    """A first message (the login, or not) and the chunks after it."""

    version: int
    first: Chunk
    chunks: tuple[Chunk, ...]
    cuts: tuple[int, ...]


def _frame(command_id: int, body: bytes, sequence: int, length: int | None = None) -> bytes:
    return HEADER.pack(12 + len(body) if length is None else length, command_id, sequence) + body


def login(version: int, sequence: int, *, secret: str = CMPP_SECRET, sp_id: str = CMPP_SP_ID,
          asked: int | None = None) -> bytes:  # fmt: skip
    """A CONNECT's bytes (`asked`: the Version written in it, default `version`)."""
    pdu = connect_for(sequence, sp_id, secret, datetime.now(), version)
    if asked is not None:
        pdu = Connect(sequence, pdu.source_addr, pdu.authenticator_source, asked, pdu.timestamp)
    return encode(pdu, version)


@st.composite
def first_message(draw: st.DrawFn, version: int) -> Chunk:
    """The login, mostly; else a refused CONNECT or a message before any CONNECT."""
    kind = draw(st.sampled_from(["ok"] * 12 + ["unknown", "wrong", "high", "low", "cut", "other"]))
    sequence = 1
    if kind == "ok":
        return Chunk(login(version, sequence), "connect", (Owed(CONNECT_RESP, sequence, 0),))
    if kind == "other":
        return Chunk(encode(ActiveTest(sequence), version), "before_connect", ending="closed")
    data, status = {
        "unknown": (login(version, sequence, sp_id="999999"), 2),
        "wrong": (login(version, sequence, secret="wrong"), 3),  # noqa: S106
        "high": (login(version, sequence, asked=0x31), 4),
        "low": (login(version, sequence, asked=0x10), 5),
        "cut": (_frame(0x00000001, login(version, sequence)[12:-3], sequence), 1),
    }[kind]
    return Chunk(data, f"connect_{kind}", (Owed(CONNECT_RESP, sequence, status),), ending="closed")


def _submit(version: int, sequence: int, destinations: tuple[str, ...], report: int) -> bytes:
    pdu = Submit(
        sequence, registered_delivery=report, msg_src=CMPP_SP_ID, src_id=NUMBER,
        service_id="MKT", dest_terminal_ids=destinations, msg_content=b"offer",
    )  # fmt: skip
    return encode(pdu, version)


def judged(destinations: tuple[str, ...], report: int) -> tuple[int, tuple[str, ...]]:
    """The Result of a SUBMIT to `destinations`, and the Stats of the reports owed."""
    if JANE_SMS in destinations:
        removed = [d for d in destinations if d != JANE_SMS]
        stats = tuple("REFUSED" if d == REFUSED_SMS else "NOCONST" for d in removed)
        return 0, stats if report else ()
    return (64 if set(destinations) == {REFUSED_SMS} else 65), ()


def _submits(draw: st.DrawFn, version: int, sequence: int, kind: str) -> Chunk:
    """A SUBMIT to 1-3 of DESTINATIONS, whole, cut inside its last field, or too long."""
    chosen = draw(st.lists(st.sampled_from(DESTINATIONS), min_size=1, max_size=3, unique=True))
    report = draw(st.integers(0, 1))
    data = _submit(version, sequence, tuple(chosen), report)
    if kind == "submit":
        result, stats = judged(tuple(chosen), report)
        return Chunk(data, kind, (Owed(SUBMIT_RESP, sequence, result),), stats)
    if kind == "submit_cut":  # the body ends inside LinkID (3.0) / Reserve (2.0)
        body = data[12 : -draw(st.integers(1, 8))]
    else:
        body = data[12:] + draw(st.binary(min_size=1, max_size=9))
    return Chunk(_frame(0x00000004, body, sequence), kind, (Owed(SUBMIT_RESP, sequence, 1),))


def _keepalive(draw: st.DrawFn, version: int, sequence: int, kind: str) -> Chunk:
    """ACTIVE_TEST, with a stray body or not: answered either way."""
    if kind == "active_test":
        data = encode(ActiveTest(sequence), version)
    else:
        data = _frame(0x00000008, draw(st.binary(min_size=1, max_size=9)), sequence)
    return Chunk(data, kind, (Owed(ACTIVE_TEST_RESP, sequence, 0),))


def _misplaced(draw: st.DrawFn, version: int, sequence: int, kind: str) -> Chunk:
    """What an SP should not send: a DELIVER, a second CONNECT, responses, unknown ids."""
    if kind == "deliver":
        pdu = Deliver(sequence, msg_id=7, dest_id=NUMBER, src_terminal_id=JANE_SMS,
                      msg_content=b"hi")  # fmt: skip
        return Chunk(encode(pdu, version), kind, (Owed(DELIVER_RESP, sequence, 2),))
    if kind == "connect":
        return Chunk(login(version, sequence), kind, (Owed(CONNECT_RESP, sequence, 5),))
    if kind == "response":
        answer = draw(st.sampled_from([
            SubmitResp(sequence, msg_id=3), DeliverResp(sequence, msg_id=3),
            ActiveTestResp(sequence), TerminateResp(sequence),
        ]))  # fmt: skip
        return Chunk(encode(answer, version), kind)
    command = draw(st.sampled_from([0x00000003, 0x00000006, 0x00000077, 0x80000077]))
    return Chunk(_frame(command, draw(st.binary(max_size=40)), sequence), kind)


def _endings(draw: st.DrawFn, version: int, sequence: int, kind: str) -> Chunk:
    """TERMINATE, a Total_Length out of bounds, random octets."""
    if kind == "terminate":
        owed = (Owed(TERMINATE_RESP, sequence, 0),)
        return Chunk(encode(Terminate(sequence), version), kind, owed, ending="closed")
    if kind == "bad_length":
        length = draw(st.one_of(st.integers(0, 11), st.integers(4097, (1 << 32) - 1)))
        return Chunk(_frame(DELIVER, b"", sequence, length), kind, ending="closed")
    return Chunk(draw(st.binary(min_size=1, max_size=64)), kind, ending="undetermined")


_BUILDERS = {
    "submit": _submits, "submit_cut": _submits, "submit_long": _submits,
    "active_test": _keepalive, "active_test_body": _keepalive,
    "deliver": _misplaced, "connect": _misplaced, "response": _misplaced, "unknown": _misplaced,
    "terminate": _endings, "bad_length": _endings, "random": _endings,
}  # fmt: skip
_WEIGHTED = ["submit"] * 3 + sorted(_BUILDERS)


@st.composite
def chunk(draw: st.DrawFn, version: int, sequence: int) -> Chunk:
    """One message after the login."""
    kind = draw(st.sampled_from(_WEIGHTED))
    return _BUILDERS[kind](draw, version, sequence, kind)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A whole hostile session."""
    version = draw(st.sampled_from([V20, V30]))
    first = draw(first_message(version))
    chunks: list[Chunk] = []
    if not first.ending:
        for index in range(draw(st.integers(1, 12))):
            chunks.append(draw(chunk(version, index + 2)))
            if chunks[-1].ending:
                break
    size = len(first.data) + sum(len(c.data) for c in chunks)
    cuts = tuple(sorted(draw(st.sets(st.integers(1, max(1, size - 1)), max_size=4))))
    return Session(version, first, tuple(chunks), cuts)


SESSIONS = sessions()


@dataclass
class Outcome:
    """What one session got."""

    answers: list[Owed] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    closed: bool = False


def _value(command_id: int, frame: bytes) -> int:
    """The Status / Result of a response (its width read from its length)."""
    at = 12 if command_id == CONNECT_RESP else 20
    wide = len(frame) in (33, 24)  # 3.0 CONNECT_RESP, SUBMIT_RESP / DELIVER_RESP
    width = 4 if wide else 1
    return int.from_bytes(frame[at : at + width], "big") if len(frame) > at else 0


def run(port: int, session: Session, timeout: float = 20.0) -> tuple[Outcome, list[Owed]]:
    """Play `session`; what it got, and what it was owed (in order)."""
    chunks = [session.first, *session.chunks]
    owed = [o for c in chunks for o in c.owed]
    reports = [s for c in chunks for s in c.reports]
    ending = chunks[-1].ending
    data = b"".join(c.data for c in chunks)
    if not ending:  # end a session left open the proper way
        sequence = 0x7EADBEEF
        data += encode(Terminate(sequence), session.version)
        owed.append(Owed(TERMINATE_RESP, sequence, 0))
    outcome = Outcome()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        bounds = [0, *session.cuts, len(data)]
        try:
            for start, end in itertools.pairwise(bounds):
                sock.sendall(data[start:end])
        except OSError:
            pass  # filterd closed first (a refused login): what it answered is read below
        deadline = time.monotonic() + timeout
        buffer = bytearray()
        wanted = len(owed) + len(reports)
        while time.monotonic() < deadline:
            if ending == "undetermined" and len(outcome.answers) + len(outcome.reports) >= wanted:
                break
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                received = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                received = b""
            if not received:
                outcome.closed = True
                break
            buffer += received
            _take(buffer, outcome, session.version)
    return outcome, owed


def _take(buffer: bytearray, outcome: Outcome, version: int) -> None:
    """Move every whole message in `buffer` into `outcome`."""
    while len(buffer) >= 12:
        length, command_id, sequence = HEADER.unpack_from(buffer)
        if len(buffer) < length:
            return
        frame = bytes(buffer[:length])
        del buffer[:length]
        if command_id == DELIVER:  # a status report filterd sends for a removed destination
            end = length - (20 if version == V30 else 8)  # LinkID / Reserve after the content
            content = frame[end - report_length(version) : end]
            outcome.reports.append(decode_report(content, version).stat)
        else:
            outcome.answers.append(Owed(command_id, sequence, _value(command_id, frame)))


def check(session: Session, outcome: Outcome, owed: list[Owed]) -> Counter[str]:
    """Assert the session got exactly what it was owed; the kinds of its chunks."""
    chunks = [session.first, *session.chunks]
    expected_reports = sorted(s for c in chunks for s in c.reports)
    if chunks[-1].ending == "undetermined":
        assert Counter(owed) <= Counter(outcome.answers), (owed, outcome.answers)
    else:
        assert sorted(outcome.answers, key=repr) == sorted(owed, key=repr), (owed, outcome)
        assert sorted(outcome.reports) == expected_reports, (expected_reports, outcome)
        assert outcome.closed, "filterd did not close the connection after its answers"
    return Counter(c.kind for c in chunks)


def still_serves(port: int, timeout: float = 40.0) -> None:
    """A fresh SP logs in (after any back-off) and has a submit to the consenting
    number accepted, then terminates."""
    session = Session(V30, Chunk(login(V30, 1), "connect", (Owed(CONNECT_RESP, 1, 0),)),
                      (Chunk(_submit(V30, 2, (JANE_SMS,), 0), "submit",
                             (Owed(SUBMIT_RESP, 2, 0),)),), ())  # fmt: skip
    outcome, owed = run(port, session, timeout)
    check(session, outcome, owed)
