"""The in-memory fake of the registry port, for unit tests of the core.

It keeps the same contract as the Redis adapter (both pass tests/test_storage_port.py)
and can be switched off (`available = False`) to play a registry that is down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from filterd.errors import RegistryUnavailable
from filterd.model import ALL_SENDERS, AuditEntry, BulkRow, Fact, Kind, WriteResult
from filterd.storage.port import AuditQuery, Found, write_outcome


class MemoryRegistry:
    """In-memory fake with the Registry contract, for unit tests of the core."""

    def __init__(self) -> None:
        self._facts: dict[bytes, list[Fact]] = {}
        self._audit: list[AuditEntry] = []
        self._messages: dict[str, tuple[str, str]] = {}
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise RegistryUnavailable("the in-memory registry is switched off")

    async def lookup(self, sender: str, consumers: Sequence[bytes]) -> list[list[Fact]]:
        """See Registry.lookup."""
        self._check()
        scopes = (sender, ALL_SENDERS)
        return [[_bare(f) for f in self._facts.get(c, []) if f.sender in scopes] for c in consumers]

    def lookup_soon(self, sender: str, consumers: Sequence[bytes], done: Found) -> None:
        """See Registry.lookup_soon: lookup's answer, handed over at once."""
        outcome: list[list[Fact]] | RegistryUnavailable
        try:
            self._check()
        except RegistryUnavailable as exc:
            outcome = exc
        else:
            scopes = (sender, ALL_SENDERS)
            outcome = [
                [_bare(f) for f in self._facts.get(c, []) if f.sender in scopes] for c in consumers
            ]
        done(outcome)

    async def facts(self, consumer: bytes) -> list[Fact]:
        """See Registry.facts."""
        self._check()
        return sorted(self._facts.get(consumer, []), key=lambda f: f.at_ms, reverse=True)

    async def record(
        self, consumer: bytes, fact: Fact, audit: AuditEntry | None = None
    ) -> WriteResult:
        """See Registry.record."""
        self._check()
        result = self._store(consumer, fact)
        if audit is not None and result is WriteResult.STORED:
            self._audit.append(audit)
        return result

    async def record_many(self, rows: Sequence[BulkRow]) -> list[WriteResult]:
        """See Registry.record_many."""
        self._check()
        return [self._store(row.consumer, row.fact()) for row in rows]

    def _store(self, consumer: bytes, fact: Fact) -> WriteResult:
        existing = self._facts.setdefault(consumer, [])
        result = write_outcome(existing, fact)
        if result is WriteResult.STORED:
            existing[:] = [f for f in existing if f.slot != fact.slot] + [fact]
        return result

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """See Registry.append_audit."""
        self._check()
        self._audit.extend(entries)

    async def read_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """See Registry.read_audit."""
        self._check()
        out = [
            e
            for e in reversed(self._audit)
            if e.at_ms >= query.since_ms
            and query.consumer in (None, e.consumer)
            and query.sender in (None, e.sender)
        ]
        return out[: query.limit]

    async def export(self, sender: str | None = None) -> AsyncIterator[tuple[bytes, Fact]]:
        """See Registry.export."""
        self._check()
        for consumer, facts in sorted(self._facts.items()):
            for fact in facts:
                if sender is None or fact.sender in (sender, ALL_SENDERS):
                    yield consumer, fact

    async def stats(self) -> dict[str, int | str]:
        """See Registry.stats."""
        self._check()
        counts = {kind.value: 0 for kind in Kind}
        for facts in self._facts.values():
            for fact in facts:
                counts[fact.kind.value] += 1
        return {"consumers": len(self._facts), **counts, "audit_entries": len(self._audit)}

    async def check_layout(self) -> None:
        """Nothing to check: the fake has no key layout."""
        self._check()

    async def ping(self) -> None:
        """See Registry.ping."""
        self._check()

    async def remember_message(
        self, carrier_id: str, owner: str, client_id: str, ttl_s: int
    ) -> None:
        """See Registry.remember_message (no expiry in the fake)."""
        self._check()
        self._messages[carrier_id] = (owner, client_id)

    async def find_message(self, carrier_id: str) -> tuple[str, str] | None:
        """See Registry.find_message."""
        self._check()
        return self._messages.get(carrier_id)

    async def close(self) -> None:
        """Nothing to release."""


def _bare(fact: Fact) -> Fact:
    """The fact as lookup() returns it: without evidence and message id."""
    return dataclasses.replace(fact, evidence=None, message_id=None)
