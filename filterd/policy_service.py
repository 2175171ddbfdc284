"""The Postfix policy service: `check_policy_service inet:127.0.0.1:10040` (SPEC §4).

The wire format is `filterd.policy_wire` (bytes ⇄ requests), the answer to a
request `filterd.policy_rules` (a ready reply, or a recipient to screen), one
connection `filterd.policy_connection` (answered from callbacks, in order); this
module starts the listener.

- The listener takes at most `max_connections` (`max_connections_per_address`
  from one address; beyond them a connection is closed at once) and closes a
  connection that sends nothing for `idle_timeout` (default 300 s, as Postfix's
  own `smtpd_policy_service_max_idle`).
- After a protocol error only that connection is closed (Postfix then opens a
  new one); the server keeps running.

Closing: `server.close()` closes idle connections at once; a connection
answering a request finishes it (the reply is written) and is closed after.
`await server.wait_closed()` returns when every connection is closed and no
request is in flight (also on Python 3.11, whose own `wait_closed` does not
wait for connections). A request in flight ends within the registry client's
timeouts; only a client that stops reading its replies can hold `wait_closed()`
longer, so callers bound it (`asyncio.wait_for`), as the daemon does for every
front end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from filterd.accounts import AccountBook
from filterd.guard import ACCEPT_BATCH, ConnectionTable, widen_queue
from filterd.policy_connection import Listener
from filterd.service import Service
from filterd.settings import POLICY_IDLE_S, ListenerLimits


async def start_policy_server(
    listen: tuple[str, int],
    service: Service,
    accounts: AccountBook,
    *,
    default_region: str | None,
    limits: ListenerLimits | None = None,
) -> asyncio.Server:
    """Listen on (host, port) and answer Postfix policy requests until closed.

    The returned server's `close()` also closes idle client connections and
    lets busy ones finish their request; its `wait_closed()` returns once every
    connection is closed with no request in flight.
    """
    table = ConnectionTable("policy", limits or ListenerLimits(POLICY_IDLE_S))
    listener = Listener(service, accounts, default_region, table)
    host, port = listen
    loop = asyncio.get_running_loop()
    server = await loop.create_server(listener.connection, host or None, port, backlog=ACCEPT_BATCH)
    widen_queue(server)
    table.start()
    _drain_on_close(server, listener)
    return server


def _drain_on_close(server: asyncio.Server, listener: Listener) -> None:
    """Make the server's own close()/wait_closed() drain its client connections.

    asyncio.Server has no hook for this: close() stops only the listening
    socket, and on Python 3.11 wait_closed() does not wait for connections.
    The two methods are wrapped on this instance, so `async with server`,
    `serve_forever()` cancellation and explicit calls all drain.
    """
    close_listener: Callable[[], None] = server.close
    wait_listener: Callable[[], Coroutine[Any, Any, None]] = server.wait_closed

    def close() -> None:
        close_listener()
        listener.table.stop()
        listener.close()

    async def wait_closed() -> None:
        await listener.wait()
        await wait_listener()

    server.close = close  # type: ignore[method-assign]
    server.wait_closed = wait_closed  # type: ignore[method-assign]
