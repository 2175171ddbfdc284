"""The registry on a Redis Cluster (`registry.cluster = true`).

The key layout (keys.py) already gives a bucket's facts and side table one hash
tag, so a bucket is one slot and consumers spread over all slots. This is
RedisRegistry given a ClusterRouter: redis-py's asyncio RedisCluster learns
which primary serves which slot (CLUSTER SLOTS, from any node the url names),
and the router keeps one pooled client per primary and sends each command or
pipeline to the primary of its keys:

- a lookup of many consumers: one pipelined write of HGETs per primary touched,
  all primaries at once — one round trip per node — on raw RESP connections of
  their own (link.py, one per primary; redis-py pipelines over TLS);
- a write: the merge script once per bucket (its two keys declared, so the
  script never touches a key of another slot), one pipeline per primary ended by
  that primary's WAITAOF / WAIT — each primary confirms its own writes on its
  disk and on `min_replicas` of its replicas (default 1) before anything is
  acknowledged, so a failover to a replica keeps every acknowledged write;
- the meta keys ({meta}), the audit stream and the SMPP message keys:
  single-slot commands on their primary.

An error on the way (connection refused or lost, MOVED/ASK, CLUSTERDOWN,
READONLY: a failover or a resharding under way) fails that operation with
RegistryUnavailable — SMTP 451, SMPP 0x58, CLI exit 3, nothing acknowledged —
and the next operation first asks the cluster for its slot map again (at most
every 0.25 s), so traffic resumes by itself once the cluster has promoted a
replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from filterd.errors import RegistryUnavailable
from filterd.storage import keys, scripts
from filterd.storage.connection import link_endpoint, pool_options
from filterd.storage.link import Endpoint, Links, RespLink, is_error, open_link
from filterd.storage.redis import RedisRegistry
from filterd.storage.writes import Writer, load_scripts

_REFRESH_S = 0.25
"""The least time between two reads of the slot map after errors."""

_CONNECT_TIMEOUT_S = 2.0
_LINK_TIMEOUT_S = 5.0
_Address = tuple[str, int]
_Plan = list[tuple[int, str, bytes]]
"""A lookup's commands for one primary: (field index or -1 for the sender's id,
key, field)."""


async def _collect(waits: list[asyncio.Future[list[Any]]]) -> list[list[Any]]:
    """Every answer, in order (all are in flight already: one round trip); on the
    first failure the rest are cancelled or their errors taken, then it is raised."""
    try:
        return [await wait for wait in waits]
    finally:
        for wait in waits:
            if not wait.done():
                wait.cancel()
            elif not wait.cancelled():
                wait.exception()  # retrieved: no "never retrieved" warning


class ClusterRouter:
    """The Router of a Redis Cluster: see the module doc."""

    def __init__(self, cluster: RedisCluster, url: str) -> None:
        self._cluster = cluster
        self._url = url
        self._nodes: dict[_Address, aioredis.Redis] = {}
        self._mapped = False
        self._stale = False
        self._refreshed_at = -_REFRESH_S
        self._map_lock: asyncio.Lock | None = None
        self._routes: dict[str, _Address] = {}  # key → primary, for the current map
        self._links = Links(self._open)
        """Links by (primary, use): "r" lookups, "w" durable writes (apart, so
        lookups never wait behind a WAITAOF)."""
        self._reading: set[asyncio.Task[None]] = set()
        """The lookups made by read_soon, kept referenced until done."""

    # ---- the slot map ----------------------------------------------------------

    async def _ready(self) -> None:
        """Read the slot map: first use, and after an error (rate-limited)."""
        if self._mapped and not self._stale:
            return
        loop = asyncio.get_running_loop()
        if self._mapped and loop.time() - self._refreshed_at < _REFRESH_S:
            return  # just read: use it (an operation on a dead node fails fast)
        if self._map_lock is None:
            self._map_lock = asyncio.Lock()
        async with self._map_lock:
            if self._mapped and (not self._stale or loop.time() - self._refreshed_at < _REFRESH_S):
                return
            self._refreshed_at = loop.time()
            try:
                if self._mapped:
                    await self._cluster.nodes_manager.initialize()
                else:
                    await self._cluster.initialize()
            except RedisClusterException as exc:
                raise RedisConnectionError(f"cluster slot map unavailable: {exc}") from exc
            self._mapped, self._stale = True, False
            self._routes.clear()

    def _primary(self, key: str) -> _Address:
        """The address of the primary serving `key`'s slot (map already read;
        remembered per key until the map is read again: a bucket key is one of
        at most 2^bucket_bits)."""
        address = self._routes.get(key)
        if address is not None:
            return address
        try:
            node = self._cluster.get_node_from_key(key)
        except RedisClusterException as exc:
            self._stale = True
            raise RedisConnectionError(f"no primary for {key}: {exc}") from exc
        if node is None:
            self._stale = True
            raise RedisConnectionError(f"no primary for {key}")
        address = self._routes[key] = (node.host, int(node.port))
        return address

    def _node(self, address: _Address) -> aioredis.Redis:
        """The pooled client of one primary (made on first use)."""
        client = self._nodes.get(address)
        if client is None:
            host, port = address
            parts = urlsplit(self._url)
            userinfo, at, _ = parts.netloc.rpartition("@")
            netloc = f"{userinfo}{at}{f'[{host}]' if ':' in host else host}:{port}"
            url = urlunsplit((parts.scheme, netloc, "", parts.query, ""))
            pool = aioredis.BlockingConnectionPool.from_url(url, **pool_options())
            client = self._nodes[address] = aioredis.Redis.from_pool(pool)
        return client

    # ---- Router ------------------------------------------------------------------

    async def client(self, key: str) -> aioredis.Redis:
        """The client of the primary serving `key`."""
        await self._ready()
        return self._node(self._primary(key))

    async def primaries(self) -> list[aioredis.Redis]:
        """A client of every primary."""
        await self._ready()
        return [self._node((n.host, int(n.port))) for n in self._cluster.get_primaries()]

    def unavailable(self, what: str, exc: BaseException) -> RegistryUnavailable:
        """See Router.unavailable: a failover or resharding may have moved the slot."""
        self._stale = True
        return RegistryUnavailable(f"{what}: {exc}")

    def stale(self) -> None:
        """Read the slot map again before the next operation."""
        self._stale = True

    async def disconnect(self) -> None:
        """Drop every node's connections and read the slot map again."""
        self._stale = True
        for client in self._nodes.values():
            await client.connection_pool.disconnect()

    async def close(self) -> None:
        """Close the links and every node's pool, and the cluster client."""
        self._links.close()
        nodes, self._nodes = list(self._nodes.values()), {}
        for client in nodes:
            await client.aclose()
        await self._cluster.aclose()

    # ---- reads ---------------------------------------------------------------

    def read_soon(
        self,
        sender: str,
        fields: Sequence[tuple[str, bytes]],
        done: Callable[[tuple[int, list[Any]] | RegistryUnavailable], None],
    ) -> None:
        """See Router.read_soon: `read` in a task (a lookup may span several servers)."""
        task = asyncio.get_running_loop().create_task(self._read_then(sender, fields, done))
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def _read_then(
        self,
        sender: str,
        fields: Sequence[tuple[str, bytes]],
        done: Callable[[tuple[int, list[Any]] | RegistryUnavailable], None],
    ) -> None:
        try:
            outcome = await self.read(sender, fields)
        except RegistryUnavailable as exc:
            done(exc)
            return
        except BaseException:
            done(RegistryUnavailable("registry lookup interrupted"))
            raise
        done(outcome)

    async def read(self, sender: str, fields: Sequence[tuple[str, bytes]]) -> tuple[int, list[Any]]:
        """See Router.read: one write of HGETs per primary touched (the sender's id
        included), all at once."""
        try:
            await self._ready()
            plans: dict[_Address, _Plan] = {}
            for index, (key, field) in enumerate(fields):
                plans.setdefault(self._primary(key), []).append((index, key, field))
            # the sender's id is read with the facts every time (an HGET costs ~1 µs):
            # a cached one could outlive a registry that was emptied and rebuilt
            plans.setdefault(self._primary(keys.SENDERS), []).append(
                (-1, keys.SENDERS, sender.encode())
            )
            answers = await _collect([self._start(addr, plan) for addr, plan in plans.items()])
        except (RedisError, OSError, TimeoutError) as exc:
            raise self.unavailable("registry read failed", exc) from exc
        except RegistryUnavailable:
            self._stale = True  # MOVED, a lost link: read the slot map again
            raise
        sender_id = -1
        values: list[Any] = [None] * len(fields)
        for plan, replies in zip(plans.values(), answers, strict=True):
            for (index, _, _), reply in zip(plan, replies, strict=True):
                if index >= 0:
                    values[index] = reply
                else:
                    try:
                        sender_id = int(reply) if reply else -1
                    except (TypeError, ValueError):
                        raise RegistryUnavailable("registry lookup: bad sender id") from None
        return sender_id, values

    def _start(self, address: _Address, plan: _Plan) -> asyncio.Future[list[Any]]:
        """Send the HGETs of `plan` to one primary now when its link is open (no
        task: the usual case), else in a task that connects first."""
        link = self._links.ready((address, "r"))
        if link is None:
            return asyncio.ensure_future(self._fetch(address, plan))
        return link.request(_hgets(plan))

    async def _fetch(self, address: _Address, plan: _Plan) -> list[Any]:
        """The HGETs of `plan` on one primary: on its link once connected, or in a
        redis-py pipeline when the link cannot be used (TLS)."""
        client = self._node(address)
        if link_endpoint(client) is None:
            pipe = client.pipeline(transaction=False)
            for _, key, field in plan:
                pipe.hget(key, field)
            replies: list[Any] = await pipe.execute()
            return replies
        return await (await self._links.get((address, "r"))).request(_hgets(plan))

    async def _open(self, key: Hashable) -> RespLink:
        address, _use = cast(tuple[_Address, str], key)
        endpoint: Endpoint | None = link_endpoint(self._node(address))
        assert endpoint is not None  # noqa: S101 - TLS never gets here
        opening = open_link(endpoint, self._link_lost, timeout_s=_LINK_TIMEOUT_S)
        return await asyncio.wait_for(opening, _CONNECT_TIMEOUT_S)

    def _link_lost(self, link: RespLink, _exc: Exception | None) -> None:
        """A primary's link closed (what waited on it failed: the caller answers 451);
        the slot map is read again before the next operation."""
        self._stale = True
        self._links.drop(link)

    # ---- writes --------------------------------------------------------------

    async def remember(self, key: str, value: str, ttl_s: int) -> None:
        """See Router.remember: one SET on the primary of the key's slot."""
        await (await self.client(key)).set(key, value, ex=ttl_s)

    async def merge(self, items: Sequence[bytes], writer: Writer) -> bytes:
        """Merge per bucket (declared keys), one durable pipeline per primary, all
        primaries at once; acknowledged only when every primary confirmed."""
        buckets: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            buckets.setdefault(keys.facts_key(item[:10], writer.bits), []).append(index)
        try:
            await self._ready()
            plans: dict[_Address, list[str]] = {}
            for key in buckets:
                plans.setdefault(self._primary(key), []).append(key)
        except (RedisError, OSError) as exc:
            raise self.unavailable("registry write failed", exc) from exc

        async def merge(bucket_keys: list[str]) -> bytes:
            groups = [
                ((key, keys.side_key_for(key)), [items[i] for i in buckets[key]])
                for key in bucket_keys
            ]
            return await self._merge_on(groups, writer, key=bucket_keys[0])

        outcomes = await asyncio.gather(
            *(merge(bucket_keys) for bucket_keys in plans.values()), return_exceptions=True
        )
        codes = bytearray(len(items))
        for bucket_keys, outcome in zip(plans.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            at = 0
            for key in bucket_keys:
                for index in buckets[key]:
                    codes[index] = outcome[at]
                    at += 1
        return bytes(codes)

    async def _merge_on(self, groups: scripts.Groups, writer: Writer, *, key: str) -> bytes:
        """The merge calls and the primary's WAITAOF/WAIT in one write on the
        primary's write link (redis-py costs ~40 µs per command, and a bulk
        import makes one call per bucket); through redis-py over TLS."""
        try:
            client = await self.client(key)
            address = self._primary(key)
        except (RedisError, OSError) as exc:
            raise self.unavailable("registry write failed", exc) from exc
        if link_endpoint(client) is None:
            return await writer.merge(groups, key=key)
        await writer.prepare(client)
        calls = scripts.merge_calls(groups, writer.bits)
        waits = writer.durability.wait_commands(client)
        for attempt in (1, 2):
            try:
                link = await self._links.get((address, "w"))
                replies = await link.request([*calls, *waits], keep_errors=True)
            except (RedisError, OSError, TimeoutError, RegistryUnavailable) as exc:
                lost = RedisConnectionError(f"registry write failed: {exc}")
                await writer.failed(lost, durable=True)
                raise self.unavailable("registry write failed", exc) from exc
            noscript = any(is_error(r) and str(r).startswith("NOSCRIPT") for r in replies)
            if noscript and attempt == 1:  # nothing ran: load the scripts, send again
                try:
                    await load_scripts(client)
                except (RedisError, OSError) as exc:
                    raise self.unavailable("registry write failed", exc) from exc
                continue
            failed = next((r for r in replies if is_error(r)), None)
            if failed is not None:
                error = ResponseError(str(failed))
                await writer.failed(error, durable=True)
                raise self.unavailable("registry write failed", error)
            if waits:
                writer.durability.confirm(client, waits[-1][0], replies[-1])
            return scripts.merge_codes(groups, replies)
        raise AssertionError("unreachable")  # pragma: no cover


def _hgets(plan: _Plan) -> list[tuple[Any, ...]]:
    return [("HGET", key, field) for _, key, field in plan]


class ClusterRegistry(RedisRegistry):
    """RedisRegistry on a Redis (or Valkey) Cluster: only its construction differs
    (a ClusterRouter; each primary's writes confirmed by `min_replicas` replicas)."""

    @classmethod
    def from_url(
        cls, url: str, *, min_replicas: int | None = None, **options: Any
    ) -> ClusterRegistry:
        """Connect (lazily) to the cluster a redis:// or rediss:// url names a node of.

        `min_replicas` (default 1) replicas of a primary must confirm each write
        to it; 0 for a cluster without replicas.
        """
        cluster = RedisCluster.from_url(
            url,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            require_full_coverage=False,
            retry=Retry(NoBackoff(), 1),
        )
        replicas = 1 if min_replicas is None else min_replicas
        return cls(ClusterRouter(cluster, url), min_replicas=replicas, **options)
