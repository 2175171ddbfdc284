"""One Postfix policy connection: an `asyncio.Protocol` whose `data_received` parses
what arrived (`filterd.policy_wire`) and answers at once what needs no lookup
(`filterd.policy_rules`). A RCPT request of a known account with a valid
recipient goes to `Service.screen_soon` (for a commercial account one registry
lookup, batched with the other connections' lookups of the same loop turn), whose
callback writes the reply: no task or future per request. The requests that
arrive behind it wait their turn, so replies always come back in request order.

- After a protocol error the connection is logged and closed, once the requests
  before the offending line are answered; a client that half-closes still gets
  its answers.
- A client that pipelines faster than it is answered, or stops reading its
  replies, is not read from until it catches up (at most `MAX_WAITING`
  requests wait, and the replies not yet sent stay within the transport's
  write buffer limits).
- `Listener` is what the connections of one server share: the service, the
  accounts, the connection table (caps and idle deadlines, filterd.guard), and
  which connections are open, so that closing the server can drain them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from filterd.accounts import AccountBook
from filterd.guard import ConnectionTable, Ticket
from filterd.logs import get_logger
from filterd.model import Decision
from filterd.normalize import mask
from filterd.policy_rules import DUNNO, Screen, action_for, loggable, plan, reply
from filterd.policy_wire import PolicyParser, PolicyProtocolError
from filterd.service import Service

ORIGIN = "policy"
MAX_WAITING = 100
"""Requests received but not yet answered, per connection, beyond which it is not read."""

log = get_logger("policy_service")


class Listener:
    """What the connections of one server share, and which of them are still open."""

    def __init__(
        self,
        service: Service,
        accounts: AccountBook,
        default_region: str | None,
        table: ConnectionTable,
    ) -> None:
        self.service = service
        self.accounts = accounts
        self.default_region = default_region
        self.table = table
        self.open: set[PolicyConnection] = set()
        self.closing = False
        self.drained = asyncio.Event()
        self.drained.set()

    def connection(self) -> PolicyConnection:
        """The protocol of a new connection (the server's protocol factory)."""
        return PolicyConnection(self)

    def add(self, connection: PolicyConnection) -> None:
        """A connection was admitted."""
        self.open.add(connection)
        self.drained.clear()

    def forget(self, connection: PolicyConnection) -> None:
        """A connection is closed and has nothing in flight."""
        self.open.discard(connection)
        if not self.open:
            self.drained.set()

    def close(self) -> None:
        """Stop: close idle connections now; busy ones close after their reply."""
        self.closing = True
        for connection in list(self.open):
            connection.finish()

    async def wait(self) -> None:
        """Until every connection is closed and none has a request in flight."""
        await self.drained.wait()


class PolicyConnection(asyncio.Protocol):
    """One policy client: requests parsed as they arrive and answered in order."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.parser = PolicyParser()
        self.transport: asyncio.Transport | None = None
        self.ticket: Ticket | None = None
        self.peer = ""
        self.waiting: deque[dict[str, str]] = deque()
        """Requests received, not answered yet (behind the one in flight)."""
        self.busy = False
        """A request is being screened (its reply is next)."""
        self.answering = False
        self.finishing = False
        """Close once everything received is answered (EOF, protocol error, server closing)."""
        self.lost = False
        self.write_paused = False
        self.read_paused = False

    # ---- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection within the listener's caps (else it is closed)."""
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream transport
        listener = self.listener
        if listener.closing:
            transport.close()
            return
        self.ticket = listener.table.admit_transport(transport)
        if self.ticket is None:  # over a cap: closed at once, nothing said
            return
        self.transport = transport
        self.peer = _peer(transport)
        listener.add(self)

    def data_received(self, data: bytes) -> None:
        """Parse; answer every request that needs no lookup at once, in order."""
        if self.ticket is None or self.finishing:
            return
        self.ticket.extend()  # traffic: idle_timeout from now
        try:
            requests = self.parser.feed(data)
        except PolicyProtocolError as exc:
            self._broken(str(exc))
            return
        self.waiting.extend(requests)
        if not self.busy:
            self._answer()
        if self.parser.error is not None:
            self._broken(self.parser.error)
        elif len(self.waiting) >= MAX_WAITING:
            self._flow()

    def eof_received(self) -> bool:
        """The client is done sending: answer what it asked, then close."""
        if self.parser.pending and not self.finishing:
            log.info("policy_client_left_mid_request", peer=self.peer)
        self.finish()
        return True  # half-open until the answers are written; finish() closes

    def pause_writing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        """The replies drained: read again."""
        self.write_paused = False
        self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the connection's place (a request in flight still finishes)."""
        self.lost = True
        if exc is not None and self.ticket is not None:
            log.info("policy_client_disconnected", peer=self.peer, error=type(exc).__name__)
        if self.ticket is not None:
            self.ticket.release()
        self.waiting.clear()
        if not self.busy:
            self.listener.forget(self)

    # ---- answering -----------------------------------------------------------------

    def _answer(self) -> None:
        """Answer waiting requests in order until one waits for the registry (its
        callback answers it and goes on from there) or none is left; the ready replies
        in one write."""
        if self.answering:  # a screening answered at once, inside this very loop
            return
        self.answering = True
        listener, waiting = self.listener, self.waiting
        out: list[bytes] = []
        try:
            while waiting and not self.busy:
                request = waiting.popleft()
                todo = plan(request, listener.accounts, listener.default_region)
                if isinstance(todo, Screen):
                    if out:  # the earlier replies first
                        self._write(b"".join(out))
                        out = []
                    self._screen(todo)
                    continue
                if todo is not DUNNO:
                    _log_refused(todo, request)
                out.append(reply(todo))
            if out:
                self._write(b"".join(out) if len(out) > 1 else out[0])
        except Exception:
            log.exception("policy_connection_failed", peer=self.peer)
            waiting.clear()
            self.finishing = True
        finally:
            self.answering = False
        if not self.busy:
            if self.finishing:
                self._close()
            elif self.read_paused:
                self._flow()

    def _screen(self, todo: Screen) -> None:
        """Hand one recipient to the service; `_screened` gets its decision."""
        self.busy = True
        account, recipient = todo.account, todo.recipient

        def screened(outcome: Decision | Exception) -> None:
            self._screened(recipient, outcome)

        self.listener.service.screen_soon(
            account.sender,
            account.stream,
            todo.address,
            screened,
            origin=ORIGIN,
            message_id=todo.message_id,
        )

    def _screened(self, recipient: str, outcome: Decision | Exception) -> None:
        """Write the reply of the request in flight, then answer the requests behind it."""
        self.busy = False
        if isinstance(outcome, Exception):
            log.error("policy_connection_failed", peer=self.peer, exc_info=outcome)
            self.waiting.clear()
            self.finishing = True
        else:
            self._write(reply(action_for(outcome, recipient)))
        if self.lost:
            self.listener.forget(self)
            return
        if self.waiting or self.finishing or self.read_paused:  # else nothing is left to do
            self._answer()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    # ---- closing and flow control --------------------------------------------------

    def finish(self) -> None:
        """Close once the requests received are answered (at once when idle)."""
        self.finishing = True
        if self.busy:
            self._flow()
        elif not self.lost:
            self._answer()

    def _broken(self, error: str) -> None:
        """A protocol error: logged; the connection closes after its earlier answers."""
        log.warning("policy_protocol_error", peer=self.peer, error=error)
        self.finish()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _flow(self) -> None:
        """Read while answers keep up: not while finishing, while the client leaves its
        replies unread, or while MAX_WAITING requests wait."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        stop = self.finishing or self.write_paused or len(self.waiting) >= MAX_WAITING
        if stop != self.read_paused:
            self.read_paused = stop
            if stop:
                transport.pause_reading()
            else:
                transport.resume_reading()


def _log_refused(action: str, request: dict[str, str]) -> None:
    """A request refused without a lookup (no account, not an address): the reply code,
    the masked recipient, the account's names."""
    log.info(
        "policy_refused",
        reply=action.split(" ", 1)[0],
        recipient=mask(loggable(request.get("recipient", ""))),
        sasl_username=loggable(request.get("sasl_username", "")),
        client_address=loggable(request.get("client_address", "")),
    )


def _peer(transport: asyncio.BaseTransport) -> str:
    """host:port of the policy client (Postfix's smtpd, not a consumer)."""
    name = transport.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)
