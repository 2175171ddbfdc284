"""Hostile CMPP sessions over a socket to a real `filterd serve` [cmpp]: every request
gets exactly the answer the model in cmppfuzz.py owes it (and filterd closes when the
model says), a fresh SP can log in and submit after each session, and filterd keeps
running, logs no unexpected exception and stops with exit 0."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings

from filterd.model import Kind
from tests.cmpp_ismg import FakeIsmg
from tests.faults import cmppfuzz
from tests.faults.conftest import Daemon, Reaper, daemon_on_valkey, report, unexpected_log_lines

pytestmark = pytest.mark.timeout(300)

KINDS: Counter[str] = Counter()
TOTALS: Counter[str] = Counter()


@dataclass
class Relay:
    """The shared filterd (CMPP relay) and its fake ISMG."""

    daemon: Daemon
    ismg: FakeIsmg

    @property
    def port(self) -> int:
        """filterd's CMPP port."""
        return self.daemon.ports["cmpp"]


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    """One filterd CMPP relay (consent for one number, a refusal for another, a fake ISMG
    upstream) shared by the examples."""
    reaper = Reaper()
    ismg = FakeIsmg().start()
    reaper.finalizers.append(ismg.shutdown)
    facts = [("+" + cmppfuzz.JANE_SMS, Kind.CONSENT), ("+" + cmppfuzz.REFUSED_SMS, Kind.REFUSAL)]
    with daemon_on_valkey(reaper, "fzc", facts, ("cmpp",), ismg=ismg) as daemon:
        ismg.wait_logged_in()
        yield Relay(daemon, ismg)
        report("cmpp_fuzz", sessions=TOTALS["sessions"], owed=TOTALS["owed"],
               answers=TOTALS["answers"], reports=TOTALS["reports"],
               forwarded=len(ismg.submits), kinds=dict(sorted(KINDS.items())))  # fmt: skip


@given(cmppfuzz.SESSIONS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_cmpp_sessions_get_exactly_the_owed_answers(
    relay: Relay, session: cmppfuzz.Session
) -> None:
    """Each hostile session (refused logins, messages before the login, cut and overlong
    bodies, unknown command ids, stray responses, broken lengths, random octets, messages
    split across writes, both versions) gets exactly the answers the model owes, with
    their Status / Result and the status reports for removed destinations, and filterd
    closes the connection when the model says; then a fresh SP still logs in and has a
    submit accepted."""
    try:
        outcome, owed = cmppfuzz.run(relay.port, session)
        kinds = cmppfuzz.check(session, outcome, owed)
    finally:
        # a refused login left filterd's back-off up: a good login clears it, so that the
        # next (shrunk) example meets filterd as the first one did
        with contextlib.suppress(Exception):
            cmppfuzz.still_serves(relay.port)
    cmppfuzz.still_serves(relay.port)
    TOTALS.update(sessions=1, owed=len(owed), answers=len(outcome.answers),
                  reports=len(outcome.reports))  # fmt: skip
    KINDS.update(kinds)


def test_listener_still_serves_after_the_fuzzer(relay: Relay) -> None:
    """After the fuzz sessions a fresh SP logs in, has a submit to the consenting number
    accepted and forwarded to the ISMG, and terminates."""
    before = len(relay.ismg.submits)
    cmppfuzz.still_serves(relay.port)
    relay.ismg.wait_submits(before + 1)


def test_filterd_stops_cleanly_after_the_fuzzer(relay: Relay) -> None:
    """filterd is still alive after every session, logged no error-level line or
    exception and stops with exit 0 on SIGTERM. Runs last: it stops the shared relay."""
    assert relay.daemon.alive(), "filterd died under the fuzzer"
    assert relay.daemon.stop() == 0
    assert unexpected_log_lines(relay.daemon) == []
