"""A raw RESP connection for pipelined commands (the one owner of hiredis).

Commands are written as RESP, replies parsed by hiredis and handed, in order,
to per-command callbacks. redis-py costs ~100 µs of client CPU per command
(connection pool, retry wrapper, parser layers); this costs a few µs, and
needs no task per call. The registry's lookups use it (redis_registry.py).

Work in flight (anything with a `sent_at` loop time and a `fail(error)`) is
watched by one timer per connection: what is unanswered past the deadline
fails, and the connection is closed, since later replies could no longer be
matched to their commands.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import hiredis

from filterd.errors import RegistryUnavailable


class InFlight(Protocol):
    """Something sent on the link and waiting for its answer."""

    sent_at: float

    def fail(self, error: Exception) -> None:
        """Give every waiting caller `error`."""


def is_error(reply: Any) -> bool:
    """True when a reply is a server error (`-ERR …`, `-NOSCRIPT …`)."""
    return isinstance(reply, hiredis.ReplyError)


class RespLink(asyncio.Protocol):
    """One connection: `send` commands with callbacks; `batches` is the work in
    flight that the deadline check watches."""

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
        """Tell the owner (it fails or resends what was waiting)."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._on_lost(self, exc)
