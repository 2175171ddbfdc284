"""The registry contract: the in-memory fake and the Redis adapter (on Valkey and
on Redis 7.0) pass the same suite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from filterd.model import ALL_SENDERS, AuditEntry, BulkRow, Channel, Fact, Kind, WriteResult
from filterd.storage.memory import MemoryRegistry
from filterd.storage.port import AuditQuery, Registry
from filterd.storage.redis import RedisRegistry
from tests.conftest import ServerPool, flush

A = bytes.fromhex("00112233445566778899")
B = bytes.fromhex("ffeeddccbbaa99887766")
C = bytes.fromhex("00112233445566770000")  # same bucket as A, another consumer


def consent(
    sender: str = "acme", at: int = 1000, channel: Channel = Channel.SMS, **kw: object
) -> Fact:
    return Fact(Kind.CONSENT, sender, channel, at, "test", **kw)  # type: ignore[arg-type]


def refusal(sender: str = ALL_SENDERS, at: int = 2000, channel: Channel | None = None) -> Fact:
    return Fact(Kind.REFUSAL, sender, channel, at, "test")


@pytest.fixture(params=["memory", "valkey", "redis"])
def registry(
    request: pytest.FixtureRequest, event_loop_runner: asyncio.Runner, server_pool: ServerPool
) -> Iterator[Registry]:
    """The fake, and a RedisRegistry on each available server kind."""
    if request.param == "memory":
        yield MemoryRegistry()
        return
    server = server_pool.get(request.param)
    flush(server)
    reg = RedisRegistry.from_url(server.url)
    yield reg
    event_loop_runner.run(reg.close())


def test_lookup_empty(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """A consumer with no facts has an empty list, one list per consumer asked."""
    assert event_loop_runner.run(registry.lookup("acme", [A, B])) == [[], []]


def test_record_then_lookup(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """A stored consent comes back from lookup for its sender, without evidence."""
    run = event_loop_runner.run
    fact = consent(evidence="form", message_id="m1")
    assert run(registry.record(A, fact)) is WriteResult.STORED
    [facts_a, facts_b] = run(registry.lookup("acme", [A, B]))
    assert facts_b == []
    assert len(facts_a) == 1
    got = facts_a[0]
    assert (got.kind, got.sender, got.channel, got.at_ms, got.source) == (
        Kind.CONSENT, "acme", Channel.SMS, 1000, "test",
    )  # fmt: skip
    assert got.evidence is None


def test_lookup_filters_by_sender(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """lookup returns facts scoped to the sender or to all senders, not to others."""
    run = event_loop_runner.run
    run(registry.record(A, consent("acme")))
    run(registry.record(A, consent("other")))
    run(registry.record(A, refusal(ALL_SENDERS)))
    senders = sorted(f.sender for f in run(registry.lookup("acme", [A]))[0])
    assert senders == [ALL_SENDERS, "acme"]
    assert sorted(f.sender for f in run(registry.lookup("nobody", [A]))[0]) == [ALL_SENDERS]


def test_lookup_soon_answers_as_lookup(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """lookup_soon hands its callback exactly what lookup returns, once."""
    run = event_loop_runner.run
    run(registry.record(A, consent("acme")))
    run(registry.record(A, refusal(ALL_SENDERS)))

    async def soon() -> list[object]:
        outcomes: list[object] = []
        registry.lookup_soon("acme", [A, B], outcomes.append)
        for _ in range(100):
            if outcomes:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        return outcomes

    assert run(soon()) == [run(registry.lookup("acme", [A, B]))]


def test_same_bucket_consumers_are_separate(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """Two consumers sharing a bucket keep their own facts."""
    run = event_loop_runner.run
    run(registry.record(A, consent()))
    run(registry.record(C, refusal()))
    [fa, fc] = run(registry.lookup("acme", [A, C]))
    assert [f.kind for f in fa] == [Kind.CONSENT]
    assert [f.kind for f in fc] == [Kind.REFUSAL]


def test_newer_fact_supersedes_same_slot(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """A newer fact of the same kind, scope and channel replaces the older one."""
    run = event_loop_runner.run
    run(registry.record(A, consent(at=1000, evidence="old")))
    assert run(registry.record(A, consent(at=5000, evidence="new"))) is WriteResult.STORED
    facts = run(registry.facts(A))
    assert [(f.at_ms, f.evidence) for f in facts] == [(5000, "new")]


def test_older_fact_is_not_written(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """A fact older than the one in its slot is reported superseded and changes nothing."""
    run = event_loop_runner.run
    run(registry.record(A, consent(at=5000)))
    assert run(registry.record(A, consent(at=1000))) is WriteResult.SUPERSEDED
    assert [f.at_ms for f in run(registry.facts(A))] == [5000]


def test_consent_over_refusal_needs_evidence(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """A consent without evidence after a covering refusal is refused and not written."""
    run = event_loop_runner.run
    run(registry.record(A, refusal(ALL_SENDERS, at=1000)))
    result = run(registry.record(A, consent(at=2000)))
    assert result is WriteResult.REFUSAL_ON_RECORD
    assert [f.kind for f in run(registry.facts(A))] == [Kind.REFUSAL]
    assert run(registry.record(A, consent(at=3000, evidence="signed"))) is WriteResult.STORED


def test_refusal_for_other_sender_or_channel_does_not_block_consent(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """Only a refusal that covers the consent's sender and channel asks for evidence."""
    run = event_loop_runner.run
    run(registry.record(A, refusal("other", channel=None)))
    run(registry.record(A, refusal(ALL_SENDERS, channel=Channel.EMAIL)))
    assert run(registry.record(A, consent("acme", at=3000))) is WriteResult.STORED


