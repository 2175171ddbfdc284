"""filterd.audit_buffer: drop and deferral entries written in the background, in
batches, over the in-memory registry fake (a unit test of the core)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from filterd.audit_buffer import AuditBuffer
from filterd.identity import ConsumerHasher
from filterd.model import AuditEntry, MessageClass
from filterd.normalize import normalize
from filterd.service import Service
from filterd.storage.memory import MemoryRegistry
from filterd.storage.port import AuditQuery

NOW = 1_700_000_000.0
EMAIL = normalize("jane@example.com")


class _CountsAuditWrites(MemoryRegistry):
    """The fake registry, counting the audit writes (one per batch) and their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Count, then store."""
        self.batches.append(len(entries))
        await super().append_audit(entries)


def test_audit_entries_of_a_busy_spell_share_one_write() -> None:
    """The first drop after a quiet spell is written at once (in its own batch); the
    drops that follow within 50 ms wait and are written together in the next batch,
    not one write (and one fsync) each; flush writes what waits without lingering."""

    async def scenario() -> tuple[list[int], list[int], int]:
        registry = _CountsAuditWrites()
        service = Service(
            registry, ConsumerHasher(b"k" * 32), request_ttl_s=3600, clock=lambda: NOW
        )

        async def drop(message_id: str) -> None:
            await service.screen(
                "acme", MessageClass.COMMERCIAL, [EMAIL], origin="policy", message_id=message_id
            )

        await drop("m-0")
        await asyncio.sleep(0.01)  # the writer has written m-0 by itself
        first = list(registry.batches)
        for index in range(1, 21):
            await drop(f"m-{index}")
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # the linger is over: one batch of 20
        lingered = list(registry.batches)
        return first, lingered, len(await registry.read_audit(AuditQuery(limit=100)))

    first, lingered, stored = asyncio.run(scenario())
    assert first == [1]
    assert lingered == [1, 20]
    assert stored == 21


def test_flush_ends_the_audit_linger() -> None:
    """flush (and so close, at shutdown) writes the entries that wait for the linger
    at once: with a one-minute linger, a flush still returns within seconds with
    every entry written."""

    async def scenario() -> list[int]:
        registry = _CountsAuditWrites()
        buffer = AuditBuffer(registry, linger_s=60.0)
        entry = AuditEntry(at_ms=1, event="drop", sender="acme", consumer="00", channel="email")
        buffer.add([entry])
        await asyncio.sleep(0.01)  # written at once: the first after a quiet spell
        buffer.add([entry, entry])  # these would wait a minute
        await asyncio.wait_for(buffer.flush(), 5.0)
        return registry.batches

    assert asyncio.run(scenario()) == [1, 2]
