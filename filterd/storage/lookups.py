"""Lookups on one server, batched: the read path of RedisRegistry.lookup.

The facts of all recipients of a message, and the id of their sender, are
pipelined HGETs (plain HGETs cost the server ~1 µs each where a script call
costs ~20). Lookups made in one turn of the event loop (other connections'
RCPTs, submits, policy requests) share one write: each caller still waits for
one round trip, and the per-command cost is shared. Read it as calls:

    Lookups.submit       queue the lookup with the callback that takes its answer
                         (Lookups.fetch: the same, awaited)
    Lookups._flush       at the end of the loop turn (from the turn's last callback
                         itself, or one scheduled after it): one _Batch of every
                         queued lookup, handed to reads.submit(commands, batch.settle)
    _LinkReads.submit    written at once on the open raw link (link.py; no task,
                         no future: the usual case), or by a task that opens the
                         link first; a batch whose link is lost is written once
                         more on a new one (reads are idempotent), keeping its
                         5 s deadline; under Sentinel, ROLE at most once a second
                         ahead of a batch
    _PoolReads.submit    redis-py's pipeline instead, in a task (TLS)
    _Batch.settle        every caller's callback gets its sender's id and its
                         values, or the error (RegistryUnavailable: fail closed)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from filterd.errors import RegistryUnavailable
from filterd.storage import keys
from filterd.storage.link import (
    Endpoint,
    LinkLost,
    Links,
    Outcome,
    RespLink,
    is_primary,
    open_link,
)

LOOKUP_TIMEOUT_S = 5.0
"""How long a lookup may wait for its answer on the link."""
CONNECT_TIMEOUT_S = 2.0
ROLE_CHECK_S = 1.0
"""Under Sentinel, how often the lookup connection asks its server whether it is
still the primary."""

Answer = Callable[[tuple[int, list[Any]] | RegistryUnavailable], None]
"""Takes a lookup's answer: its sender's id (-1: none) and values, or the error."""
_Lookup = tuple[str, Sequence[tuple[str, bytes]], Answer]
Done = Callable[[Outcome], None]


class Reads(Protocol):
    """How lookups reach the server: over the raw link, or redis-py's pipeline."""

    def submit(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """Send `commands` in one write; `done` gets their replies, or the error
        (RegistryUnavailable)."""
        ...

    def close(self) -> None:
        """Release the connection (what is in flight fails)."""
        ...


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
        for sender, fields, done in self.lookups:
            mine = list(replies[at : at + len(fields)])
            at += len(fields)
            _give(done, (by_sender[sender], mine))

    def fail(self, error: RegistryUnavailable) -> None:
        """Every caller gets `error`."""
        for _, _, done in self.lookups:
            _give(done, error)

    def settle(self, outcome: Outcome) -> None:
        """The end of the batch's write: the answer, or the error for every caller."""
        if isinstance(outcome, RegistryUnavailable):
            self.fail(outcome)
        elif isinstance(outcome, Exception):
            self.fail(RegistryUnavailable(f"registry lookup failed: {outcome}"))
        else:
            self.answer(outcome)


def _give(done: Answer, outcome: tuple[int, list[Any]] | RegistryUnavailable) -> None:
    """Hand one caller its outcome; a callback that raises is reported to the event
    loop's exception handler, and the other callers of the batch are still answered."""
    try:
        done(outcome)
    except Exception as exc:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "registry lookup callback failed", "exception": exc}
        )


def _to_future(future: asyncio.Future[tuple[int, list[Any]]]) -> Answer:
    """An Answer that settles `future` (unless its awaiting caller has gone)."""

    def done(outcome: tuple[int, list[Any]] | RegistryUnavailable) -> None:
        if future.done():
            return
        if isinstance(outcome, RegistryUnavailable):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    return done


