"""One client connection of the SMTP relay: aiosmtpd's SMTP protocol with the
relay's per-connection state, and the connections of one listener.

Each listener takes at most `max_connections` (`max_connections_per_address`
from one address): beyond them a client gets 421 4.7.0 and is closed; a client
silent for `idle_timeout` between commands is closed (aiosmtpd's own timer).
AUTH goes through the process's login gate: after a failed login every next
AUTH from that address, concurrent or not, waits 0.5 s doubling to 30 s before
it is checked. A RCPT inside a transaction is counted and its path admitted
before aiosmtpd parses it; MAIL FROM / RCPT TO paths of the usual form are read
without aiosmtpd's (slow) parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Session, _AuthMechAttr, syntax

from filterd.guard import Attempt, ConnectionTable, LoginGate, Ticket, peer_host
from filterd.smtp.envelope import EnvelopeStage
from filterd.smtp.transaction import RelayState, Transactions


class RelaySession(Session):
    """aiosmtpd's Session whose `login_data` is a plain attribute.

    aiosmtpd sets the deprecated `login_data` after every successful AUTH, and its
    property logs "Session.login_data is deprecated" on each set; filterd reads
    `auth_data` (the account) only, so the property here stays silent.
    """

    @property
    def login_data(self) -> Any:
        """What aiosmtpd records as the login (unused by filterd)."""
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class Connections:
    """The client connections of one listener: admitted within its caps, followed
    until they go away, waited for and closed when the listener drains."""

    def __init__(self, table: ConnectionTable, transactions: Transactions) -> None:
        self.table = table
        """This listener's connections, within its caps."""
        self.transactions = transactions
        self.open: set[RelaySMTP] = set()

    def busy(self) -> int:
        """Connections with a transaction open: an upstream one, or opt-outs not yet
        written (for draining)."""
        return sum(1 for c in self.open if c.relay.upstream is not None or c.relay.optouts)

    async def drained(self) -> None:
        """Return once no transaction is open (new ones cannot start: listener closed)."""
        while self.busy():
            await self.transactions.ended()

    def close_all(self) -> None:
        """Close every client connection (end of a drain)."""
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.close()


def hook_names(cls: type) -> list[str]:
    """The attribute names of `cls` that aiosmtpd looks up on every new connection:
    commands (`smtp_*`), AUTH mechanisms (`auth_*`) and handler hooks (`handle_*`)."""
    names = _HOOK_NAMES.get(cls)
    if names is None:
        names = [name for name in dir(cls) if name.startswith(("smtp_", "auth_", "handle_"))]
        _HOOK_NAMES[cls] = names
    return names


_HOOK_NAMES: dict[type, list[str]] = {}


