"""The message routes of the submits a relay forwarded (SMPP and CMPP alike): kept in
memory until the registry has them, so that the client's answer need not wait for
the write.

When the carrier (the SMSC, the ISMG) accepts a forwarded submit, its route (the
carrier's message id → the client's account and filterd's message id) goes into
this book and the client is answered in the same turn of the event loop; the
registry write goes on behind the answer: the routes added within `BATCH_S` of
each other go out together (`Registry.remember_message`, batched into one write
of SETs, so one fsync of the registry for all of them: each fsync holds up the
registry's answers to the consent reads as well). A delivery receipt or status
report looks here first, so one arriving before the write has landed is mapped
all the same. A write that fails is tried again (0.1 s doubling to 5 s) for as
long as the route would live, the route staying in the book meanwhile (at most
`PENDING_MAX` routes: past it a route is not kept and `message_id_not_mapped` is
logged, as for a route given up). At shutdown the writes still pending get
`drain_s` to land.

Each relay keys its routes as the registry has always held them: the SMSC's
message id as given in submit_sm_resp (SMPP), `cmpp:<Msg_Id>` (CMPP,
`filterd.cmpp.ismg.route_id`).

What a crash of the process (kill -9, power) in the window between the answer
and the write can lose: the routes of the submits answered in that window (a
few tens of milliseconds: `BATCH_S` and the registry's write; while the
registry is unreachable, everything since). A receipt or report on such a
submit finds no route: it is logged (`receipt_for_unknown_message`,
`report_for_unknown_message`) and acknowledged to the carrier, and the client
gets none for that message id. What it never loses: an acknowledged submit,
which is answered only once the carrier has accepted it.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from filterd.errors import RegistryUnavailable
from filterd.logs import get_logger
from filterd.storage.port import Registry

BATCH_S = 0.02
"""How long the first route of a batch waits for others before the batch is written."""
PENDING_MAX = 100_000
"""Routes kept in memory while their writes are pending (the registry down)."""
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


class Route(NamedTuple):
    """One route to write: registry key → (owner, client message id), its lifetime."""

    key: str
    owner: str
    client_id: str
    ttl_s: int


class RouteBook:
    """The routes of one process's forwarded submits (see the module doc)."""

    def __init__(self, registry: Registry, component: str, *, limit: int = PENDING_MAX) -> None:
        self.registry = registry
        self._log = get_logger(component)
        self._limit = limit
        self._pending: dict[str, tuple[str, str]] = {}
        self._queue: list[Route] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> int:
        """How many routes are not yet in the registry."""
        return len(self._pending)

    def add(self, key: str, owner: str, client_id: str, ttl_s: int) -> None:
        """Keep the route `key` → (`owner`, `client_id`) and have it written, with its
        expiry of `ttl_s` seconds, in the batch of the next `BATCH_S`."""
        if len(self._pending) >= self._limit:
            self._log.warning("message_id_not_mapped", error=f"{self._limit} route writes pending")
            return
        self._pending[key] = (owner, client_id)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_S, self._flush)
        self._queue.append(Route(key, owner, client_id, ttl_s))

    async def find(self, key: str) -> tuple[str, str] | None:
        """The (owner, client message id) of route `key`: from memory while its write is
        pending, else from the registry (RegistryUnavailable if it cannot be read)."""
        found = self._pending.get(key)
        if found is not None:
            return found
        return await self.registry.find_message(key)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, batch: list[Route]) -> None:
        """Write `batch`, trying the failed routes again until they land or expire."""
        start, delay = time.monotonic(), RETRY_FIRST_S
        while batch:
            results = await asyncio.gather(
                *(self.registry.remember_message(*route) for route in batch),
                return_exceptions=True,
            )
            failed: list[Route] = []
            error: BaseException | None = None
            for route, result in zip(batch, results, strict=True):
                if isinstance(result, RegistryUnavailable):
                    failed.append(route)
                    error = result
                    continue
                if isinstance(result, BaseException):
                    self._log.error("message_id_not_mapped", error=repr(result))
                self._forget(route)
            if not failed:
                return
            lived = time.monotonic() - start + delay
            batch = [route for route in failed if route.ttl_s > lived]
            reason = str(error)
            if batch:
                self._log.warning(
                    "route_write_failed", error=reason, routes=len(batch), retry_s=delay
                )
            if len(batch) < len(failed):
                self._log.warning(
                    "message_id_not_mapped", error=reason, routes=len(failed) - len(batch)
                )
                for route in failed:
                    if route.ttl_s <= lived:
                        self._forget(route)
            if batch:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _forget(self, route: Route) -> None:
        """The route is written (or given up): the registry answers for it now."""
        if self._pending.get(route.key) == (route.owner, route.client_id):
            del self._pending[route.key]

    async def settle(self, timeout_s: float) -> None:
        """Shutdown: let the pending writes land (`timeout_s` at most); what is still
        pending then is lost, and logged."""
        if self._queue:
            self._flush()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)
        for task in list(self._writes):
            task.cancel()
        if self._pending:
            self._log.warning(
                "message_id_not_mapped", error=f"{len(self._pending)} route writes pending at stop"
            )
            self._pending.clear()