class Lookups:
    """The batching of one server's lookups (see the module doc)."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._queue: list[_Lookup] = []
        self._flush_due = False

    def submit(self, sender: str, fields: Sequence[tuple[str, bytes]], done: Answer) -> None:
        """Queue a lookup: `done` gets the id of `sender` (-1: none) and the value of
        each (facts key, field), or the error; once, later (never before this returns).

        Written at the end of this loop turn: at once when this is the turn's last
        callback (nothing else is ready to run, so no other lookup can join it; the
        usual case at low load, which then needs no loop turn of its own), else by a
        callback run after the others."""
        self._queue.append((sender, fields, done))
        if self._flush_due:
            return
        loop = asyncio.get_running_loop()
        if not getattr(loop, "_ready", True):  # asyncio's queue of callbacks to run
            self._flush()
        else:
            self._flush_due = True
            loop.call_soon(self._flush)

    async def fetch(
        self, sender: str, fields: Sequence[tuple[str, bytes]]
    ) -> tuple[int, list[Any]]:
        """The id of `sender` (-1: none) and the value of each (facts key, field)."""
        future: asyncio.Future[tuple[int, list[Any]]] = asyncio.get_running_loop().create_future()
        self.submit(sender, fields, _to_future(future))
        return await future

    def _flush(self) -> None:
        lookups, self._queue, self._flush_due = self._queue, [], False
        if lookups:
            batch = _Batch(lookups)
            self._reads.submit(batch.commands, batch.settle)

    def close(self) -> None:
        """Stop: what is queued or in flight fails (the reads close their own link)."""
        queued, self._queue = self._queue, []
        for _, _, done in queued:
            _give(done, RegistryUnavailable("registry closed"))
        self._reads.close()


class _Tasks:
    """The tasks a Reads runs (kept referenced until done)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run `coroutine` in a task."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _LinkReads:
    """Reads over the raw link: opened on first use, re-opened when lost."""

    def __init__(
        self, endpoint: Endpoint, locate: Callable[[], Awaitable[tuple[str, int]]] | None
    ) -> None:
        self._endpoint = endpoint
        self._locate = locate
        self._links = Links(self._open)
        self._tasks = _Tasks()

    def submit(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """See Reads.submit: on the open link at once, else once it is open."""
        link = self._links.ready("lookups")
        if link is None:
            self._tasks.spawn(self._when_open(commands, done, first=None))
        else:
            self._write(link, commands, done, first=None)

    def _write(
        self, link: RespLink, commands: list[tuple[Any, ...]], done: Done, first: float | None
    ) -> None:
        """Write on `link`; a first write lost with the link is written once more
        (on a new link, with the first write's deadline)."""
        if self._locate is not None:
            _check_role(link)
        epoch = self._links.epoch
        sent_at = asyncio.get_running_loop().time() if first is None else first

        def settle(outcome: Outcome) -> None:
            resend = first is None and self._links.epoch == epoch  # not closed meanwhile
            if isinstance(outcome, LinkLost) and resend:
                self._tasks.spawn(self._when_open(commands, done, first=sent_at))
            else:
                done(outcome)

        link.submit(commands, settle, sent_at=sent_at)

    async def _when_open(
        self, commands: list[tuple[Any, ...]], done: Done, first: float | None
    ) -> None:
        try:
            link = await self._links.get("lookups")
        except (OSError, TimeoutError, RedisError) as exc:
            done(RegistryUnavailable(f"registry unavailable: {exc}"))
            return
        except RegistryUnavailable as exc:
            done(exc)
            return
        except BaseException:
            done(RegistryUnavailable("registry lookup interrupted"))
            raise
        self._write(link, commands, done, first)

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
        self._tasks = _Tasks()

    def submit(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """See Reads.submit: a pipeline in a task."""
        self._tasks.spawn(self._send(commands, done))

    async def _send(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute()
        except (RedisError, OSError) as exc:
            done(RegistryUnavailable(f"registry read failed: {exc}"))
            return
        except BaseException:
            done(RegistryUnavailable("registry lookup interrupted"))
            raise
        done(replies)

    def close(self) -> None:
        """Nothing of its own: the pool is the registry's."""


def over_pool(client: aioredis.Redis) -> Reads:
    """Reads through `client`'s pipeline (TLS)."""
    return _PoolReads(client)
