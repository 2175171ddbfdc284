"""The registry on a Redis Cluster (`registry.cluster = true`).

The key layout (keys.py) already gives a bucket's facts and side table one hash
tag, so a bucket is one slot and consumers spread over all slots. This is
RedisRegistry with routing: redis-py's asyncio RedisCluster learns which primary
serves which slot (CLUSTER SLOTS, from any node the url names), and filterd
keeps one pooled client per primary and sends each command or pipeline to the
primary of its keys:

- a lookup of many consumers: one pipelined write of HGETs per primary touched,
  all primaries at once — one round trip per node — on raw RESP connections of
  their own (resp_link, one per primary; redis-py pipelines over TLS);
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
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from filterd.errors import RegistryUnavailable
from filterd.model import Fact, WriteResult
from filterd.storage import keys
from filterd.storage.link import RespLink, is_error
from filterd.storage.redis import RedisRegistry, link_endpoint, pool_options

_REFRESH_S = 0.25
"""The least time between two reads of the slot map after errors."""

_CONNECT_TIMEOUT_S = 2.0
_Address = tuple[str, int]
_LinkKey = tuple[_Address, str]
"""A primary and the use of the link: "r" lookups, "w" durable writes (apart, so
lookups never wait behind a WAITAOF)."""
_Plan = list[tuple[int, str, bytes]]
"""A lookup's commands for one primary: (consumer index or -1 for the sender's
id, key, field)."""


class _Part:
    """The HGETs of one lookup sent to one primary: their replies, in order."""

    __slots__ = ("future", "keep_errors", "replies", "sent_at", "wanted")

    def __init__(
        self,
        wanted: int,
        future: asyncio.Future[list[Any]],
        sent_at: float,
        keep_errors: bool = False,
    ) -> None:
        self.wanted = wanted
        self.future = future
        self.replies: list[Any] = []
        self.sent_at = sent_at
        self.keep_errors = keep_errors

    def take(self, reply: Any) -> None:
        """One reply (in command order); the answer once all are in. An error reply
        fails the part at once, unless it keeps errors (a write reads them all)."""
        if self.future.done():
            return  # failed earlier: the rest is only read off the link
        if is_error(reply) and not self.keep_errors:
            self.future.set_exception(RegistryUnavailable(f"registry read failed: {reply}"))
            return
        self.replies.append(reply)
        if len(self.replies) == self.wanted:
            self.future.set_result(self.replies)

    def fail(self, error: Exception) -> None:
        """The caller gets `error` (link lost or timed out)."""
        if not self.future.done():
            self.future.set_exception(error)


def _transmit(
    link: RespLink, commands: list[tuple[Any, ...]], *, keep_errors: bool = False
) -> asyncio.Future[list[Any]]:
    """One write of `commands` on `link`; the future of their replies (watched by
    the link's deadline)."""
    loop = asyncio.get_running_loop()
    part = _Part(len(commands), loop.create_future(), loop.time(), keep_errors)
    link.batches.add(part)
    part.future.add_done_callback(lambda _: link.batches.discard(part))
    link.send_all(commands, part.take)
    return part.future


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


class ClusterRegistry(RedisRegistry):
    """The registry on a Redis (or Valkey) Cluster: see the module doc."""

    def __init__(
        self, cluster: RedisCluster, url: str, *, min_replicas: int = 1, **options: Any
    ) -> None:
        seed = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(url, **pool_options())
        )
        super().__init__(seed, min_replicas=min_replicas, **options)
        self._cluster = cluster
        self._url = url
        self._nodes: dict[_Address, aioredis.Redis] = {}
        self._mapped = False
        self._stale = False
        self._refreshed_at = -_REFRESH_S
        self._map_lock: asyncio.Lock | None = None
        self._routes: dict[str, _Address] = {}  # key → primary, for the current map
        self._links: dict[_LinkKey, RespLink] = {}
        self._opening: dict[_LinkKey, asyncio.Task[RespLink]] = {}
        self._links_loop: asyncio.AbstractEventLoop | None = None

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
        return cls(cluster, url, min_replicas=replicas, **options)

    # ---- routing ---------------------------------------------------------------

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

    async def _client(self, key: str) -> aioredis.Redis:
        """The client of the primary serving `key`."""
        await self._ready()
        return self._node(self._primary(key))

    async def _primaries(self) -> list[aioredis.Redis]:
        """A client of every primary."""
        await self._ready()
        return [self._node((n.host, int(n.port))) for n in self._cluster.get_primaries()]

    async def _disconnect(self) -> None:
        """Drop every node's connections and read the slot map again."""
        self._stale = True
        for client in self._nodes.values():
            await client.connection_pool.disconnect()

    def _unavailable(self, what: str, exc: BaseException) -> RegistryUnavailable:
        self._stale = True  # a failover or resharding may have moved the slot
        return super()._unavailable(what, exc)

    async def _write_failed(self, exc: RedisError | OSError, *, durable: bool) -> None:
        self._stale = True
        await super()._write_failed(exc, durable=durable)

    # ---- reads -------------------------------------------------------------

    async def lookup(self, sender: str, consumers: Sequence[bytes]) -> list[list[Fact]]:
        """See Registry.lookup: one write of HGETs per primary touched (the sender's
        id included), all at once."""
        sender_id = -1
        try:
            await self._ready()
            plans: dict[_Address, list[tuple[int, str, bytes]]] = {}
            for index, consumer in enumerate(consumers):
                key = keys.facts_key(consumer, self._bits)
                plans.setdefault(self._primary(key), []).append(
                    (index, key, keys.consumer_field(consumer))
                )
            # the sender's id is read with the facts every time (an HGET costs ~1 µs):
            # a cached one could outlive a registry that was emptied and rebuilt
            plans.setdefault(self._primary(keys.SENDERS), []).append(
                (-1, keys.SENDERS, sender.encode())
            )
            answers = await _collect([self._start(addr, plan) for addr, plan in plans.items()])
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable("registry read failed", exc) from exc
        except RegistryUnavailable:
            self._stale = True  # MOVED, a lost link: read the slot map again
            raise
        values: list[Any] = [None] * len(consumers)
        for plan, replies in zip(plans.values(), answers, strict=True):
            for (index, _, _), reply in zip(plan, replies, strict=True):
                if index >= 0:
                    values[index] = reply
                else:
                    try:
                        sender_id = int(reply) if reply else -1
                    except (TypeError, ValueError):
                        raise RegistryUnavailable("registry lookup: bad sender id") from None
        known = self._decode_known(sender, sender_id, values)
        if known is not None:
            return known
        return await self._decode_lookup(sender, sender_id, values)

    def _start(self, address: _Address, plan: _Plan) -> asyncio.Future[list[Any]]:
        """Send the HGETs of `plan` to one primary now when its link is open (no
        task: the usual case), else in a task that connects first."""
        link = self._links.get((address, "r"))
        if link is None or link.closed or self._links_loop is not asyncio.get_running_loop():
            return asyncio.ensure_future(self._fetch(address, plan))
        return self._send_hgets(link, plan)

    @staticmethod
    def _send_hgets(link: RespLink, plan: _Plan) -> asyncio.Future[list[Any]]:
        """One write of the HGETs on `link`; the future of their replies."""
        return _transmit(link, [("HGET", key, field) for _, key, field in plan])

    async def _fetch(self, address: _Address, plan: _Plan) -> list[Any]:
        """The HGETs of `plan` on one primary: on its link once connected, or in a
        redis-py pipeline when the link cannot be used (TLS)."""
        client = self._node(address)
        endpoint = link_endpoint(client)
        if endpoint is None:
            pipe = client.pipeline(transaction=False)
            for _, key, field in plan:
                pipe.hget(key, field)
            replies: list[Any] = await pipe.execute()
            return replies
        return await self._send_hgets(await self._node_link((address, "r"), endpoint), plan)

    async def _node_link(self, address: _LinkKey, endpoint: dict[str, Any]) -> RespLink:
        """The open link to a primary, connecting (once for all callers) if needed."""
        loop = asyncio.get_running_loop()
        if self._links_loop is not loop:  # a new event loop: old links are unusable
            self._links, self._opening, self._links_loop = {}, {}, loop
        link = self._links.get(address)
        if link is not None and not link.closed:
            return link
        opening = self._opening.get(address)
        if opening is None:
            opening = self._opening[address] = loop.create_task(self._open(address, endpoint))
        return await asyncio.shield(opening)

    async def _open(self, address: _LinkKey, endpoint: dict[str, Any]) -> RespLink:
        loop = asyncio.get_running_loop()
        try:
            link = await asyncio.wait_for(
                self._connect(loop, endpoint, self._node_link_lost), _CONNECT_TIMEOUT_S
            )
        finally:
            self._opening.pop(address, None)
        self._links[address] = link
        return link

    def _node_link_lost(self, link: RespLink, exc: Exception | None) -> None:
        """A primary's link closed: what waited on it fails (the caller answers 451),
        and the slot map is read again before the next operation."""
        self._stale = True
        for address, known in list(self._links.items()):
            if known is link:
                del self._links[address]
        waiting, link.batches = list(link.batches), set()
        for part in waiting:
            part.fail(RegistryUnavailable(f"registry connection lost: {exc}"))

    # ---- writes ------------------------------------------------------------

    async def _send(self, items: Sequence[bytes]) -> list[WriteResult]:
        """Merge per bucket (declared keys), one durable pipeline per primary, all
        primaries at once; acknowledged only when every primary confirmed."""
        if not items:
            return []
        buckets: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            buckets.setdefault(keys.facts_key(item[:10], self._bits), []).append(index)
        try:
            await self._ready()
            plans: dict[_Address, list[str]] = {}
            for key in buckets:
                plans.setdefault(self._primary(key), []).append(key)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry write failed", exc) from exc

        async def merge(bucket_keys: list[str]) -> bytes:
            groups = [
                ((key, keys.side_key_for(key)), [items[i] for i in buckets[key]])
                for key in bucket_keys
            ]
            return await self._merge(groups, key=bucket_keys[0])

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
        return self._results(bytes(codes))

    async def _merge(
        self, groups: Sequence[tuple[Sequence[str], Sequence[bytes]]], *, key: str
    ) -> bytes:
        """The merge calls and the primary's WAITAOF/WAIT in one write on the
        primary's write link (redis-py costs ~40 µs per command, and a bulk
        import makes one call per bucket); through redis-py over TLS."""
        try:
            client = await self._client(key)
            address = self._primary(key)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry write failed", exc) from exc
        endpoint = link_endpoint(client)
        if endpoint is None:
            return await super()._merge(groups, key=key)
        await self._prepare_writes(client)
        calls = self._merge_calls(groups)
        waits = self._wait_commands(client)
        for attempt in (1, 2):
            try:
                link = await self._node_link((address, "w"), endpoint)
                replies = await _transmit(link, [*calls, *waits], keep_errors=True)
            except (RedisError, OSError, TimeoutError, RegistryUnavailable) as exc:
                lost = RedisConnectionError(f"registry write failed: {exc}")
                await self._write_failed(lost, durable=True)
                raise self._unavailable("registry write failed", exc) from exc
            noscript = any(is_error(r) and str(r).startswith("NOSCRIPT") for r in replies)
            if noscript and attempt == 1:  # nothing ran: load the scripts, send again
                try:
                    await self._load_scripts(client)
                except (RedisError, OSError) as exc:
                    raise self._unavailable("registry write failed", exc) from exc
                continue
            failed = next((r for r in replies if is_error(r)), None)
            if failed is not None:
                error = ResponseError(str(failed))
                await self._write_failed(error, durable=True)
                raise self._unavailable("registry write failed", error)
            if waits:
                self._check_confirmed(client, waits[-1][0], replies[-1])
            return self._merge_codes(groups, replies)
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close the links and every node's pool, the cluster client and the seed."""
        for task in self._opening.values():
            task.cancel()
        links, self._links, self._opening = list(self._links.values()), {}, {}
        for link in links:
            link.abort()
        nodes, self._nodes = list(self._nodes.values()), {}
        for client in nodes:
            await client.aclose()
        await self._cluster.aclose()
        await super().close()
