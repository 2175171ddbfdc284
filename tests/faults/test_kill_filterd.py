"""kill -9 `filterd serve` again and again while clients send: every message a client
saw acknowledged (SMTP 250 after DATA, SMPP ESME_ROK, CMPP Result 0) is at the upstream,
zero lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from filterd.model import Kind
from tests.cmpp_ismg import FakeIsmg
from tests.faults.cmppload import CmppLoad
from tests.faults.conftest import (
    JANE,
    JANE_SMS,
    ROUNDS,
    Daemon,
    Reaper,
    SmppLoad,
    SmtpLoad,
    Target,
    await_group_exit,
    free_port,
    group_members,
    record_fact,
    report,
    sink_idents,
    write_config,
)
from tests.helpers import RedisProcess, SinkServer
from tests.smsc import FakeSmsc

pytestmark = pytest.mark.timeout(90 + 12 * ROUNDS)

NEW_ACKS_BEFORE_KILL = 3


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_during_smtp_loses_no_acknowledged_message(
    home: Path, valkey: RedisProcess, sink: SinkServer, reaper: Reaper, workers: int
) -> None:
    """ROUNDS times: wait for a few more 250s, SIGKILL filterd (the main process) mid-stream,
    start it again. Every message the SMTP clients saw accepted is at the sink; none is
    lost. With smtp.workers = 2 the orphaned worker must exit by itself (10 s at most)."""
    record_fact(valkey.url, JANE, Kind.CONSENT)
    listen = f"127.0.0.1:{free_port()}" if workers > 1 else "127.0.0.1:0"
    config = write_config(
        home, valkey.url, smtp_upstream=sink.port, smtp_listen=listen, workers=workers
    )
    daemon = Daemon(config, reaper, ("smtp",))
    target = Target()
    target.set(daemon.start().ports["smtp"])
    load = SmtpLoad(target, [JANE], threads=2).start()
    leftovers: list[str] = []
    try:
        for _ in range(ROUNDS):
            load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
            target.set(None)
            pgid = daemon.pid
            daemon.kill9()
            leftovers += [f"{pid}:{cmd}" for pid, cmd in await_group_exit(pgid)]
            target.set(daemon.start().ports["smtp"])
        load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
    finally:
        load.stop()
    assert daemon.stop() == 0
    acknowledged = load.ledger.acknowledged()
    at_sink = sink_idents(sink.handler.messages)
    lost = acknowledged - set(at_sink)
    line = report(
        f"smtp_kill9[workers={workers}]",
        kills=ROUNDS,
        outcomes=load.ledger.summary(),
        acknowledged=len(acknowledged),
        at_sink=len(at_sink),
        unacknowledged_at_sink=len(set(at_sink) - acknowledged),
        duplicates_at_sink=len(at_sink) - len(set(at_sink)),
        lost=len(lost),
        leftovers_after_kill=len(leftovers),
    )
    assert not lost, line
    assert not leftovers, line
    assert load.ledger.summary().get("permanent", 0) == 0, load.ledger.details("permanent")


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_during_smpp_loses_no_acknowledged_submit(
    home: Path, valkey: RedisProcess, smsc: FakeSmsc, reaper: Reaper, workers: int
) -> None:
    """ROUNDS times: wait for a few more ESME_ROK, SIGKILL filterd with submits in its
    window, start it again. Every submit_sm the client saw answered ESME_ROK reached the
    carrier; none is lost. With smpp.workers = 2 (two carrier binds) the orphaned worker
    drains (a submit it gets meanwhile is refused with ESME_RINVBNDSTS, never
    acknowledged) and exits by itself."""
    record_fact(valkey.url, "+" + JANE_SMS, Kind.CONSENT)
    listen = f"127.0.0.1:{free_port()}" if workers > 1 else "127.0.0.1:0"
    config = write_config(
        home, valkey.url, smsc_port=smsc.port, smpp_listen=listen, smpp_workers=workers
    )
    daemon = Daemon(config, reaper, ("smpp",))
    target = Target()
    target.set(daemon.start().ports["smpp"])
    smsc.wait_bound(links=workers)
    load = SmppLoad(target).start()
    leftovers: list[str] = []
    try:
        for _ in range(ROUNDS):
            load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
            target.set(None)
            pgid = daemon.pid
            daemon.kill9()
            leftovers += [f"{pid}:{cmd}" for pid, cmd in await_group_exit(pgid)]
            target.set(daemon.start().ports["smpp"])
            smsc.wait_bound(links=workers)
        load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
    finally:
        load.stop()
    assert daemon.stop() == 0
    acknowledged = load.ledger.acknowledged()
    at_carrier = [pdu.short_message.decode() for pdu in list(smsc.submits)]
    lost = acknowledged - set(at_carrier)
    outcomes = load.ledger.summary()
    line = report(
        f"smpp_kill9[workers={workers}]",
        kills=ROUNDS,
        outcomes=outcomes,
        acknowledged=len(acknowledged),
        at_carrier=len(at_carrier),
        unacknowledged_at_carrier=len(set(at_carrier) - acknowledged),
        lost=len(lost),
        carrier_binds=smsc.binds,
        leftovers_after_kill=len(leftovers),
    )
    assert not lost, line
    assert not leftovers, line
    allowed = {"delivered", "cut", "status 0x58", "status 0x14"}
    if workers > 1:  # a submit reaching the orphaned worker while it unbinds its clients
        allowed.add("status 0x4")  # ESME_RINVBNDSTS: refused, not acknowledged
    assert set(outcomes) <= allowed, line


def test_kill9_of_parent_leaves_no_smtp_worker(
    home: Path, valkey: RedisProcess, sink: SinkServer, reaper: Reaper
) -> None:
    """With smtp.workers = 2, SIGKILL of the main process once its worker is serving leaves
    no worker behind: the worker notices its parent is gone and exits (within 10 s)."""
    config = write_config(
        home, valkey.url, smtp_upstream=sink.port, smtp_listen=f"127.0.0.1:{free_port()}",
        workers=2,
    )  # fmt: skip
    daemon = Daemon(config, reaper, ("smtp",)).start()
    assert daemon.log is not None
    daemon.log.wait_for(  # the worker itself is up and serving
        lambda r: r.get("event") == "listening" and r.get("role") == "smtp-worker"
    )
    pgid = daemon.pid
    assert len(group_members(pgid)) == 2
    daemon.kill9()
    left = await_group_exit(pgid)
    report("smtp_workers_kill9", leftovers=len(left), processes=";".join(c for _, c in left))
    assert not left


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_during_cmpp_loses_no_acknowledged_submit(
    home: Path, valkey: RedisProcess, ismg: FakeIsmg, reaper: Reaper, workers: int
) -> None:
    """ROUNDS times: wait for a few more CMPP_SUBMIT_RESP Result 0, SIGKILL filterd with
    submits in its window, start it again. Every submit the SP saw answered Result 0
    reached the ISMG; none is lost. With cmpp.workers = 2 (two ISMG links) the orphaned
    worker drains and exits by itself."""
    record_fact(valkey.url, "+" + JANE_SMS, Kind.CONSENT)
    listen = f"127.0.0.1:{free_port()}" if workers > 1 else "127.0.0.1:0"
    config = write_config(home, valkey.url, ismg=ismg, cmpp_listen=listen, cmpp_workers=workers)
    daemon = Daemon(config, reaper, ("cmpp",))
    target = Target()
    target.set(daemon.start().ports["cmpp"])
    ismg.wait_logged_in(links=workers)
    load = CmppLoad(target).start()
    leftovers: list[str] = []
    try:
        for _ in range(ROUNDS):
            load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
            target.set(None)
            pgid = daemon.pid
            daemon.kill9()
            leftovers += [f"{pid}:{cmd}" for pid, cmd in await_group_exit(pgid)]
            target.set(daemon.start().ports["cmpp"])
            ismg.wait_logged_in(links=workers)
        load.ledger.wait("delivered", NEW_ACKS_BEFORE_KILL, since=time.monotonic())
    finally:
        load.stop()
    assert daemon.stop() == 0
    acknowledged = load.ledger.acknowledged()
    at_ismg = [pdu.msg_content.decode() for pdu in list(ismg.submits)]
    lost = acknowledged - set(at_ismg)
    outcomes = load.ledger.summary()
    line = report(
        f"cmpp_kill9[workers={workers}]",
        kills=ROUNDS,
        outcomes=outcomes,
        acknowledged=len(acknowledged),
        at_ismg=len(at_ismg),
        unacknowledged_at_ismg=len(set(at_ismg) - acknowledged),
        lost=len(lost),
        ismg_logins=ismg.logins,
        leftovers_after_kill=len(leftovers),
    )
    assert not lost, line
    assert not leftovers, line
    assert set(outcomes) <= {"delivered", "cut", "result 8"}, line
