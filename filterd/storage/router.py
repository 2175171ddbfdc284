"""Where the registry's commands go: the `Router` a RedisRegistry is given.

`ServerRouter` is one server (a URL, or the primary the sentinels name): every
key lives there, lookups are batched per loop turn on a link of their own
(lookups.py), and so are message-route writes, on the same link (routes.py); a
merge is one durable pipeline (writes.py). `ClusterRouter`
(cluster.py) is a Redis Cluster: each key goes to the primary of its slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import redis.asyncio as aioredis

from filterd.errors import RegistryUnavailable
from filterd.storage import keys
from filterd.storage.connection import Connection, link_endpoint
from filterd.storage.lookups import Answer, Lookups, Reads, over_link, over_pool
from filterd.storage.routes import Routes

if TYPE_CHECKING:
    from filterd.storage.writes import Writer


class Router(Protocol):
    """Which server holds a key, and how reads and merges reach the servers."""

    async def client(self, key: str) -> aioredis.Redis:
        """The pooled client of the server holding `key`."""
        ...

    async def primaries(self) -> list[aioredis.Redis]:
        """A client of every server holding data."""
        ...

    def unavailable(self, what: str, exc: BaseException) -> RegistryUnavailable:
        """The error to raise when talking to a server failed (a Cluster also reads
        its slot map again before the next operation)."""
        ...

    def stale(self) -> None:
        """A failure: learn where keys live again before the next operation."""
        ...

    async def disconnect(self) -> None:
        """Drop pooled connections (a write reached a replica: new ones find the primary)."""
        ...

    async def read(self, sender: str, fields: Sequence[tuple[str, bytes]]) -> tuple[int, list[Any]]:
        """The id of `sender` (-1: none) and the value of each (key, field), in one
        round trip per server."""
        ...

    def read_soon(self, sender: str, fields: Sequence[tuple[str, bytes]], done: Answer) -> None:
        """`read` with a callback: `done` gets what read returns, or the
        RegistryUnavailable it raises; once, later (never before this returns)."""
        ...

    async def merge(self, items: Sequence[bytes], writer: Writer) -> bytes:
        """Merge encoded items durably; their result codes in item order."""
        ...

    async def remember(self, key: str, value: str, ttl_s: int) -> None:
        """SET `key` to `value` with an expiry; RegistryUnavailable if not stored."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...


class ServerRouter:
    """One server holds every key: see the module doc."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        client = connection.client
        reads: Reads
        endpoint = link_endpoint(client, connection.sentinel is not None)
        if endpoint is None:  # TLS: through redis-py
            reads = over_pool(client)
        else:
            reads = over_link(endpoint, connection.locate if connection.sentinel else None)
        self._lookups = Lookups(reads)
        self._routes = Routes(reads)

    async def client(self, key: str) -> aioredis.Redis:
        """See Router.client."""
        return self._connection.client

    async def primaries(self) -> list[aioredis.Redis]:
        """See Router.primaries."""
        return [self._connection.client]

    def unavailable(self, what: str, exc: BaseException) -> RegistryUnavailable:
        """See Router.unavailable."""
        return RegistryUnavailable(f"{what}: {exc}")

    def stale(self) -> None:
        """See Router.stale: one server, nothing to learn again."""

    async def disconnect(self) -> None:
        """See Router.disconnect."""
        await self._connection.client.connection_pool.disconnect()

    async def read(self, sender: str, fields: Sequence[tuple[str, bytes]]) -> tuple[int, list[Any]]:
        """See Router.read: batched with the lookups of the same loop turn."""
        return await self._lookups.fetch(sender, fields)

    def read_soon(self, sender: str, fields: Sequence[tuple[str, bytes]], done: Answer) -> None:
        """See Router.read_soon: batched with the lookups of the same loop turn."""
        self._lookups.submit(sender, fields, done)

    async def merge(self, items: Sequence[bytes], writer: Writer) -> bytes:
        """See Router.merge: one call derives the bucket keys itself."""
        return await writer.merge([((), items)], key=keys.LAYOUT)

    async def remember(self, key: str, value: str, ttl_s: int) -> None:
        """See Router.remember: batched with the route writes of the same loop turn."""
        await self._routes.remember(key, value, ttl_s)

    async def close(self) -> None:
        """Close the lookup link and the pool."""
        self._routes.close()
        self._lookups.close()
        await self._connection.close()
