"""Export and stats (filterd/storage/export.py): a scan of every bucket gives each
(consumer, fact) with its evidence, filtered by sender; stats count them."""

from __future__ import annotations

import asyncio

from filterd.model import ALL_SENDERS, BulkRow, Channel, Fact, Kind
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess


async def _exported(registry: RedisRegistry, sender: str | None) -> list[tuple[bytes, Fact]]:
    return [item async for item in registry.export(sender)]


def test_export_scans_every_bucket(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """500 consumers spread over many buckets (more than one SCAN page) are all
    exported with their evidence; a sender filter keeps that sender's and the
    all-senders facts; stats count consumers and kinds."""
    run = event_loop_runner.run
    registry = RedisRegistry.from_url(valkey_server.url)
    ids = [n.to_bytes(2, "big") + bytes(8) for n in range(0, 65536, 131)]
    rows = [
        BulkRow(c, Kind.CONSENT, f"s{n % 2}", Channel.SMS, 1000 + n, "t", evidence=f"e{n}")
        for n, c in enumerate(ids)
    ]
    run(registry.record_many(rows))
    run(registry.record(ids[0], Fact(Kind.REFUSAL, ALL_SENDERS, None, 9000, "t")))
    everything = run(_exported(registry, None))
    assert len(everything) == len(ids) + 1
    assert {c for c, _ in everything} == set(ids)
    evidence = {(c, f.evidence) for c, f in everything if f.kind is Kind.CONSENT}
    assert evidence == {(c, f"e{n}") for n, c in enumerate(ids)}
    only_s0 = run(_exported(registry, "s0"))
    assert {f.sender for _, f in only_s0} == {"s0", ALL_SENDERS}
    assert len(only_s0) == (len(ids) + 1) // 2 + 1
    stats = run(registry.stats())
    assert (stats["consumers"], stats["consent"], stats["refusal"]) == (len(ids), len(ids), 1)
    run(registry.close())