def test_voice_and_sms_refusals_keep_to_their_channel(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """A voice refusal asks evidence of a voice consent, not of an sms one; an sms
    refusal not of a voice one; an all-channel refusal of both (single and bulk writes)."""
    run = event_loop_runner.run
    run(registry.record(A, refusal("acme", at=1000, channel=Channel.VOICE)))
    assert run(registry.record(A, consent(at=2000, channel=Channel.SMS))) is WriteResult.STORED
    voice = consent(at=2000, channel=Channel.VOICE)
    assert run(registry.record(A, voice)) is WriteResult.REFUSAL_ON_RECORD
    run(registry.record(B, refusal("acme", at=1000, channel=Channel.SMS)))
    assert run(registry.record(B, voice)) is WriteResult.STORED
    run(registry.record(C, refusal(ALL_SENDERS, at=1000, channel=None)))
    rows = [
        BulkRow(C, Kind.CONSENT, "acme", Channel.VOICE, 2000, "imp"),
        BulkRow(C, Kind.CONSENT, "acme", Channel.SMS, 2000, "imp"),
        BulkRow(C, Kind.CONSENT, "acme", Channel.VOICE, 2000, "imp", "recorded call"),
    ]
    assert run(registry.record_many(rows)) == [
        WriteResult.REFUSAL_ON_RECORD,
        WriteResult.REFUSAL_ON_RECORD,
        WriteResult.STORED,
    ]
    facts = run(registry.lookup("acme", [A, B, C]))
    assert [sorted((f.kind.value, f.channel and f.channel.value) for f in fs) for fs in facts] == [
        [("consent", "sms"), ("refusal", "voice")],
        [("consent", "voice"), ("refusal", "sms")],
        [("consent", "voice"), ("refusal", None)],
    ]


def test_facts_newest_first_with_evidence(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """facts() returns every fact newest first, with evidence and message id."""
    run = event_loop_runner.run
    run(registry.record(A, consent(at=1000, evidence="e1", message_id="m1")))
    run(registry.record(A, refusal("acme", at=3000, channel=Channel.SMS)))
    request = Fact(Kind.REQUEST, "acme", Channel.SMS, 2000, "web", "ev", expires_ms=9000)
    run(registry.record(A, request))
    facts = run(registry.facts(A))
    assert [f.kind for f in facts] == [Kind.REFUSAL, Kind.REQUEST, Kind.CONSENT]
    assert facts[1].expires_ms == 9000
    assert (facts[2].evidence, facts[2].message_id) == ("e1", "m1")


def test_record_many(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """record_many writes every item and reports one result per item, in order."""
    run = event_loop_runner.run
    consumers = [i.to_bytes(2, "big") + bytes(8) for i in range(1200)]
    rows = [
        BulkRow(c, Kind.CONSENT, "acme", Channel.SMS, 1000 + i, "t")
        for i, c in enumerate(consumers)
    ]
    results = run(registry.record_many(rows))
    assert results == [WriteResult.STORED] * 1200
    looked = run(registry.lookup("acme", consumers))
    assert [facts[0].at_ms for facts in looked] == [1000 + i for i in range(1200)]


def test_audit_append_and_query(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """Audit entries come back newest first, filtered by consumer, sender and time."""
    run = event_loop_runner.run
    entries = [
        AuditEntry(at_ms=1_000, event="drop", sender="acme", consumer="aa", reason="refused"),
        AuditEntry(at_ms=2_000, event="drop", sender="beta", consumer="bb", reason="no_consent"),
        AuditEntry(at_ms=3_000, event="refusal", sender="*", consumer="aa", source="cli"),
    ]
    if isinstance(registry, RedisRegistry):
        pytest.skip("the stream stamps its own ids; see test_storage_audit for Redis audit")
    run(registry.append_audit(entries))
    got = run(registry.read_audit(AuditQuery(limit=10)))
    assert [e.at_ms for e in got] == [3_000, 2_000, 1_000]
    assert [e.event for e in run(registry.read_audit(AuditQuery(consumer="aa")))] == [
        "refusal", "drop",
    ]  # fmt: skip
    assert len(run(registry.read_audit(AuditQuery(sender="beta")))) == 1
    assert len(run(registry.read_audit(AuditQuery(since_ms=2_500)))) == 1
    assert len(run(registry.read_audit(AuditQuery(limit=2)))) == 2


def test_audit_entry_for_single_writes(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """A fact written one by one with an audit entry adds exactly that entry, newest first."""
    run = event_loop_runner.run
    entry = AuditEntry(at_ms=0, event="refusal", sender="*", consumer=A.hex(), source="cli")
    run(registry.record(A, refusal(), audit=entry))
    got = run(registry.read_audit(AuditQuery(consumer=A.hex())))
    assert [(e.event, e.sender, e.source) for e in got] == [("refusal", "*", "cli")]


def test_export_all_and_by_sender(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """export yields every (consumer, fact); with a sender, only its facts and global ones."""

    async def collect(sender: str | None) -> list[tuple[bytes, str, str]]:
        return sorted([(c, f.kind.value, f.sender) async for c, f in registry.export(sender)])

    run = event_loop_runner.run
    run(registry.record(A, consent("acme", evidence="e")))
    run(registry.record(B, consent("beta")))
    run(registry.record(B, refusal(ALL_SENDERS)))
    everything = run(collect(None))
    assert everything == sorted(
        [(A, "consent", "acme"), (B, "consent", "beta"), (B, "refusal", ALL_SENDERS)]
    )
    assert run(collect("acme")) == sorted([(A, "consent", "acme"), (B, "refusal", "*")])


def test_stats_counts(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """stats counts consumers and facts by kind."""
    run = event_loop_runner.run
    run(registry.record(A, consent()))
    run(registry.record(B, consent("beta", at=1000)))
    run(registry.record(B, refusal(at=2000)))
    stats = run(registry.stats())
    assert (stats["consumers"], stats["consent"], stats["refusal"], stats["request"]) == (
        2,
        2,
        1,
        0,
    )


def test_ping(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """ping succeeds on a live registry."""
    event_loop_runner.run(registry.ping())


def test_record_many_matches_record(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """A bulk row and the same fact written alone are stored and read back alike."""
    run = event_loop_runner.run
    request = BulkRow(A, Kind.REQUEST, "acme", Channel.EMAIL, 1500, "web", "ev", 9000)
    refused = BulkRow(B, Kind.REFUSAL, ALL_SENDERS, None, 1600, "web")
    assert run(registry.record_many([request, refused])) == [WriteResult.STORED] * 2
    run(registry.record(C, request.fact()))
    run(registry.record(C, refused.fact()))
    bulk = run(registry.facts(A)) + run(registry.facts(B))
    single = run(registry.facts(C))
    assert sorted(bulk, key=lambda f: f.at_ms) == sorted(single, key=lambda f: f.at_ms)
    assert bulk[0].evidence == "ev"


def test_record_many_refuses_consent_over_refusal(
    registry: Registry, event_loop_runner: asyncio.Runner
) -> None:
    """In bulk too, a consent without evidence over a refusal is refused, with evidence stored."""
    run = event_loop_runner.run
    run(registry.record(A, refusal(at=1000)))
    rows = [
        BulkRow(A, Kind.CONSENT, "acme", Channel.SMS, 2000, "imp"),
        BulkRow(A, Kind.CONSENT, "acme", Channel.SMS, 2000, "imp", "signed"),
    ]
    assert run(registry.record_many(rows)) == [WriteResult.REFUSAL_ON_RECORD, WriteResult.STORED]


def test_message_id_map(registry: Registry, event_loop_runner: asyncio.Runner) -> None:
    """A carrier message id maps back to the client and its message id; unknown ids to None."""
    run = event_loop_runner.run
    run(registry.remember_message("c-1", "promo", "f-9", 3600))
    assert run(registry.find_message("c-1")) == ("promo", "f-9")
    assert run(registry.find_message("c-2")) is None


# the cases other suites run on their own servers (Sentinel, Cluster)
CONTRACT = [
    test_lookup_empty,
    test_record_then_lookup,
    test_lookup_filters_by_sender,
    test_lookup_soon_answers_as_lookup,
    test_newer_fact_supersedes_same_slot,
    test_older_fact_is_not_written,
    test_consent_over_refusal_needs_evidence,
    test_facts_newest_first_with_evidence,
    test_record_many,
    test_audit_entry_for_single_writes,
    test_export_all_and_by_sender,
    test_stats_counts,
    test_ping,
    test_record_many_refuses_consent_over_refusal,
    test_message_id_map,
]
