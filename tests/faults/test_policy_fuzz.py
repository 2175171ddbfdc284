"""Hostile Postfix policy delegation sessions over a socket to a real filterd policy
service: every complete request gets exactly one `action=` reply and an empty line, in
order, with the text the model in policyfuzz.py owes it; a protocol error only closes
that connection; fresh connections are still answered; filterd stops with exit 0."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings

from filterd.model import Kind
from tests.faults import policyfuzz
from tests.faults.conftest import (
    BOB,
    JANE,
    Daemon,
    Reaper,
    daemon_on_valkey,
    report,
    unexpected_log_lines,
)

pytestmark = pytest.mark.timeout(180)

ACTIONS: Counter[str] = Counter()
ENDINGS: Counter[str] = Counter()
LABELS: Counter[str] = Counter()
TOTALS: Counter[str] = Counter()


@dataclass
class PolicyService:
    """The shared filterd (policy service only)."""

    daemon: Daemon

    @property
    def port(self) -> int:
        """The policy service's port."""
        return self.daemon.ports["policy"]


@pytest.fixture(scope="module")
def policy() -> Iterator[PolicyService]:
    """One filterd policy service (jane consented, bob refused, carol nothing; account
    "newsletter" by sasl_username or by a client address in 192.0.2.0/24) shared by the
    examples."""
    facts = [(JANE, Kind.CONSENT), (BOB, Kind.REFUSAL)]
    with daemon_on_valkey(Reaper(), "fzp", facts, ("policy",), policy=True) as daemon:
        yield PolicyService(daemon)
        report("policy_fuzz", sessions=TOTALS["sessions"], requests=TOTALS["requests"],
               write_failed=TOTALS["write_failed"], endings=dict(sorted(ENDINGS.items())),
               actions=dict(sorted(ACTIONS.items())), items=dict(LABELS.most_common()))  # fmt: skip


@given(policyfuzz.SESSIONS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_policy_requests_get_one_reply_each(
    policy: PolicyService, session: policyfuzz.Session
) -> None:
    """Each hostile session (random attribute lines, NULs, bytes that are not UTF-8,
    lines and requests at and over the limits, missing blank lines, many requests per
    connection and per write, writes cut anywhere) gets one `action=...` reply and an empty
    line per complete request, in order, with the owed text; after a protocol error
    filterd closes the connection itself; then a fresh connection is still answered."""
    outcome = policyfuzz.run(policy.port, session)
    policyfuzz.still_serves(policy.port)
    TOTALS.update(sessions=1, requests=len(outcome.plan.replies),
                  write_failed=int(outcome.write_failed))  # fmt: skip
    ENDINGS[f"{outcome.plan.ending}:{outcome.plan.reason}"] += 1
    ACTIONS.update(outcome.actions)
    LABELS.update(item.label for item in session.items)


def test_requests_before_a_protocol_error_are_answered(policy: PolicyService) -> None:
    """Two requests, then a line without `=`, then a third request in one write: the two
    are answered in order, filterd closes the connection, the third gets nothing."""
    head = b"protocol_state=RCPT\nsasl_username=newsletter\nrecipient="
    stream = head + b"jane@example.com\n\n" + head + b"bob@example.com\n\n" + b"garbage\n"
    session = policyfuzz.Session((policyfuzz.Item(stream + policyfuzz.SENTINEL, "x"),), ())
    outcome = policyfuzz.run(policy.port, session)
    assert (outcome.plan.ending, len(outcome.plan.replies)) == ("closed", 2)
    assert outcome.actions == Counter({"DUNNO": 1, "550": 1})


def test_regression_non_utf8_queue_id_gets_a_reply(policy: PolicyService) -> None:
    """A RCPT request whose queue_id is not UTF-8 (Postfix passes bytes through) gets its
    reply like any other: DUNNO for the consenting recipient, then the connection serves
    the next request (found by this fuzzer: the queue_id became the decision's message id
    as it was, and the JSON log line of the decision failed on the undecodable bytes, so
    the connection closed without a reply)."""
    request = (
        b"protocol_state=RCPT\nsasl_username=newsletter\nqueue_id=4F2\xff31\n"
        b"recipient=jane@example.com\n\n"
    )
    with socket.create_connection(("127.0.0.1", policy.port), timeout=15) as sock:
        sock.sendall(request + policyfuzz.SENTINEL)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    assert bytes(received) == b"action=DUNNO\n\n" * 2


def test_filterd_stops_cleanly_after_the_fuzzer(policy: PolicyService) -> None:
    """filterd is still alive after every session, logged no error-level line or
    exception and stops with exit 0 on SIGTERM. Runs last: it stops the shared service."""
    assert policy.daemon.alive(), "filterd died under the fuzzer"
    assert policy.daemon.stop() == 0
    assert unexpected_log_lines(policy.daemon) == []
