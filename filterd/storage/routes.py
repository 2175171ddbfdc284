"""Message-route writes on one server, batched: the write path of
RedisRegistry.remember_message.

A relay writes a route (carrier message id → client, message id) for every message
the carrier accepted, so that the delivery receipt or status report finds its way
back; its route book (`filterd.routebook`) writes them behind the client's answer,
gathering those of 20 ms into one turn of the event loop. Routes written in one
turn share one write of SETs on the lookups' connection
(lookups.py, `Reads`): one round trip, and under `appendfsync always` one fsync,
for all of them; each caller still waits for its own SET's reply, so a route is
stored before its caller returns. A SET is idempotent, so a batch whose link is
lost may be written once more as lookups are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from filterd.errors import RegistryUnavailable
from filterd.storage.link import Outcome, is_error
from filterd.storage.lookups import Reads

_Route = tuple[tuple[Any, ...], asyncio.Future[None]]


class Routes:
    """The batching of one server's route writes (see the module doc)."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._queue: list[_Route] = []
        self._flush_due = False

    async def remember(self, key: str, value: str, ttl_s: int) -> None:
        """SET `key` to `value` expiring in `ttl_s` seconds; returns once the server
        has stored it (RegistryUnavailable if it did not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((("SET", key, value, "EX", ttl_s), future))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush)
        await future

    def _flush(self) -> None:
        routes, self._queue, self._flush_due = self._queue, [], False
        routes = [route for route in routes if not route[1].done()]  # callers gone
        if not routes:
            return

        def settle(outcome: Outcome) -> None:
            _settle(routes, outcome)

        self._reads.submit([command for command, _ in routes], settle)

    def close(self) -> None:
        """Stop: what is queued fails (what is in flight fails with the reads' link)."""
        queued, self._queue = self._queue, []
        for _, future in queued:
            if not future.done():
                future.set_exception(RegistryUnavailable("registry closed"))


def _settle(routes: Sequence[_Route], outcome: Outcome) -> None:
    """Each caller gets its SET's outcome: done, or the error (a server error, a lost
    link, a reply of the wrong shape)."""
    if not isinstance(outcome, Exception) and len(outcome) != len(routes):
        outcome = RegistryUnavailable("registry write answered with the wrong shape")
    for index, (_, future) in enumerate(routes):
        if future.done():  # its caller may have gone
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        elif is_error(outcome[index]):
            future.set_exception(RegistryUnavailable(f"registry write failed: {outcome[index]}"))
        else:
            future.set_result(None)