def command_tables(cls: type) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(command, attribute) for each `smtp_*` and (mechanism, attribute) for each
    `auth_*` of `cls`, named as aiosmtpd names them; listed once per class."""
    tables = _TABLES.get(cls)
    if tables is None:
        names = hook_names(cls)
        commands = [(name.replace("smtp_", ""), name) for name in names if name.startswith("smtp_")]
        mechanisms = [
            (getattr(getattr(cls, name), "__auth_mechanism_name__",
                     name.replace("auth_", "").replace("__", "-")), name)
            for name in names
            if name.startswith("auth_")
        ]  # fmt: skip
        tables = _TABLES[cls] = (commands, mechanisms)
    return tables


_TABLES: dict[type, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with per-connection relay state and clean-up on disconnect."""

    def __dir__(self) -> list[str]:
        """Nothing: aiosmtpd's SMTP() lists the connection's attributes (dir,
        inspect.getmembers) to build its command and AUTH tables on every new
        connection; `__init__` builds them from names listed once per class
        (`command_tables`). Listing every attribute cost ~90 of the ~140 µs a
        connection took to set up, listing the hook names alone still ~50 of ~100
        (a wrong-password storm opens hundreds a second)."""
        return []

    def __init__(
        self,
        handler: Any,
        *,
        connections: Connections,
        envelope_stage: EnvelopeStage,
        gate: LoginGate,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        commands, mechanisms = command_tables(type(self))
        self._smtp_methods = {command: getattr(self, name) for command, name in commands}
        excluded = kwargs.get("auth_exclude_mechanism") or ()
        own = {
            mechanism: _AuthMechAttr(getattr(self, name), True)
            for mechanism, name in mechanisms
            if mechanism not in excluded
        }
        self._auth_methods = {**own, **self._auth_methods}  # the handler's win, as in aiosmtpd
        self.relay = RelayState()
        self.connections = connections
        self.envelope_stage = envelope_stage
        self.gate = gate
        self.ticket: Ticket | None = None
        """This connection's place in the listener's caps; None when refused."""
        self.login: Attempt | None = None
        """The AUTH being judged inside the login gate."""
        self._held: list[bytes] | None = None
        """Reply lines kept to be written at once (see smtp_EHLO); None: write each."""

    def _create_session(self) -> Session:
        """A RelaySession (a successful AUTH logs no deprecation warning)."""
        return RelaySession(self.loop)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO, its reply lines written at once: aiosmtpd writes each of its 7 lines
        on its own (a send on the socket each), the largest part of what a new
        connection costs before its AUTH (a wrong-password storm opens hundreds a
        second)."""
        self._held = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            held, self._held = self._held, None
            if held:
                self._writer.write(b"".join(held))
                await self._writer.drain()

    async def push(self, status: AnyStr) -> None:
        """Write one reply line (or keep it, while smtp_EHLO gathers its lines)."""
        if self._held is None:
            await super().push(status)
        elif isinstance(status, str):
            self._held.append(status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") + CRLF)
        else:
            self._held.append(status + CRLF)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH, judged inside the process's login gate (its back-off and turns)."""
        peer = peer_host(self.session.peer) if self.session is not None else ""
        async with self.gate.attempt(peer) as attempt:
            self.login = attempt
            try:
                await super().smtp_AUTH(arg)
            finally:
                self.login = None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT, counted toward max_recipients whatever its answer (a refused or
        unparsable recipient too), so a transaction cannot probe without end."""
        envelope = self.envelope
        if envelope is not None and envelope.mail_from is not None:  # else aiosmtpd's 503
            refusal = self.envelope_stage.before_rcpt(self.relay, arg or "")
            if refusal is not None:
                await self.push(refusal)
                return
        await super().smtp_RCPT(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The path of MAIL FROM / RCPT TO and the text after it, as aiosmtpd parses it.

        The usual `<local@host.domain>` form is read with one regular expression;
        anything else (quoting, comments, IDN, source routes, `<>`, ...) goes to
        aiosmtpd's own parser. Both give the same result for every input (a
        property test compares them). aiosmtpd's parser (the email package's
        header parser, and a class defined on every call) cost ~150 µs of CPU per
        MAIL/RCPT on the 2-core bench VM, a third of the relay's CPU per message.
        """
        match = _PLAIN_PATH.match(arg)
        if match is None or "=?" in arg:  # "=?": the email parser tries encoded words
            parsed: tuple[str | None, str | None] = super()._getaddr(arg)
            return parsed
        address, rest = match.group(1), match.group(2) or ""
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, rest

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection within the listener's caps (else 421 and close) and
        register it for draining. (Called again with the TLS transport after STARTTLS.)"""
        if self.ticket is None:
            table = self.connections.table
            self.ticket = table.admit_transport(transport, refusal=TOO_MANY_CONNECTIONS, idle=False)
            if self.ticket is None:
                return
        handler = self._handler_coroutine
        super().connection_made(transport)
        self.connections.open.add(self)
        if self._handler_coroutine is not handler and self._handler_coroutine is not None:
            self._handler_coroutine.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        """Break this connection's reference cycles once aiosmtpd's handler has ended,
        so that it is freed at once rather than by the cyclic collector.

        An aiosmtpd connection refers to itself (its tables of command and AUTH
        methods hold bound methods), and a handler cancelled when its client left
        keeps the CancelledError, whose traceback holds the handler's frames. Under
        a storm of dropped connections hundreds of these piled up between two full
        collections, and freeing them there stopped the event loop for 20 to 50 ms
        (measured with bench/hostile.py). Asking the task for its exception hands the
        saved CancelledError over (and so drops it); the tables are used by the
        handler only.
        """
        if task.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                task.exception()
        self._smtp_methods = {}
        self._auth_methods = {}
        self._client_connected_cb = None
        self._writer = None  # type: ignore[assignment]  # the handler alone writes

    def connection_lost(self, error: Exception | None) -> None:
        """Give the upstream connection back (with RSET) when the client goes away."""
        if self.ticket is None:
            return  # refused at connection_made: aiosmtpd never started on it
        self.ticket.release()
        super().connection_lost(error)
        self.connections.open.discard(self)
        self.connections.transactions.abandon(self.relay)


CRLF = b"\r\n"
TOO_MANY_CONNECTIONS = b"421 4.7.0 too many connections, try again later\r\n"
"""Sent to a connection beyond the listener's caps, before it is closed."""
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_PATH = re.compile(
    rf"<({_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: ([^\s(].*)?)?\Z",
    re.DOTALL,
)
"""`<dot-atom@dot-atom>` in ASCII, then nothing or one space and parameters: the
form RelaySMTP._getaddr reads itself (after the path, aiosmtpd's parser would
skip more spaces and comments, so those go to it)."""
