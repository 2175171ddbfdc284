"""Lookups on one server, batched: the read path of RedisRegistry.lookup.

The facts of all recipients of a message, and the id of their sender, are
pipelined HGETs (plain HGETs cost the server ~1 µs each where a script call
costs ~20). Lookups made in one turn of the event loop (other connections'
RCPTs, submits, policy requests) share one write: each caller still waits for
one round trip, and the per-command cost is shared. Read it as calls:

    Lookups.fetch      queue the lookup, await its answer
    Lookups._flush     at the end of the loop turn: one _Batch of every queued lookup
    Lookups._run       a task per batch: await reads(commands), hand out the replies
    over_link(...)     the raw RESP link (link.py), 5 s deadline, re-opened and the
                       batch sent once more when it is lost (reads are idempotent);
                       under Sentinel, ROLE at most once a second before a batch
    over_pool(...)     redis-py's pipeline instead (TLS)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from filterd.errors import RegistryUnavailable
from filterd.storage import keys
from filterd.storage.link import Endpoint, LinkLost, Links, RespLink, is_primary, open_link

LOOKUP_TIMEOUT_S = 5.0
"""How long a lookup may wait for its answer on the link."""
CONNECT_TIMEOUT_S = 2.0
ROLE_CHECK_S = 1.0
"""Under Sentinel, how often the lookup connection asks its server whether it is
still the primary."""


class Reads(Protocol):
    """How lookups reach the server: over the raw link, or redis-py's pipeline."""

    async def __call__(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write; their replies (RegistryUnavailable on failure)."""
        ...

    def close(self) -> None:
        """Release the connection (what is in flight fails)."""
        ...


_Lookup = tuple[str, Sequence[tuple[str, bytes]], asyncio.Future[tuple[int, list[Any]]]]


class _Batch:
    """Lookups sent in one write: the callers, their senders, the commands (an HGET
    of each sender's id, then one HGET per consumer)."""

    __slots__ = ("commands", "lookups", "senders")

    def __init__(self, lookups: list[_Lookup]) -> None:
        self.lookups = lookups
        self.senders = list(dict.fromkeys(sender for sender, _, _ in lookups))
        commands: list[tuple[Any, ...]] = [("HGET", keys.SENDERS, s) for s in self.senders]
        for _, fields, _ in lookups:
            commands += [("HGET", key, field) for key, field in fields]
        self.commands = commands

    def answer(self, replies: Sequence[Any]) -> None:
        """Give each caller its sender's id and its consumers' values (an answer of
        the wrong shape fails them all: nobody is left waiting)."""
        if len(replies) != len(self.commands):
            self.fail(RegistryUnavailable("registry lookup answered with the wrong shape"))
            return
        try:
            ids = [int(v) if v else -1 for v in replies[: len(self.senders)]]
        except (TypeError, ValueError):
            self.fail(RegistryUnavailable("registry lookup answered with a bad sender id"))
            return
        by_sender = dict(zip(self.senders, ids, strict=True))
        at = len(self.senders)
        for sender, fields, future in self.lookups:
            mine = list(replies[at : at + len(fields)])
            at += len(fields)
            if not future.done():  # its caller may have gone
                future.set_result((by_sender[sender], mine))

    def fail(self, error: Exception) -> None:
        """Every caller still waiting gets `error`."""
        for _, _, future in self.lookups:
            if not future.done():
                future.set_exception(error)


class Lookups:
    """The batching of one server's lookups (see the module doc)."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._queue: list[_Lookup] = []
        self._flush_due = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetch(
        self, sender: str, fields: Sequence[tuple[str, bytes]]
    ) -> tuple[int, list[Any]]:
        """The id of `sender` (-1: none) and the value of each (facts key, field)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, list[Any]]] = loop.create_future()
        self._queue.append((sender, fields, future))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        lookups, self._queue, self._flush_due = self._queue, [], False
        lookups = [item for item in lookups if not item[2].done()]  # callers gone
        if lookups:
            task = asyncio.get_running_loop().create_task(self._run(_Batch(lookups)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            replies = await self._reads(batch.commands)
        except RegistryUnavailable as exc:
            batch.fail(exc)
            return
        except BaseException:
            batch.fail(RegistryUnavailable("registry lookup interrupted"))
            raise
        batch.answer(replies)

    def close(self) -> None:
        """Stop: what is queued or in flight fails (the reads close their own link)."""
        queued, self._queue = self._queue, []
        for _, _, future in queued:
            if not future.done():
                future.set_exception(RegistryUnavailable("registry closed"))
        self._reads.close()


class _LinkReads:
    """Reads over the raw link: opened on first use, re-opened when lost."""

    def __init__(
        self, endpoint: Endpoint, locate: Callable[[], Awaitable[tuple[str, int]]] | None
    ) -> None:
        self._endpoint = endpoint
        self._locate = locate
        self._links = Links(self._open)

    async def __call__(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One write of `commands` on the link; sent once more on a new link when the
        link is lost with them in flight (keeping the first deadline)."""
        started: float | None = None  # when first written: a resend keeps the deadline
        for attempt in (1, 2):
            link = await self._link()
            epoch = self._links.epoch
            if started is None:
                started = asyncio.get_running_loop().time()
            if self._locate is not None:
                _check_role(link)
            try:
                return await link.request(commands, sent_at=started)
            except LinkLost:
                if attempt == 2 or self._links.epoch != epoch:  # closed meanwhile
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _link(self) -> RespLink:
        try:
            return await self._links.get("lookups")
        except (OSError, TimeoutError, RedisError) as exc:
            raise RegistryUnavailable(f"registry unavailable: {exc}") from exc

    async def _open(self, _key: Hashable) -> RespLink:
        """Connect, authenticate, select the db (the primary the sentinels name)."""
        opening = open_link(
            self._endpoint, self._lost, timeout_s=LOOKUP_TIMEOUT_S, locate=self._locate
        )
        return await asyncio.wait_for(opening, CONNECT_TIMEOUT_S)

    def _lost(self, link: RespLink, _exc: Exception | None) -> None:
        self._links.drop(link)

    def close(self) -> None:
        """Abort the link (what is in flight fails)."""
        self._links.close()


def _check_role(link: RespLink) -> None:
    """Under Sentinel, at most once a second: ROLE ahead of the next lookup; a server
    that is no longer the primary (a failover the link did not see, as in a network
    partition) has the link dropped, so the lookups behind it are resent to the
    primary the sentinels name, never answered from a demoted server."""
    now = asyncio.get_running_loop().time()
    if now - link.role_checked < ROLE_CHECK_S:
        return
    link.role_checked = now

    def on_role(reply: Any) -> None:
        if not is_primary(reply):
            link.abort()

    link.send(("ROLE",), on_role)


def over_link(
    endpoint: Endpoint, locate: Callable[[], Awaitable[tuple[str, int]]] | None = None
) -> Reads:
    """Reads on a raw link of their own to `endpoint` (or the primary `locate` names)."""
    return _LinkReads(endpoint, locate)


class _PoolReads:
    """Reads through redis-py's pipeline (TLS, where the raw link cannot go)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def __call__(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """See Reads."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"registry read failed: {exc}") from exc
        return replies

    def close(self) -> None:
        """Nothing of its own: the pool is the registry's."""


def over_pool(client: aioredis.Redis) -> Reads:
    """Reads through `client`'s pipeline (TLS)."""
    return _PoolReads(client)
