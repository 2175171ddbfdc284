"""The Postfix policy service: `check_policy_service inet:127.0.0.1:10040` (SPEC §4).

Postfix's SMTP server sends one request per access check over a persistent
connection: attribute lines `name=value\\n`, ended by an empty line. The
answer is one line `action=...` and an empty line
(http://www.postfix.org/SMTPD_POLICY_README.html).

Built sans-IO, like h11:

- `PolicyParser` turns bytes into requests (`dict[str, str]`) and raises
  `PolicyProtocolError` for anything else; `serialize_reply` turns an action
  into bytes; `plan` maps one request to a ready action or a recipient to
  screen, and `action_for` maps a decision to its action. None of these does I/O.
- `start_policy_server` is the asyncio streams server around them: one
  `Service.screen` call (one registry round trip) per RCPT request.

Wire rules chosen here, beyond Postfix's own documentation:

- A line is at most `MAX_LINE` bytes (newline excluded), a request at most
  `MAX_ATTRIBUTES` attribute lines. A line without `=`, or with an empty
  name, is an error. A trailing `\\r` before the newline is tolerated (a
  person testing with telnet); `=` inside a value is kept (`ccert_subject=CN=x`);
  a repeated name keeps its last value.
- Bytes are decoded as UTF-8 with `errors="surrogateescape"`: any byte
  sequence parses (Postfix passes SMTPUTF8 addresses through as UTF-8, and
  may pass other bytes from the client unchanged). A recipient that is not
  valid UTF-8 then fails address validation (553); an account name or
  client address that is not finds no account (554). Recipients are admitted
  by the same rules as on the SMTP relay (`filterd.admission`); one echoed in a
  reply has undecodable bytes and control characters shown as `?`, so every
  action line is valid UTF-8.
- An empty request (an empty line with no attributes before it) is answered
  like any request that is not at RCPT: `action=DUNNO`, as Postfix's own
  example policy server does.
- After a protocol error the connection is logged and closed (Postfix then
  opens a new one); the server keeps running.
- The listener takes at most `max_connections` (`max_connections_per_address`
  from one address; beyond them a connection is closed at once) and closes a
  connection that sends nothing for `idle_timeout` (default 300 s, as Postfix's
  own `smtpd_policy_service_max_idle`).

Decisions, at `protocol_state=RCPT` (every other state: `DUNNO`):

- the account comes from `sasl_username` (`AccountBook.by_username`), or,
  when that is empty or absent, from `client_address` (`by_address`); none →
  `replies.NO_ACCOUNT` (554);
- the recipient must be an email address (no `@` → "not an email address"),
  normalised like the SMTP relay does → else `replies.BAD_ADDRESS` (553)
  with `normalize`'s reason;
- `Service.screen(account.sender, account.stream, [address], origin="policy",
  message_id=queue_id or None)` → `DUNNO` to deliver, else the exact reply
  text of `replies.for_decision` (550 refused / 550 no consent / 451 registry
  unavailable).

Closing: `server.close()` closes idle connections at once; a connection
answering a request finishes it (the reply is written) and is closed after.
`await server.wait_closed()` returns when every connection handler is done
(also on Python 3.11, whose own `wait_closed` does not wait for connections).
A request in flight ends within the registry client's timeouts; only a client
that stops reading its replies can hold `wait_closed()` longer, so callers bound
it (`asyncio.wait_for`), as the daemon does for every front end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from filterd import replies
from filterd.accounts import AccountBook
from filterd.admission import Refused, email_recipient
from filterd.errors import FilterdError
from filterd.guard import ACCEPT_BATCH, ConnectionTable, Ticket, widen_queue
from filterd.logs import get_logger
from filterd.model import Address, Decision
from filterd.normalize import mask
from filterd.service import Service
from filterd.settings import POLICY_IDLE_S, ListenerLimits, SmtpAccount

MAX_LINE = 2048
"""Longest attribute line accepted, in bytes, without its newline."""
MAX_ATTRIBUTES = 100
"""Most attribute lines in one request (Postfix 3.7 sends about 40)."""
READ_SIZE = 65536
"""Bytes asked for per read; a Postfix request is about 600."""
DUNNO = "DUNNO"
ORIGIN = "policy"

log = get_logger("policy_service")


class PolicyProtocolError(FilterdError):
    """Input that is not the Postfix policy protocol; the connection is closed.

    The message names the rule that was broken, never the offending bytes
    (they may hold an address).
    """


# ---- sans-IO: bytes ⇄ requests and replies -----------------------------------------


class PolicyParser:
    """Incremental parser: `feed(bytes)` returns the requests completed by those bytes.

    Any input either parses or raises PolicyProtocolError; after an error the
    parser stays failed (every further `feed` raises).
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_attributes: int = MAX_ATTRIBUTES) -> None:
        self._max_line = max_line
        self._max_attributes = max_attributes
        self._buffer = b""
        self._attributes: dict[str, str] = {}
        self._lines = 0
        self._error: str | None = None

    @property
    def pending(self) -> bool:
        """True when part of a request has been received but not its end."""
        return bool(self._buffer) or self._lines > 0

    @property
    def error(self) -> str | None:
        """Why the input is not the protocol, once it has failed; else None."""
        return self._error

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Take more bytes; return every request they complete, in order.

        Raises PolicyProtocolError when the bytes break the protocol before
        completing any request. When requests were completed before the
        offending line, they are returned first, and `error` is set: answer
        them, then close (every further `feed` raises).
        """
        if self._error is not None:
            raise PolicyProtocolError(self._error)
        buffer = self._buffer + data if self._buffer else bytes(data)
        requests: list[dict[str, str]] = []
        try:
            self._buffer = self._parse(buffer, requests)
        except PolicyProtocolError as exc:
            self._error = str(exc)
            self._buffer = b""
            self._attributes = {}
            self._lines = 0
            if not requests:
                raise
        return requests

    def _parse(self, buffer: bytes, requests: list[dict[str, str]]) -> bytes:
        """Complete requests into `requests`; return the unfinished rest.

        The complete lines are split and decoded in one go (newline and `=` are
        ASCII, so they never fall inside a UTF-8 or surrogate-escaped character).
        """
        end = buffer.rfind(b"\n")
        rest = buffer[end + 1 :]
        # One byte of slack: the unfinished line may yet end in "\r\n".
        rest_too_long = len(rest) > self._max_line + 1
        if end >= 0:
            complete = buffer[:end]
            lines = complete.decode("utf-8", "surrogateescape").split("\n")
            overlong = self._first_overlong(complete)
            self._lines_of(lines if overlong < 0 else lines[:overlong], requests)
            if overlong >= 0:
                rest_too_long = True
        if rest_too_long:
            raise PolicyProtocolError(f"a line longer than {self._max_line} bytes")
        return rest

    def _first_overlong(self, complete: bytes) -> int:
        """Index of the first line over the limit (a final CR not counted), or -1."""
        raw = complete.split(b"\n")
        if max(map(len, raw)) <= self._max_line:
            return -1
        for index, line in enumerate(raw):
            if len(line) - line.endswith(b"\r") > self._max_line:
                return index
        return -1

    def _lines_of(self, lines: list[str], requests: list[dict[str, str]]) -> None:
        """Apply complete lines (decoded, without newline) in order."""
        attributes, count, limit = self._attributes, self._lines, self._max_attributes
        try:
            for line in lines:
                if line.endswith("\r"):
                    line = line[:-1]  # noqa: PLW2901 - the line without its CR
                if not line:
                    requests.append(attributes)
                    attributes, count = {}, 0
                    continue
                name, sep, value = line.partition("=")
                if not sep:
                    raise PolicyProtocolError("a line without '='")
                if not name:
                    raise PolicyProtocolError("an attribute without a name")
                count += 1
                if count > limit:
                    raise PolicyProtocolError(f"more than {limit} attributes in one request")
                attributes[name] = value
        finally:
            self._attributes, self._lines = attributes, count


_UNSAFE = dict.fromkeys((*range(32), 127), "?")


def serialize_reply(action: str) -> bytes:
    """`action=<action>\\n\\n`; control characters in `action` become `?`."""
    line = action.translate(_UNSAFE)
    return f"action={line}\n\n".encode("utf-8", "surrogateescape")


# ---- sans-IO: requests → what to do ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Screen:
    """A RCPT request to decide: whose message, which recipient."""

    account: SmtpAccount
    address: Address
    recipient: str
    """The recipient as Postfix sent it, for the reply text."""
    message_id: str | None


def find_account(request: dict[str, str], accounts: AccountBook) -> SmtpAccount | None:
    """The account of a request: by `sasl_username`, or else by `client_address`."""
    username = request.get("sasl_username", "")
    if username:
        return accounts.by_username(username)
    return accounts.by_address(request.get("client_address", ""))


def plan(
    request: dict[str, str], accounts: AccountBook, default_region: str | None
) -> str | Screen:
    """The action to answer at once, or the recipient to screen first."""
    if request.get("protocol_state", "").upper() != "RCPT":
        return DUNNO
    account = find_account(request, accounts)
    if account is None:
        return replies.NO_ACCOUNT
    recipient = request.get("recipient", "")
    address = recipient_address(recipient, default_region)
    if isinstance(address, str):
        return address
    # the queue id goes into the log line and the audit entry: valid UTF-8 only
    return Screen(account, address, recipient, _loggable(request.get("queue_id", "")) or None)


def recipient_address(recipient: str, default_region: str | None) -> Address | str:
    """The normalised email address of a recipient, or the 553 reply that refuses it
    (the SMTP relay's admission rules; the recipient echoed ASCII-safe)."""
    address = email_recipient(recipient, default_region)
    if isinstance(address, Refused):
        return replies.BAD_ADDRESS.format(address=address.shown, reason=address.reason)
    return address


def action_for(decision: Decision, recipient: str) -> str:
    """`DUNNO` to deliver, else the SMTP reply that drops or defers (replies.for_decision)."""
    return replies.for_decision(decision, recipient) or DUNNO


# ---- asyncio streams server --------------------------------------------------------


class _Connections:
    """The open connections of one server, so that closing it can drain them."""

    def __init__(self) -> None:
        self.closing = False
        self.idle: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        """Stop: close idle connections now; busy ones close after their reply."""
        self.closing = True
        for writer in list(self.idle.values()):
            writer.close()

    async def wait(self) -> None:
        """Until every connection handler has finished."""
        while self.tasks:
            await asyncio.wait(list(self.tasks))


class _Handler:
    """Serves policy connections (one `serve` call each): read, parse, answer, repeat."""

    def __init__(
        self,
        service: Service,
        accounts: AccountBook,
        default_region: str | None,
        connections: _Connections,
        table: ConnectionTable,
    ) -> None:
        self.service = service
        self.accounts = accounts
        self.default_region = default_region
        self.connections = connections
        self.table = table

    async def answer(self, request: dict[str, str]) -> str:
        """The action for one request (at most one registry round trip)."""
        todo = plan(request, self.accounts, self.default_region)
        if isinstance(todo, str):
            if todo != DUNNO:
                log.info(
                    "policy_refused",
                    reply=todo.split(" ", 1)[0],
                    recipient=mask(_loggable(request.get("recipient", ""))),
                    sasl_username=_loggable(request.get("sasl_username", "")),
                    client_address=_loggable(request.get("client_address", "")),
                )
            return todo
        decisions = await self.service.screen(
            todo.account.sender,
            todo.account.stream,
            [todo.address],
            origin=ORIGIN,
            message_id=todo.message_id,
        )
        return action_for(decisions[0], todo.recipient)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The connection's life: requests answered in order until EOF, error or close."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task
            raise RuntimeError("policy connection outside a task")
        ticket = self.table.admit_transport(writer.transport, close=writer.close)
        if ticket is None:  # over a cap: closed at once, nothing said
            return
        self.connections.tasks.add(task)
        peer = _peer(writer)
        try:
            await self._converse(task, reader, writer, peer, ticket)
        except PolicyProtocolError as exc:
            log.warning("policy_protocol_error", peer=peer, error=str(exc))
        except ConnectionError as exc:
            log.info("policy_client_disconnected", peer=peer, error=type(exc).__name__)
        except Exception:
            log.exception("policy_connection_failed", peer=peer)
        finally:
            ticket.release()
            self.connections.tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(
        self,
        task: asyncio.Task[None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        ticket: Ticket,
    ) -> None:
        """Read, parse, answer, until EOF or the server closes; raise on bad input."""
        connections = self.connections
        parser = PolicyParser()
        while not connections.closing:
            connections.idle[task] = writer
            try:
                data = await reader.read(READ_SIZE)
            finally:
                connections.idle.pop(task, None)
            if not data:
                if parser.pending:
                    log.info("policy_client_left_mid_request", peer=peer)
                return
            ticket.extend()  # traffic: idle_timeout from now
            answers = [serialize_reply(await self.answer(r)) for r in parser.feed(data)]
            if answers:
                writer.write(b"".join(answers))
                await writer.drain()
            if parser.error is not None:
                raise PolicyProtocolError(parser.error)


def _loggable(text: str) -> str:
    """`text` with undecodable bytes (surrogate escapes) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _peer(writer: asyncio.StreamWriter) -> str:
    """host:port of the policy client (Postfix's smtpd, not a consumer)."""
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


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
    connection handler has finished.
    """
    connections = _Connections()
    table = ConnectionTable("policy", limits or ListenerLimits(POLICY_IDLE_S))
    handler = _Handler(service, accounts, default_region, connections, table)
    host, port = listen
    server = await asyncio.start_server(handler.serve, host or None, port, backlog=ACCEPT_BATCH)
    widen_queue(server)
    table.start()
    _drain_on_close(server, connections, table)
    return server


def _drain_on_close(
    server: asyncio.Server, connections: _Connections, table: ConnectionTable
) -> None:
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
        table.stop()
        connections.close()

    async def wait_closed() -> None:
        await connections.wait()
        await wait_listener()

    server.close = close  # type: ignore[method-assign]
    server.wait_closed = wait_closed  # type: ignore[method-assign]
