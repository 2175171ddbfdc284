"""Outages of the processes around filterd while clients send: the registry, the upstream
SMTP server, the carrier's SMSC. Clients get temporary failures only while it lasts, and
filterd recovers by itself (same process) when the service returns."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from filterd.model import Kind
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests.faults.conftest import (
    BOB,
    JANE,
    JANE_SMS,
    OUTAGE_S,
    ROUNDS,
    Attempt,
    Daemon,
    Ledger,
    Reaper,
    SmppLoad,
    SmtpLoad,
    Target,
    record_fact,
    report,
    sink_idents,
    write_config,
)
from tests.helpers import RedisProcess, SinkServer
from tests.smsc import FakeSmsc

CYCLES = max(1, ROUNDS // 5)
pytestmark = pytest.mark.timeout(90 + CYCLES * (OUTAGE_S + 40))


def hold(seconds: float) -> None:
    """Keep a service down for `seconds` (the length of the outage, not a synchronisation)."""
    threading.Event().wait(seconds)


def within(ledger: Ledger, start: float, end: float) -> list[Attempt]:
    """Attempts that started after `start` and were answered before `end`."""
    with ledger.changed:
        return [a for a in ledger.attempts if a.started >= start and a.ended <= end]


def deferral_audit_entries(url: str) -> int:
    """Audit entries of deferrals because the registry was unavailable."""

    async def read() -> int:
        registry = RedisRegistry.from_url(url)
        try:
            entries = await registry.read_audit(AuditQuery(limit=1_000_000))
        finally:
            await registry.close()
        return sum(e.reason == "registry_unavailable" for e in entries)

    return asyncio.run(read())


def test_registry_outage_gives_temporary_failures_then_recovers(
    home: Path, valkey: RedisProcess, reaper: Reaper
) -> None:
    """The registry is killed for OUTAGE_S seconds (CYCLES times) under SMTP and SMPP load.
    Each SMTP message goes to a consented and a refused recipient. While it is down every
    answer is a temporary failure (451 4.3.0 at RCPT, ESME_RTHROTTLED): nothing delivered
    unverified (the refused recipient is never accepted or relayed), nothing dropped
    silently (every attempt is answered, every deferral audited). After the restart the
    same filterd process delivers again."""
    sink = SinkServer().start()
    reaper.finalizers.append(sink.shutdown)
    smsc = FakeSmsc().start()
    reaper.finalizers.append(smsc.shutdown)
    record_fact(valkey.url, JANE, Kind.CONSENT)
    record_fact(valkey.url, BOB, Kind.REFUSAL)
    record_fact(valkey.url, "+" + JANE_SMS, Kind.CONSENT)
    config = write_config(home, valkey.url, smtp_upstream=sink.port, smsc_port=smsc.port)
    daemon = Daemon(config, reaper, ("smtp", "smpp")).start()
    smsc.wait_bound()
    smtp_target, smpp_target = Target(), Target()
    smtp_target.set(daemon.ports["smtp"])
    smpp_target.set(daemon.ports["smpp"])
    smtp = SmtpLoad(smtp_target, [JANE, BOB]).start()
    smpp = SmppLoad(smpp_target, window=4).start()
    outages: list[tuple[float, float]] = []
    try:
        for _ in range(CYCLES):
            smtp.ledger.wait("delivered", 3, since=time.monotonic())
            down = time.monotonic()
            valkey.kill()
            smtp.ledger.wait("temporary", 3, since=down, timeout=30)
            smpp.ledger.wait("status 0x58", 3, since=down, timeout=30)
            hold(OUTAGE_S - (time.monotonic() - down))
            up = time.monotonic()
            valkey.start()
            outages.append((down, up))
            smtp.ledger.wait("delivered", 3, since=time.monotonic())
            smpp.ledger.wait("delivered", 3, since=time.monotonic())
    finally:
        smtp.stop()
        smpp.stop()
    assert daemon.alive(), "filterd died during the registry outage"
    assert daemon.stop() == 0
    during_smtp = [a for down, up in outages for a in within(smtp.ledger, down, up)]
    during_smpp = [a for down, up in outages for a in within(smpp.ledger, down, up)]
    at_sink = sink_idents(sink.handler.messages)
    relayed_to_bob = sum(BOB in rcpts for _, rcpts, _ in sink.handler.messages)
    # a delivered attempt lists its refused recipients ("bob:550", or "bob:451" when the
    # registry went down between the two RCPTs): the refused one was accepted only if
    # it is not listed at all
    accepted_bob = sum(
        a.outcome == "delivered" and f"{BOB}:" not in a.detail for a in smtp.ledger.attempts
    )
    lost = smtp.ledger.acknowledged() - set(at_sink)
    lost_smpp = smpp.ledger.acknowledged() - {p.short_message.decode() for p in smsc.submits}
    audited = deferral_audit_entries(valkey.url)
    # the registry can come back between a message's two RCPTs: the consented recipient got
    # 451 (deferred), the refused one 550 (its refusal read) — the only 5xx allowed here
    came_back = [a for a in smtp.ledger.attempts if a.outcome == "permanent"]
    deferred_rcpts = 2 * smtp.ledger.summary().get("temporary", 0) + len(came_back)
    deferred_rcpts += smpp.ledger.summary().get("status 0x58", 0)
    line = report(
        "registry_outage",
        cycles=CYCLES,
        outage_s=OUTAGE_S,
        smtp=smtp.ledger.summary(),
        smtp_during_outage=smtp_counts(during_smtp),
        smtp_failures=dict(smtp.ledger.details("temporary") + smtp.ledger.details("permanent")),
        smpp=smpp.ledger.summary(),
        smpp_during_outage=smtp_counts(during_smpp),
        refused_rcpt_accepted=accepted_bob,
        refused_rcpt_relayed=relayed_to_bob,
        lost_smtp=len(lost),
        lost_smpp=len(lost_smpp),
        back_between_rcpts=len(came_back),
        deferred_recipients=deferred_rcpts,
        deferral_audit_entries=audited,
    )
    assert during_smtp, line
    assert during_smpp, line
    assert {a.detail for a in during_smtp} == {"rcpt 451 4.3.0"}, line
    assert {a.outcome for a in during_smpp} == {"status 0x58"}, line
    assert set(smtp.ledger.summary()) <= {"delivered", "temporary", "permanent"}, line
    assert {a.detail for a in came_back} <= {"rcpt 451 4.3.0,550 5.7.1"}, line
    assert set(smpp.ledger.summary()) <= {"delivered", "status 0x58"}, line
    assert accepted_bob == relayed_to_bob == 0, line
    assert not lost, line
    assert not lost_smpp, line
    assert audited >= deferred_rcpts, line


def smtp_counts(attempts: list[Attempt]) -> dict[str, int]:
    """How many attempts got each answer."""
    counts: dict[str, int] = {}
    for attempt in attempts:
        key = attempt.detail if attempt.outcome == "temporary" else attempt.outcome
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_upstream_smtp_outage_gives_temporary_failures_then_reconnects(
    home: Path, valkey: RedisProcess, reaper: Reaper
) -> None:
    """The upstream SMTP server stops (open connections dropped) for OUTAGE_S seconds,
    CYCLES times, under load. Meanwhile clients get 4xx only; when it listens again on the
    same port the same filterd process relays again, and every 250 is at the sink."""
    sink = SinkServer().start()
    reaper.finalizers.append(sink.shutdown)
    record_fact(valkey.url, JANE, Kind.CONSENT)
    daemon = Daemon(write_config(home, valkey.url, smtp_upstream=sink.port), reaper, ("smtp",))
    target = Target()
    target.set(daemon.start().ports["smtp"])
    load = SmtpLoad(target, [JANE]).start()
    outages: list[tuple[float, float]] = []
    try:
        for _ in range(CYCLES):
            load.ledger.wait("delivered", 3, since=time.monotonic())
            down = time.monotonic()
            sink.stop()
            load.ledger.wait("temporary", 3, since=down, timeout=30)
            hold(OUTAGE_S - (time.monotonic() - down))
            up = time.monotonic()
            sink.start()
            outages.append((down, up))
            load.ledger.wait("delivered", 3, since=time.monotonic())
    finally:
        load.stop()
    assert daemon.alive()
    assert daemon.stop() == 0
    during = [a for down, up in outages for a in within(load.ledger, down, up)]
    lost = load.ledger.acknowledged() - set(sink_idents(sink.handler.messages))
    line = report(
        "upstream_smtp_outage",
        cycles=CYCLES,
        outage_s=OUTAGE_S,
        outcomes=load.ledger.summary(),
        during_outage=smtp_counts(during),
        temporary_replies=dict(load.ledger.details("temporary")),
        lost=len(lost),
    )
    assert during, line
    assert {a.outcome for a in during} == {"temporary"}, line
    assert set(load.ledger.summary()) <= {"delivered", "temporary"}, line
    assert not lost, line


def test_carrier_outage_gives_retryable_status_then_rebinds(
    home: Path, valkey: RedisProcess, reaper: Reaper
) -> None:
    """The carrier's SMSC stops (bind dropped) for OUTAGE_S seconds, CYCLES times, under
    SMPP load. Meanwhile submit_sm get ESME_RMSGQFUL (0x14) only and the client's bind stays
    up; when the SMSC listens again the same filterd process binds again by itself, and
    every ESME_ROK reached the carrier."""
    smsc = FakeSmsc().start()
    reaper.finalizers.append(smsc.shutdown)
    record_fact(valkey.url, "+" + JANE_SMS, Kind.CONSENT)
    daemon = Daemon(write_config(home, valkey.url, smsc_port=smsc.port), reaper, ("smpp",))
    target = Target()
    target.set(daemon.start().ports["smpp"])
    smsc.wait_bound()
    load = SmppLoad(target, window=4).start()
    outages: list[tuple[float, float]] = []
    try:
        for _ in range(CYCLES):
            load.ledger.wait("delivered", 3, since=time.monotonic())
            down = time.monotonic()
            smsc.stop()
            load.ledger.wait("status 0x14", 3, since=down, timeout=30)
            hold(OUTAGE_S - (time.monotonic() - down))
            up = time.monotonic()
            smsc.start()
            outages.append((down, up))
            smsc.wait_bound()
            load.ledger.wait("delivered", 3, since=time.monotonic())
    finally:
        load.stop()
    assert daemon.alive()
    assert daemon.stop() == 0
    during = [a for down, up in outages for a in within(load.ledger, down, up)]
    lost = load.ledger.acknowledged() - {p.short_message.decode() for p in smsc.submits}
    line = report(
        "carrier_outage",
        cycles=CYCLES,
        outage_s=OUTAGE_S,
        outcomes=load.ledger.summary(),
        during_outage=smtp_counts(during),
        carrier_binds=smsc.binds,
        client_reconnects=load.connect_failures,
        lost=len(lost),
    )
    assert during, line
    assert {a.outcome for a in during} == {"status 0x14"}, line
    assert set(load.ledger.summary()) <= {"delivered", "status 0x14"}, line
    assert not lost, line
