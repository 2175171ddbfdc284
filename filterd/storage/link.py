"""A raw RESP connection for pipelined commands (the one owner of hiredis).

Commands are written as RESP, replies parsed by hiredis and handed, in order,
to per-command callbacks. redis-py costs ~100 µs of client CPU per command
(connection pool, retry wrapper, parser layers); this costs a few µs, and
needs no task per call. The registry's lookups (lookups.py) and the Cluster's
reads and writes (cluster.py) use it.

- `RespLink.submit(commands, done)`: one write, `done` called with every reply
  (no task, no future: the hot path); `request(commands)` the same as a future;
- `open_link(endpoint)`: connect and say hello (AUTH, SELECT, ROLE);
- `Links`: the open links of an owner by key, each opened once for all callers.

Work in flight (anything with a `sent_at` loop time and a `fail(error)`) is
watched by one timer per connection: what is unanswered past the deadline
fails, and the connection is closed, since later replies could no longer be
matched to their commands. Work still in flight when the connection closes
fails with LinkLost (a read may be sent once more on a new link).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

import hiredis

from filterd.errors import RegistryUnavailable

Endpoint = dict[str, Any]
"""Where a link goes: `path` or `host`/`port`, and `username`, `password`, `db`."""


class InFlight(Protocol):
    """Something sent on the link and waiting for its answer."""

    sent_at: float

    def fail(self, error: Exception) -> None:
        """Give every waiting caller `error`."""


class LinkLost(RegistryUnavailable):
    """The connection closed while the work was in flight."""


class LinkRefused(ConnectionError):
    """The server refused the hello (AUTH, SELECT) or is not the primary."""


def is_error(reply: Any) -> bool:
    """True when a reply is a server error (`-ERR …`, `-NOSCRIPT …`)."""
    return isinstance(reply, hiredis.ReplyError)


def is_primary(reply: Any) -> bool:
    """True when a ROLE reply says the server is the primary."""
    return isinstance(reply, list) and reply[:1] == [b"master"]


Outcome = list[Any] | Exception
"""What a request ends with: every reply in order, or the error that failed it."""


class _Request:
    """The commands of one write: their replies, in order, then `done` called once."""

    __slots__ = ("done", "finished", "keep_errors", "link", "replies", "sent_at", "wanted")

    def __init__(
        self,
        link: RespLink,
        wanted: int,
        sent_at: float,
        keep_errors: bool,
        done: Callable[[Outcome], None],
    ) -> None:
        self.link = link
        self.wanted = wanted
        self.sent_at = sent_at
        self.keep_errors = keep_errors
        self.done = done
        self.replies: list[Any] = []
        self.finished = False

    def take(self, reply: Any) -> None:
        """One reply; `done` once all are in. An error reply fails the request at
        once, unless it keeps errors (a write reads them all)."""
        if self.finished:
            return  # failed earlier: the rest is only read off the link
        if is_error(reply) and not self.keep_errors:
            self._finish(RegistryUnavailable(f"registry read failed: {reply}"))
            return
        self.replies.append(reply)
        if len(self.replies) == self.wanted:
            self._finish(self.replies)

    def fail(self, error: Exception) -> None:
        """`done` gets `error` (link lost or timed out)."""
        if not self.finished:
            self._finish(error)

    def _finish(self, outcome: Outcome) -> None:
        self.finished = True
        self.link.batches.discard(self)
        self.done(outcome)


class RespLink(asyncio.Protocol):
    """One connection: `send` commands with callbacks (or `submit` / `request` a
    write of several); `batches` is the work in flight that the deadline check watches."""

    def __init__(
        self, on_lost: Callable[[RespLink, Exception | None], None], *, timeout_s: float = 5.0
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[Callable[[Any], None]] = deque()
        self.batches: set[Any] = set()  # InFlight items: sent, not answered yet
        self.closed = False
        self.role_checked = 0.0
        """When ROLE last said this server is the primary (Sentinel only)."""
        self.timeout_s = timeout_s
        self._on_lost = on_lost
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; start the deadline check."""
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - stream transport
        self.transport = transport
        self._check_deadlines()

    def _check_deadlines(self) -> None:
        """Every 1/5 of the deadline: work unanswered past it fails, and the link is
        closed. One timer per link instead of one per command."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        late: list[InFlight] = [b for b in self.batches if now - b.sent_at >= self.timeout_s]
        if late:
            for batch in late:
                self.batches.discard(batch)
                batch.fail(RegistryUnavailable("registry read timed out"))
            self.abort()
            return
        self._watchdog = loop.call_later(self.timeout_s / 5, self._check_deadlines)

    def send(self, command: tuple[Any, ...], callback: Callable[[Any], None]) -> None:
        """Write one command; `callback` gets its reply (an error reply for an error)."""
        assert self.transport is not None  # noqa: S101 - connected
        self.waiting.append(callback)
        self.transport.write(hiredis.pack_command(command))

    def send_all(self, commands: list[tuple[Any, ...]], callback: Callable[[Any], None]) -> None:
        """Write several commands in one write; `callback` gets each reply, in order."""
        assert self.transport is not None  # noqa: S101 - connected
        self.waiting.extend([callback] * len(commands))
        self.transport.write(b"".join([hiredis.pack_command(c) for c in commands]))

    def submit(
        self,
        commands: list[tuple[Any, ...]],
        done: Callable[[Outcome], None],
        *,
        keep_errors: bool = False,
        sent_at: float | None = None,
    ) -> None:
        """One write of `commands`; `done` gets every reply (or the error), watched by
        the deadline from `sent_at` (default: now; a resend keeps its first deadline)."""
        sent = asyncio.get_running_loop().time() if sent_at is None else sent_at
        request = _Request(self, len(commands), sent, keep_errors, done)
        self.batches.add(request)
        self.send_all(commands, request.take)

    def request(
        self,
        commands: list[tuple[Any, ...]],
        *,
        keep_errors: bool = False,
        sent_at: float | None = None,
    ) -> asyncio.Future[list[Any]]:
        """Like submit, with the outcome as a future to await."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if future.done():  # its caller has gone
                return
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.submit(commands, done, keep_errors=keep_errors, sent_at=sent_at)
        return future

    def data_received(self, data: bytes) -> None:
        """Hand each complete reply to the callback of the command it answers."""
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.closed:  # aborted by a callback: the rest is not trusted
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.abort()
                return
            self.waiting.popleft()(reply)

    def abort(self) -> None:
        """Close at once (connection_lost follows)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the work in flight (LinkLost), then tell the owner."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        waiting, self.batches = list(self.batches), set()
        for batch in waiting:
            batch.fail(LinkLost(f"registry connection lost: {exc}"))
        self._on_lost(self, exc)


async def open_link(
    endpoint: Endpoint,
    on_lost: Callable[[RespLink, Exception | None], None],
    *,
    timeout_s: float,
    locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
) -> RespLink:
    """Connect to `endpoint` (or to the host and port `locate` names: the primary the
    sentinels name now) and say hello: AUTH, SELECT, and ROLE when located.
    OSError (LinkRefused for a refused hello) when that fails."""
    loop = asyncio.get_running_loop()

    def factory() -> RespLink:
        return RespLink(on_lost, timeout_s=timeout_s)

    if locate is not None:
        host, port = await locate()
        endpoint = endpoint | {"host": host, "port": port}
    if "path" in endpoint:
        _, link = await loop.create_unix_connection(factory, str(endpoint["path"]))
    else:
        _, link = await loop.create_connection(
            factory, str(endpoint["host"]), int(endpoint["port"])
        )
    hello: list[tuple[Any, ...]] = []
    if endpoint.get("password") is not None:
        user = endpoint.get("username")
        hello.append(
            ("AUTH", user, endpoint["password"]) if user else ("AUTH", endpoint["password"])
        )
    if endpoint.get("db"):
        hello.append(("SELECT", endpoint["db"]))
    if locate is not None:
        hello.append(("ROLE",))
    for command in hello:
        done: asyncio.Future[Any] = loop.create_future()
        link.send(command, done.set_result)
        try:
            reply = await done
        except BaseException:
            link.abort()
            raise
        if isinstance(reply, Exception):
            link.abort()
            raise LinkRefused(f"{command[0]}: {reply}")
        if command[0] == "ROLE" and not is_primary(reply):
            link.abort()  # the sentinels' answer is stale (a failover under way)
            raise LinkRefused(f"{endpoint['host']}:{endpoint['port']} is not the primary")
    link.role_checked = loop.time()
    return link


class Links:
    """An owner's open links by key: `ready` gives an open one at once, `get` opens
    it first (once for all callers waiting). A new event loop starts afresh (old
    links belong to the old loop); `close` aborts them all and bumps `epoch`."""

    def __init__(self, opener: Callable[[Hashable], Awaitable[RespLink]]) -> None:
        self._opener = opener
        self._links: dict[Hashable, RespLink] = {}
        self._opening: dict[Hashable, asyncio.Task[RespLink]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.epoch = 0
        """Changes when the links are thrown away (close, a new loop)."""

    def ready(self, key: Hashable) -> RespLink | None:
        """The open link of `key` on the running loop, if there is one."""
        link = self._links.get(key)
        if link is None or link.closed or self._loop is not asyncio.get_running_loop():
            return None
        return link

    async def get(self, key: Hashable) -> RespLink:
        """The open link of `key`, connecting (once for all callers) if needed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: old links are unusable
            self._links, self._opening, self._loop = {}, {}, loop
            self.epoch += 1
        link = self._links.get(key)
        if link is not None and not link.closed:
            return link
        opening = self._opening.get(key)
        if opening is None:
            opening = self._opening[key] = loop.create_task(self._open(key))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and not (task and task.cancelling()):
                raise RegistryUnavailable("registry closed") from None
            raise

    async def _open(self, key: Hashable) -> RespLink:
        try:
            link = await self._opener(key)
        finally:
            self._opening.pop(key, None)
        if self._loop is not asyncio.get_running_loop():  # closed meanwhile
            link.abort()
            raise RegistryUnavailable("registry closed")
        self._links[key] = link
        return link

    def drop(self, link: RespLink) -> None:
        """Forget a link that closed."""
        for key, known in list(self._links.items()):
            if known is link:
                del self._links[key]

    def close(self) -> None:
        """Stop every opening, abort every link."""
        for task in self._opening.values():
            task.cancel()
        links = list(self._links.values())
        self._links, self._opening, self._loop = {}, {}, None
        self.epoch += 1
        for link in links:
            link.abort()
