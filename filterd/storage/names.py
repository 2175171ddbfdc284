"""Sender and source names ↔ their interned ids, and facts read back from records.

Facts name their sender and source by small ids (records.py); the names live in
the {meta} hashes (keys.py). Ids are cached once known; a new name is interned
durably before its id is used. Decoding a lookup's values needs no round trip
while every name in them is cached (the usual case).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from filterd.model import ALL_SENDERS, BulkRow, Fact
from filterd.storage import keys, scripts
from filterd.storage.records import Record
from filterd.storage.replies import as_text, record_fields_of

if TYPE_CHECKING:
    from filterd.storage.router import Router
    from filterd.storage.writes import Writer

_SPACES = {
    "sender": (keys.SENDERS, keys.SENDER_NAMES),
    "source": (keys.SOURCES, keys.SOURCE_NAMES),
}
"""A space of names → its name→id and id→name hashes."""


class Names:
    """The cache of interned names, and the facts decoded with it."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._ids: dict[tuple[str, str], int] = {}
        self._names: dict[tuple[str, int], str] = {}

    def remember(self, space: str, name: str, ident: int) -> None:
        """Cache a name and its id."""
        self._ids[(space, name)] = ident
        self._names[(space, ident)] = name

    def forget(self) -> None:
        """Forget every name (ids learnt from a server may not be on the next one)."""
        self._ids.clear()
        self._names.clear()

    async def id(self, writer: Writer, space: str, name: str) -> int:
        """The id of a sender or source name, interning it if new.

        The interning is a durable write like a fact's: an id is cached (and
        used in facts) only once the server has confirmed its name on disk
        (and on the required replicas), so a crash or failover cannot lose the
        name and hand its id to another one while this process still uses it.
        """
        ident = self._ids.get((space, name))
        if ident is None:
            ident = await writer.intern(_SPACES[space], name)
            self.remember(space, name, ident)
        return ident

    async def name(self, space: str, ident: int) -> str:
        """The name of an id (all names of the space are read when one is missing)."""
        name = self._names.get((space, ident))
        if name is None:
            names_key = _SPACES[space][1]
            try:
                every = await (await self._router.client(names_key)).hgetall(names_key)
            except (RedisError, OSError) as exc:
                raise self._router.unavailable("registry read failed", exc) from exc
            for raw_id, raw_name in every.items():
                self.remember(space, as_text(raw_name), int(raw_id))
            name = self._names.get((space, ident), f"#{ident}")
        return name

    async def item(self, writer: Writer, consumer: bytes, fact: Fact) -> bytes:
        """One merge item for `fact` (its names interned first if new)."""
        scope_id = 0 if fact.sender == ALL_SENDERS else await self.id(writer, "sender", fact.sender)
        source_id = await self.id(writer, "source", fact.source)
        return scripts.fact_item(consumer, fact, scope_id, source_id)

    async def bulk_items(self, writer: Writer, rows: Sequence[BulkRow]) -> list[bytes]:
        """The merge items of bulk rows (slot and source bytes cached per call)."""
        encoder = scripts.BulkEncoder()
        items = []
        for row in rows:
            slot = encoder.slots.get((row.kind, row.sender, row.channel))
            if slot is None:
                scope = (
                    0 if row.sender == ALL_SENDERS else await self.id(writer, "sender", row.sender)
                )
                slot = encoder.slot(row.kind, row.sender, row.channel, scope)
            source = encoder.sources.get(row.source)
            if source is None:
                source = encoder.source(row.source, await self.id(writer, "source", row.source))
            items.append(encoder.item(row, slot, source))
        return items

    def decode_cached(
        self, sender: str, sender_id: int, values: Sequence[Any]
    ) -> list[list[Fact]] | None:
        """`decode` with no round trip: None when a source name in the values is not
        cached."""
        if sender_id > 0 and self._ids.get(("sender", sender)) != sender_id:
            self.remember("sender", sender, sender_id)
        scopes = {0: ALL_SENDERS, sender_id: sender}
        names = self._names
        out = []
        for value in values:
            facts = []
            for kind, channel, scope_id, at_ms, source_id, expires_ms in record_fields_of(value):
                scope = scopes.get(scope_id)
                if scope is None:
                    continue
                source = names.get(("source", source_id))
                if source is None:
                    return None
                facts.append(Fact(kind, scope, channel, at_ms, source, None, None, expires_ms))
            out.append(facts)
        return out

    async def decode(self, sender: str, sender_id: int, values: Sequence[Any]) -> list[list[Fact]]:
        """A lookup's facts: for each value, the facts scoped to `sender` (whose id the
        lookup read, -1: none) or to all senders."""
        cached = self.decode_cached(sender, sender_id, values)
        if cached is not None:
            return cached
        scopes = {0: ALL_SENDERS, sender_id: sender}
        names = self._names
        out = []
        for value in values:
            facts = []
            for kind, channel, scope_id, at_ms, source_id, expires_ms in record_fields_of(value):
                scope = scopes.get(scope_id)
                if scope is None:
                    continue
                source = names.get(("source", source_id))
                if source is None:
                    source = await self.name("source", source_id)
                facts.append(Fact(kind, scope, channel, at_ms, source, None, None, expires_ms))
            out.append(facts)
        return out

    async def fact(self, record: Record, scopes: dict[int, str] | None = None) -> Fact:
        """The Fact of a record, its names read from the server if not cached."""
        sender = (scopes or {}).get(record.scope_id)
        if sender is None:
            sender = (
                ALL_SENDERS if record.scope_id == 0 else await self.name("sender", record.scope_id)
            )
        return Fact(
            kind=record.kind,
            sender=sender,
            channel=record.channel,
            at_ms=record.at_ms,
            source=await self.name("source", record.source_id),
            expires_ms=record.expires_ms,
        )
