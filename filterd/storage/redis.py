"""The Redis adapter of the registry port: RedisRegistry, composed of the parts
of this package.

    router.py      where commands go: one server (ServerRouter) or a Cluster (cluster.py)
    connection.py  the redis-py client of a URL or of the primary the sentinels name
    lookups.py     reads: the lookups of one loop turn in one write on a raw link
    routes.py      message-route writes, batched per loop turn the same way
    writes.py      durable pipelines, the layout check (durability.py: WAITAOF/WAIT)
    scripts.py     the Lua merge and intern scripts and their bytes
    names.py       sender and source names ↔ ids; facts decoded from records
    audit.py       the audit stream
    export.py      export and stats (scans)

A lookup is `router.read` (one round trip) then `names.decode`; a write is
`names.item` (new names interned first) then `router.merge` (durable before
it returns). redis, and hiredis through link.py, are imported under storage/
only (tests/test_layering.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from redis.exceptions import RedisError

from filterd.errors import RegistryUnavailable
from filterd.model import AuditEntry, BulkRow, Fact, WriteResult
from filterd.storage import keys, scripts
from filterd.storage.audit import AuditStream
from filterd.storage.connection import connect
from filterd.storage.durability import Durability
from filterd.storage.export import Export
from filterd.storage.names import Names
from filterd.storage.port import AuditQuery, Found
from filterd.storage.records import unpack_side
from filterd.storage.replies import as_text, records_of, with_side
from filterd.storage.router import Router, ServerRouter
from filterd.storage.sentinel_url import is_sentinel_url
from filterd.storage.writes import Writer


class RedisRegistry:
    """The registry on a Redis (or Valkey) server, or a Cluster (its router)."""

    def __init__(
        self,
        router: Router,
        *,
        bucket_bits: int = 16,
        audit_max_entries: int = 1_000_000,
        audit_retention_ms: int = 400 * 86_400_000,
        min_replicas: int = 0,
    ) -> None:
        self._router = router
        self._bits = bucket_bits
        self._names = Names(router)
        self._writer = Writer(router, Durability(min_replicas), bucket_bits, self._names.forget)
        self._audit = AuditStream(router, self._writer, audit_max_entries, audit_retention_ms)
        self._export = Export(router, self._names, bucket_bits)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls, url: str, *, min_replicas: int | None = None, **options: Any
    ) -> RedisRegistry:
        """Connect to redis://, rediss://, unix:// or redis+sentinel:// (lazily:
        nothing is sent yet).

        `min_replicas` (default: 1 with Sentinel, else 0) replicas must confirm
        every write before it is acknowledged.
        """
        default = 1 if is_sentinel_url(url) else 0
        replicas = default if min_replicas is None else min_replicas
        return cls(ServerRouter(connect(url)), min_replicas=replicas, **options)

    # ---- facts ---------------------------------------------------------------

    async def lookup(self, sender: str, consumers: Sequence[bytes]) -> list[list[Fact]]:
        """See Registry.lookup: the sender's id and the consumers' facts in one round
        trip (batched with other lookups of the same loop turn, see lookups.py),
        then decoded with the cached names."""
        fields = keys.lookup_fields(consumers, self._bits)
        sender_id, values = await self._router.read(sender, fields)
        return await self._names.decode(sender, sender_id, values)

    def lookup_soon(self, sender: str, consumers: Sequence[bytes], done: Found) -> None:
        """See Registry.lookup_soon: the same read as lookup, the facts decoded in the
        callback (in a task only when a name is not cached yet)."""
        fields = keys.lookup_fields(consumers, self._bits)

        def decode(outcome: tuple[int, list[Any]] | RegistryUnavailable) -> None:
            if isinstance(outcome, RegistryUnavailable):
                done(outcome)
                return
            sender_id, values = outcome
            try:
                facts = self._names.decode_cached(sender, sender_id, values)
            except RegistryUnavailable as exc:  # a damaged value
                done(exc)
                return
            if facts is None:
                self._spawn(self._decode_then(sender, sender_id, values, done))
            else:
                done(facts)

        self._router.read_soon(sender, fields, decode)

    async def _decode_then(
        self, sender: str, sender_id: int, values: list[Any], done: Found
    ) -> None:
        """Decode with the names read from the server first; the facts (or the error) to
        `done`."""
        try:
            facts = await self._names.decode(sender, sender_id, values)
        except RegistryUnavailable as exc:
            done(exc)
            return
        except BaseException:
            done(RegistryUnavailable("registry lookup interrupted"))
            raise
        done(facts)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def facts(self, consumer: bytes) -> list[Fact]:
        """See Registry.facts."""
        field = keys.consumer_field(consumer)
        try:
            facts_key = keys.facts_key(consumer, self._bits)
            value = await (await self._router.client(facts_key)).hget(facts_key, field)
            records = records_of(value)
            sides: list[Any] = []
            if records:
                sides = await (await self._router.client(facts_key)).hmget(
                    keys.side_key(consumer, self._bits), [field + r.slot for r in records]
                )
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry read failed", exc) from exc
        out = []
        for record, side in zip(records, sides, strict=True):
            fact = await self._names.fact(record)
            evidence, message_id = unpack_side(side)
            out.append(with_side(fact, evidence, message_id))
        return sorted(out, key=lambda f: f.at_ms, reverse=True)

    async def record(
        self, consumer: bytes, fact: Fact, audit: AuditEntry | None = None
    ) -> WriteResult:
        """See Registry.record: the merge, then (if stored) the audit entry, both durable."""
        item = await self._names.item(self._writer, consumer, fact)
        result = (await self._merge([item]))[0]
        if audit is not None and result is WriteResult.STORED:
            await self.append_audit([audit])
        return result

    async def record_many(self, rows: Sequence[BulkRow]) -> list[WriteResult]:
        """See Registry.record_many: one round trip, made durable once for all rows."""
        return await self._merge(await self._names.bulk_items(self._writer, rows))

    async def _merge(self, items: Sequence[bytes]) -> list[WriteResult]:
        """Run the merge script over encoded items; durable before returning."""
        if not items:
            return []
        return scripts.results(await self._router.merge(items, self._writer))

    # ---- audit ---------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """See Registry.append_audit."""
        await self._audit.append(entries)

    async def read_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """See Registry.read_audit."""
        return await self._audit.read(query)

    # ---- message routes ------------------------------------------------------

    async def remember_message(
        self, carrier_id: str, owner: str, client_id: str, ttl_s: int
    ) -> None:
        """See Registry.remember_message: one SET with an expiry (on one server,
        batched with the other routes of the loop turn: routes.py)."""
        try:
            key = keys.message_key(carrier_id)
            await self._router.remember(key, f"{owner}\x00{client_id}", ttl_s)
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry write failed", exc) from exc

    async def find_message(self, carrier_id: str) -> tuple[str, str] | None:
        """See Registry.find_message."""
        try:
            key = keys.message_key(carrier_id)
            value = await (await self._router.client(key)).get(key)
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry read failed", exc) from exc
        if value is None:
            return None
        owner, _, client_id = as_text(value).partition("\x00")
        return owner, client_id

    # ---- admin ---------------------------------------------------------------

    def export(self, sender: str | None = None) -> AsyncIterator[tuple[bytes, Fact]]:
        """See Registry.export: scans the buckets of every server, 200 at a time."""
        return self._export.facts(sender)

    async def stats(self) -> dict[str, int | str]:
        """See Registry.stats: counts by kind (a full scan), memory, audit size."""
        return await self._export.stats(self._audit)

    async def check_layout(self) -> None:
        """Raise ConfigError when the registry was built with other bucket_bits."""
        await self._writer.check_layout()

    async def ping(self) -> None:
        """See Registry.ping."""
        try:
            for client in await self._router.primaries():
                await client.ping()
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry unavailable", exc) from exc

    async def close(self) -> None:
        """Close the lookup connections and the connection pools."""
        await self._router.close()
