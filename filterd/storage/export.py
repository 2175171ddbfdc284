"""Reading the whole registry: every (consumer, fact) by a scan of the bucket
keys of every server (`filterctl export`), and the counts and server facts of
`filterctl stats`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from filterd.model import ALL_SENDERS, Fact, Kind
from filterd.storage import keys
from filterd.storage.records import unpack_side
from filterd.storage.replies import as_text, records_of, with_side

if TYPE_CHECKING:
    from filterd.storage.audit import AuditStream
    from filterd.storage.names import Names
    from filterd.storage.router import Router


class Export:
    """Scans of every server's buckets, decoded with the registry's names."""

    def __init__(self, router: Router, names: Names, bucket_bits: int) -> None:
        self._router = router
        self._names = names
        self._bits = bucket_bits

    async def facts(self, sender: str | None = None) -> AsyncIterator[tuple[bytes, Fact]]:
        """See Registry.export: scans the buckets of every server, 200 at a time."""
        try:
            clients = await self._router.primaries()
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry read failed", exc) from exc
        for client in clients:
            async for item in self._scan(client, sender):
                yield item

    async def _scan(
        self, client: aioredis.Redis, sender: str | None
    ) -> AsyncIterator[tuple[bytes, Fact]]:
        try:
            cursor = 0
            while True:
                cursor, names = await client.scan(cursor, match=keys.FACTS_PATTERN, count=200)
                pipe = client.pipeline(transaction=False)
                for name in names:
                    pipe.hgetall(name)
                    pipe.hgetall(keys.side_key_for(as_text(name)))
                replies = await pipe.execute()
                for index, name in enumerate(names):
                    bucket, side = replies[2 * index], replies[2 * index + 1]
                    for field, value in sorted(bucket.items()):
                        consumer = keys.consumer_from(as_text(name), field, self._bits)
                        for record in records_of(value):
                            fact = await self._names.fact(record)
                            if sender is None or fact.sender in (sender, ALL_SENDERS):
                                extra = unpack_side(side.get(field + record.slot))
                                yield consumer, with_side(fact, *extra)
                if cursor == 0:
                    break
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry read failed", exc) from exc

    async def stats(self, audit: AuditStream) -> dict[str, int | str]:
        """See Registry.stats: counts by kind (a full scan), memory, audit size."""
        counts: dict[str, int | str] = {"consumers": 0}
        counts.update({k.value: 0 for k in Kind})
        consumers: set[bytes] = set()
        async for consumer, fact in self.facts():
            consumers.add(consumer)
            counts[fact.kind.value] = int(counts[fact.kind.value]) + 1
        counts["consumers"] = len(consumers)
        try:
            clients = await self._router.primaries()
            used = 0
            for client in clients:
                used += int((await client.info("memory")).get("used_memory", 0))
            server = await clients[0].info("server")
            audit_len = await audit.length()
        except (RedisError, OSError) as exc:
            raise self._router.unavailable("registry read failed", exc) from exc
        counts["audit_entries"] = audit_len
        counts["used_memory"] = used
        counts["server"] = server_name(server)
        counts["bucket_bits"] = self._bits
        return counts


def server_name(info: dict[str, Any]) -> str:
    """ "valkey 9.1.0" or "redis 7.0.15" from a server's INFO server section."""
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"
