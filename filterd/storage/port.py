"""The registry port: what the rest of filterd needs from a consent-and-refusal store,
split by role.

- `Facts`: read facts for many consumers in one call, write one or many;
- `Audit`: append to and read the bounded audit log;
- `MessageRoutes`: the SMPP carrier message id → client message id map;
- `Admin`: export, stats, the layout check, ping, close;
- `Registry`: all four, what the service and the composition root hold.

`RedisRegistry` (storage/redis.py) is the real adapter and `MemoryRegistry`
(storage/memory.py) the in-memory fake for unit tests of the core. Both pass the
same contract suite (tests/test_storage_port.py).

Consumers are addressed by their consumer id (identity.py), never by address.
Within one consumer, a newer fact replaces an older one of the same slot
(kind, scope, channel); the history lives in the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from filterd.errors import RegistryUnavailable
from filterd.model import AuditEntry, BulkRow, Fact, Kind, WriteResult


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit entries to read, newest first."""

    since_ms: int = 0
    limit: int = 100
    consumer: str | None = None
    sender: str | None = None


Found = Callable[[list[list[Fact]] | RegistryUnavailable], None]
"""Takes the outcome of `Facts.lookup_soon`: the facts, or the error."""


class Facts(Protocol):
    """Facts of consumers: read many in one call, write one or many durably.

    Every method raises RegistryUnavailable on failure.
    """

    async def lookup(self, sender: str, consumers: Sequence[bytes]) -> list[list[Fact]]:
        """For each consumer, the facts whose scope is `sender` or all senders.

        One round trip for the whole list. Evidence and message ids are not
        loaded (decisions do not need them).
        """
        ...

    def lookup_soon(self, sender: str, consumers: Sequence[bytes], done: Found) -> None:
        """`lookup` with a callback, for a hot path with no task or future of its own:
        `done` gets what lookup returns, or the RegistryUnavailable it raises, once
        (the Redis adapter on a later loop turn, the in-memory fake before returning)."""
        ...

    async def facts(self, consumer: bytes) -> list[Fact]:
        """Every fact on record for one consumer, with evidence, newest first."""
        ...

    async def record(
        self, consumer: bytes, fact: Fact, audit: AuditEntry | None = None
    ) -> WriteResult:
        """Write one fact durably (and its audit entry) before returning."""
        ...

    async def record_many(self, rows: Sequence[BulkRow]) -> list[WriteResult]:
        """Write many facts durably, one result per row in order.

        No audit entry per row: a bulk import writes one entry per file.
        """
        ...


class Audit(Protocol):
    """The bounded audit log. Every method raises RegistryUnavailable on failure."""

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries to the bounded audit log (one round trip)."""
        ...

    async def read_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """Audit entries matching `query`, newest first."""
        ...


class MessageRoutes(Protocol):
    """SMPP: which client a carrier's delivery receipt belongs to."""

    async def remember_message(
        self, carrier_id: str, owner: str, client_id: str, ttl_s: int
    ) -> None:
        """Map a carrier's message id to (client system_id, client message id) for ttl_s."""
        ...

    async def find_message(self, carrier_id: str) -> tuple[str, str] | None:
        """The (owner, client message id) of a carrier message id, if still known."""
        ...


class Admin(Protocol):
    """What operators and health checks ask of the store."""

    def export(self, sender: str | None = None) -> AsyncIterator[tuple[bytes, Fact]]:
        """Every (consumer id, fact), optionally only those scoped to `sender` or `*`."""
        ...

    async def stats(self) -> dict[str, int | str]:
        """Counts and server facts for `filterctl stats`."""
        ...

    async def check_layout(self) -> None:
        """Raise ConfigError when the store was built with another key layout."""
        ...

    async def ping(self) -> None:
        """Raise RegistryUnavailable unless the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Registry(Facts, Audit, MessageRoutes, Admin, Protocol):
    """A consent-and-refusal store: every role (what the service is given)."""


def write_outcome(existing: Sequence[Fact], new: Fact) -> WriteResult:
    """What writing `new` over `existing` does (shared by every adapter's logic).

    A consent or request without evidence is refused when a refusal that
    covers it is on record (SPEC §1: an admin never clears a refusal
    silently). A fact older than the one in its slot is not written.
    """
    if new.kind is not Kind.REFUSAL and not new.evidence and new.channel is not None:
        for fact in existing:
            if fact.kind is Kind.REFUSAL and fact.applies_to(new.sender, new.channel):
                return WriteResult.REFUSAL_ON_RECORD
    for fact in existing:
        if fact.slot == new.slot and fact.at_ms > new.at_ms:
            return WriteResult.SUPERSEDED
    return WriteResult.STORED
