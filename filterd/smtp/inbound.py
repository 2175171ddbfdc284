"""The inbound leg: an aiosmtpd server that marketing tools submit to (the only
module that imports aiosmtpd).

Per connection: the account comes from AUTH (PLAIN/LOGIN; after STARTTLS when
TLS is configured; through the process's login gate: after a failed login
every next AUTH from that address, concurrent or not, waits 0.5 s doubling to
30 s before it is checked) or from the client's address in an account's
`networks`; otherwise MAIL gets 530 5.7.0. Each listener takes at most
`max_connections` (`max_connections_per_address` from one address): beyond
them a client gets 421 4.7.0 and is closed; a client silent for
`idle_timeout` between commands is closed (aiosmtpd's own timer).

Per recipient, at RCPT: the consent decision (one registry read), then the
same RCPT at the upstream, in real time, so an upstream refusal reaches the
client as that recipient's reply. At DATA the
message goes to the upstream and the client gets the upstream's reply: 250
only after the upstream accepted it. Nothing is spooled.

A transactional account's message with commercial signals (signals.py) is
upgraded at DATA: all its recipients are judged at once; those without
permission are dropped (and audited), the upstream transaction is redone for
the rest, and if none remain the message is refused with 550 5.7.1.

Email opt-outs (oneclick.py): recipients `unsubscribe+TOKEN@{unsubscribe_domain}`
are never relayed; their refusals are written durably before DATA's 250. On
the relay listener they are taken from logged-in clients like any recipient
(MAIL without an account is 530, SPEC §4); on `smtp.unsubscribe_listen` from
anyone, and nothing else is taken there. With `[dkim]`,
commercial mail is signed (and given one-click headers) before it goes
upstream; a commercial transaction then carries one recipient (452 4.5.3 for
more: the client sends the rest in another transaction), because the
one-click token names one consumer.

Addresses are checked before anything uses them: bytes that are not UTF-8,
spaces or control characters get 553 (never a crash or a 500), and the null
reverse-path `<>` is passed upstream as such. Every RCPT of a transaction,
refused or not, counts toward `max_recipients`. A message with a NUL byte is
refused at DATA (550 5.6.0: mail text may not hold NUL, RFC 5322 §2.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import ssl
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)

from filterd import replies
from filterd.accounts import AccountBook
from filterd.admission import Refused, email_recipient, shown, unusable
from filterd.errors import RegistryUnavailable
from filterd.guard import Attempt, ConnectionTable, LoginGate, Ticket
from filterd.logs import get_logger
from filterd.model import Address, MessageClass
from filterd.normalize import mask
from filterd.service import Service
from filterd.settings import SmtpAccount, SmtpSettings
from filterd.signing import SigningError
from filterd.smtp.oneclick import BAD_UNSUBSCRIBE_ADDRESS, UNSUBSCRIBED, OneClick
from filterd.smtp.outbound import UpstreamConnection, UpstreamPool, UpstreamReply
from filterd.smtp.signals import commercial_signals
from filterd.tokens import Unsubscribe

log = get_logger("smtp")


@dataclass
class RelayState:
    """What one client connection has going: its account and open transaction."""

    account: SmtpAccount | None = None
    upstream: UpstreamConnection | None = None
    addresses: list[Address] = field(default_factory=list)
    optouts: list[Unsubscribe] = field(default_factory=list)
    utf8: bool = False
    transaction: str = ""
    rcpts: int = 0
    """RCPT commands of the open transaction, refused ones included."""
    admitted: tuple[str, Address] | str | None = None
    """The admission verdict of the RCPT being handled (see _admit_path)."""


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


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with per-connection relay state and clean-up on disconnect."""

    def __init__(self, handler: RelayHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.relay = RelayState()
        self.relay_handler = handler
        self.ticket: Ticket | None = None
        """This connection's place in the listener's caps; None when refused."""
        self.login: Attempt | None = None
        """The AUTH being judged inside the login gate."""

    def _create_session(self) -> Session:
        """A RelaySession (a successful AUTH logs no deprecation warning)."""
        return RelaySession(self.loop)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH, judged inside the process's login gate (its back-off and turns)."""
        peer = _peer(self.session) if self.session is not None else ""
        async with self.relay_handler.gate.attempt(peer) as attempt:
            self.login = attempt
            try:
                await super().smtp_AUTH(arg)
            finally:
                self.login = None

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT, counted toward max_recipients whatever its answer (a refused or
        unparsable recipient too), so a transaction cannot probe without end."""
        relay = self.relay
        envelope = self.envelope
        if envelope is not None and envelope.mail_from is not None:  # else aiosmtpd's 503
            relay.rcpts += 1
            if relay.rcpts > self.relay_handler.settings.max_recipients:
                await self.push(replies.TOO_MANY_RECIPIENTS)
                return
            relay.admitted = _admit_path(arg or "", self.relay_handler.default_region)
            if isinstance(relay.admitted, str):  # admission's words, as on every front end
                await self.push(relay.admitted)
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
            table = self.relay_handler.table
            self.ticket = table.admit_transport(transport, refusal=TOO_MANY_CONNECTIONS, idle=False)
            if self.ticket is None:
                return
        super().connection_made(transport)
        self.relay_handler.connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        """Give the upstream connection back (with RSET) when the client goes away."""
        if self.ticket is None:
            return  # refused at connection_made: aiosmtpd never started on it
        self.ticket.release()
        super().connection_lost(error)
        self.relay_handler.connections.discard(self)
        self.relay_handler.abandon(self.relay)


class RelayHandler:
    """aiosmtpd handler hooks: authentication, decisions at RCPT, relay at DATA."""

    def __init__(
        self,
        settings: SmtpSettings,
        service: Service,
        accounts: AccountBook,
        pool: UpstreamPool,
        *,
        default_region: str | None,
        oneclick: OneClick | None = None,
        intake_only: bool = False,
        gate: LoginGate | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.accounts = accounts
        self.pool = pool
        self.default_region = default_region
        self.oneclick = oneclick
        """Opt-out intake and DKIM signing; None when neither is configured."""
        self.intake_only = intake_only
        """The `smtp.unsubscribe_listen` listener: no login, only unsubscribe recipients."""
        self.gate = gate or LoginGate()
        """The process's login gate (per-address back-off after failed logins)."""
        self.table = ConnectionTable("smtp.unsubscribe" if intake_only else "smtp", settings.limits)
        """This listener's connections, within its caps."""
        self.connections: set[RelaySMTP] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()

    # ---- session -------------------------------------------------------------

    async def handle_exception(self, error: Exception) -> str:
        """A command that raised: 501 when aiosmtpd (or the email parser under it)
        could not parse the client's input, 451 when filterd's own code failed
        (a fault of ours must not bounce mail); never the exception's text (it
        may hold an address). A failed TLS handshake is the client's (logged at
        info; aiosmtpd then closes the connection)."""
        if isinstance(error, TLSSetupException):
            cause = error.__cause__ or error
            log.info("smtp_tls_failed", error=type(cause).__name__)
            return "454 4.7.0 TLS not available due to temporary reason"
        ours = any(
            frame.f_code.co_filename.startswith(_PACKAGE_DIR) and frame.f_code is not _PATH_READER
            for frame, _ in traceback.walk_tb(error.__traceback__)
        )
        if not ours and isinstance(error, (ValueError, IndexError, UnicodeError)):
            log.info("smtp_command_unparsable", error=type(error).__name__)
            return "501 5.5.4 syntax error in parameters"
        log.error("smtp_internal_error", error=type(error).__name__)
        return "451 4.3.0 internal error, try again later"

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """AUTH PLAIN/LOGIN against [[smtp.accounts]] (in memory, constant time)."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = auth_data.login.decode("utf-8", "replace")
        account = self.accounts.authenticate(
            username, auth_data.password.decode("utf-8", "replace")
        )
        peer = _peer(session)
        log.info("auth", username=username, ok=account is not None, peer=peer)
        login = server.login if isinstance(server, RelaySMTP) else None
        if account is None:
            if login is not None:
                login.failed()
            return AuthResult(success=False, handled=False)
        if login is not None:
            login.succeeded()
        return AuthResult(success=True, auth_data=account)

    async def handle_EHLO(
        self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        """Advertise PIPELINING too; a new EHLO ends any open transaction."""
        session.host_name = hostname  # the 5-argument hook must record it itself
        await self._end_transaction(server.relay)
        if self.intake_only:  # no login there: do not advertise one
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:  # fmt: skip
        """Choose the account (login or network) or refuse with 530 5.7.0; on the
        unsubscribe listener anyone may go on (its RCPTs take only unsubscribe
        addresses)."""
        relay = server.relay
        account = session.auth_data if session.authenticated else None
        if not isinstance(account, SmtpAccount):
            account = self.accounts.by_address(_peer(session))
        if self.intake_only:
            account = None  # nothing is relayed from this listener, login or not
        elif account is None:
            return replies.AUTH_REQUIRED
        null_path = address in ("<>", "")  # bounces (RFC 5321 4.5.5)
        problem = None if null_path else unusable(address)
        if problem is not None:
            return f"553 5.1.7 sender address not accepted: {problem}"
        await self._end_transaction(relay)
        relay.account = account
        relay.utf8 = "SMTPUTF8" in mail_options
        relay.transaction = secrets.token_hex(8)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    # ---- RCPT: the decision, then the upstream ----------------------------------

    async def handle_RCPT(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        """Decide this recipient; if delivered, open it at the upstream too."""
        relay = server.relay
        if self.oneclick is not None and relay.transaction:
            token = self.oneclick.intake_token(address)
            if token is not None:
                return self._take_optout(relay, envelope, address, token)
        if self.intake_only:
            return f"550 5.7.1 <{shown(address)}>: this address takes unsubscribe mail only"
        recipient = await self._admit(relay, envelope, address)
        if isinstance(recipient, str):
            return recipient
        reply = await self._upstream_rcpt(relay, envelope, address)
        if not reply.ok:
            self.service.metrics.upstream_error("smtp", f"rcpt_{reply.code // 100}xx")
            log.info(
                "upstream_refused_recipient",
                recipient=mask(recipient.canonical),
                reply=reply.line(),
            )
            return reply.line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        relay.addresses.append(recipient)
        return "250 2.1.5 OK"

    def _take_optout(self, relay: RelayState, envelope: Envelope, address: str, token: str) -> str:
        """An unsubscribe recipient: check its token now, record it at DATA."""
        assert self.oneclick is not None  # noqa: S101 - the caller checked
        wanted = self.oneclick.verify(token)
        if wanted is None:
            return BAD_UNSUBSCRIBE_ADDRESS.format(address=shown(address))
        relay.optouts.append(wanted)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _admit(self, relay: RelayState, envelope: Envelope, address: str) -> Address | str:
        """The normalised recipient if it may be sent to, else the reply that refuses it."""
        account = relay.account
        if account is None:
            return replies.AUTH_REQUIRED
        limited = self._envelope_limit(relay, envelope, account)
        if limited is not None:
            return limited
        admitted = relay.admitted
        if isinstance(admitted, tuple) and admitted[0] == address:
            recipient: Address | Refused = admitted[1]  # admitted at the RCPT command
        else:
            recipient = email_recipient(address, self.default_region)
        if isinstance(recipient, Refused):
            return replies.BAD_ADDRESS.format(address=recipient.shown, reason=recipient.reason)
        if account.stream is MessageClass.COMMERCIAL:
            decisions = await self.service.screen(
                account.sender,
                MessageClass.COMMERCIAL,
                [recipient],
                origin="smtp",
                message_id=relay.transaction,
            )
            refusal = replies.for_decision(decisions[0], address)
            if refusal is not None:
                return refusal
        return recipient

    def _envelope_limit(
        self, relay: RelayState, envelope: Envelope, account: SmtpAccount
    ) -> str | None:
        """452 when this transaction may take no more recipients, else None."""
        signing = self.oneclick is not None and self.oneclick.signs
        if signing and account.stream is MessageClass.COMMERCIAL and relay.addresses:
            return _ONE_PER_SIGNED_MESSAGE
        return None

    async def _upstream_rcpt(
        self, relay: RelayState, envelope: Envelope, address: str
    ) -> UpstreamReply:
        if relay.upstream is None:
            opened = await self._open_upstream(relay, envelope)
            if opened is not None:
                return opened
        assert relay.upstream is not None  # noqa: S101 - set by _open_upstream
        return await relay.upstream.rcpt(address, relay.utf8)

    async def _open_upstream(self, relay: RelayState, envelope: Envelope) -> UpstreamReply | None:
        """Borrow a connection and send MAIL FROM; the failing reply, or None."""
        options = [o for o in envelope.mail_options if not o.upper().startswith("SIZE=")]
        for _attempt in (1, 2):  # a pooled connection may have gone stale: one retry
            connection = await self.pool.acquire()
            if isinstance(connection, UpstreamReply):
                return connection
            sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
            try:
                reply = await connection.mail(sender, options, relay.utf8)
            except BaseException:
                connection.close()  # cancelled mid-command: its state is unknown
                raise
            if reply.ok:
                relay.upstream = connection
                return None
            stale = connection.broken
            connection.close()  # a refused MAIL may leave a transaction open: never reuse
            await self.pool.release(connection)
            if not stale:
                return reply
        return reply

    # ---- DATA --------------------------------------------------------------------

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        """Record opt-outs, then relay the message; answer with the upstream's reply."""
        relay = server.relay
        content: bytes = envelope.original_content or b""
        if b"\0" in content:
            await self._end_transaction(relay)
            return _NUL_IN_MESSAGE
        account = relay.account
        reply: UpstreamReply | None = None
        try:
            if relay.optouts:
                taken = await self._record_optouts(relay, _peer(session))
                if taken is not None:
                    return taken
            commercial = account is not None and account.stream is MessageClass.COMMERCIAL
            if account is not None and account.stream is MessageClass.TRANSACTIONAL:
                signals = commercial_signals(content)
                if signals:
                    refusal = await self._upgrade(relay, envelope, account, signals)
                    if refusal is not None:
                        return refusal
                    commercial = True
            upstream = relay.upstream
            if upstream is None:
                return "451 4.3.0 no open upstream transaction, try again"
            if commercial and account is not None and self.oneclick is not None:
                content = await self._signed(content, account.sender, relay.addresses)
            try:
                reply = await upstream.data(content)
            except BaseException:
                upstream.close()  # interrupted mid-DATA: never reuse this connection
                raise
        finally:
            # after a 250 the transaction is over; after a refusal (of the DATA command
            # itself, say) it may still be open at the upstream: RSET before reuse
            await self._end_transaction(relay, reset=reply is None or not reply.ok)
        if not reply.ok:
            self.service.metrics.upstream_error("smtp", f"data_{reply.code // 100}xx")
        log.info("relayed" if reply.ok else "upstream_refused_message",
                 sender=account.sender if account else None, recipients=len(envelope.rcpt_tos),
                 transaction=relay.transaction, reply=reply.line())  # fmt: skip
        return reply.line()

    async def _record_optouts(self, relay: RelayState, peer: str) -> str | None:
        """Write every unsubscribe of this transaction durably; the reply that ends
        the transaction (250 when nothing is left to relay, 451 when the registry
        cannot take them), or None to go on relaying."""
        assert self.oneclick is not None  # noqa: S101 - optouts need it
        try:
            for wanted in relay.optouts:
                await self.oneclick.record(wanted, peer)
        except RegistryUnavailable as exc:
            log.warning("unsubscribe_deferred", error=str(exc), origin="mailto")
            await self._end_transaction(relay)
            return replies.UNAVAILABLE
        relay.optouts = []
        if relay.upstream is None and not relay.addresses:
            await self._end_transaction(relay)
            return UNSUBSCRIBED
        return None

    async def _signed(self, content: bytes, sender: str, recipients: list[Address]) -> bytes:
        """The message signed (with one-click headers) when [dkim] is set; as it was
        if signing fails (logged), since refusing it would not help the consumer."""
        assert self.oneclick is not None  # noqa: S101 - the caller checked
        try:
            return await self.oneclick.sign(content, sender, recipients)
        except SigningError as exc:
            log.warning("dkim_not_signed", sender=sender, error=str(exc))
        except Exception as exc:  # a signing fault must not lose the message
            log.error("dkim_not_signed", sender=sender, error=type(exc).__name__)
        return content

    async def _upgrade(
        self, relay: RelayState, envelope: Envelope, account: SmtpAccount, signals: list[str]
    ) -> str | None:
        """The service's upgrade rule (one read); keep the permitted recipients."""
        upgrade = await self.service.upgrade(
            account.sender, relay.addresses, signals,
            origin="smtp", message_id=relay.transaction,
        )  # fmt: skip
        if upgrade.deferred:
            await self._end_transaction(relay)
            return replies.UNAVAILABLE
        pairs = list(zip(envelope.rcpt_tos, relay.addresses, strict=True))
        keep = [pairs[index] for index in upgrade.keep]
        if not keep:
            await self._end_transaction(relay)
            return replies.ALL_DROPPED
        if len(keep) == len(relay.addresses):
            return None
        # Some were dropped: redo the upstream transaction with the rest only. If the
        # upstream now refuses one of them, the whole message gets that answer (a 4xx
        # first), never a 250 that silently leaves a permitted recipient out.
        await self._end_transaction(relay)
        envelope.rcpt_tos = []
        relay.addresses = []
        failures = []
        for address, recipient in keep:
            reply = await self._upstream_rcpt(relay, envelope, address)
            if not reply.ok:
                failures.append(reply)
                break
            envelope.rcpt_tos.append(address)
            relay.addresses.append(recipient)
        if failures:
            await self._end_transaction(relay)
            worst = min(failures, key=lambda r: (r.code >= 500, r.code))
            return worst.line()
        return None

    # ---- ending transactions --------------------------------------------------------

    async def handle_RSET(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        """RSET ends the upstream transaction too."""
        await self._end_transaction(server.relay)
        return "250 2.0.0 OK"

    async def _end_transaction(self, relay: RelayState, *, reset: bool = True) -> None:
        """Give the upstream connection back (RSET first unless DATA just ended it)."""
        connection = relay.upstream
        relay.addresses = []
        relay.optouts = []
        relay.rcpts = 0
        if connection is None:
            self._ended.set()
            return
        try:
            if reset and not connection.broken:
                reply = await connection.rset()
                if not reply.ok:
                    connection.close()
        except BaseException:
            relay.upstream = None
            connection.close()  # cancelled mid-RSET: never reuse it
            raise
        relay.upstream = None
        await self.pool.release(connection)
        self._ended.set()

    def abandon(self, relay: RelayState) -> None:
        """The client went away, perhaps mid-command: close its upstream connection
        (its state is unknown, so it is not reused) and end the transaction."""
        if relay.upstream is None:
            return
        relay.upstream.close()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to clean
            task = asyncio.get_running_loop().create_task(self._end_transaction(relay))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    def busy(self) -> int:
        """Connections with a transaction open: an upstream one, or opt-outs not yet
        written (for draining)."""
        return sum(1 for c in self.connections if c.relay.upstream is not None or c.relay.optouts)

    async def drained(self) -> None:
        """Return once no transaction is open (new ones cannot start: listener closed)."""
        while self.busy():
            self._ended.clear()
            await self._ended.wait()

    def close_all(self) -> None:
        """Close every client connection (end of a drain)."""
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """The STARTTLS context of the listener, when tls_cert/tls_key are set."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_smtp_server(
    settings: SmtpSettings, listen: tuple[str, int], handler: RelayHandler, *, hostname: str
) -> asyncio.Server:
    """Listen on `listen`; every connection gets a RelaySMTP.

    With several workers every process listens on the same port (SO_REUSEPORT)
    and the kernel spreads connections over them. The unsubscribe listener
    (`handler.intake_only`) offers no AUTH and needs no STARTTLS (mailbox
    providers deliver there as to any MX; STARTTLS is still offered).
    """
    context = tls_context(settings)
    intake = handler.intake_only

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            hostname=hostname,
            ident="filterd ESMTP",
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=context,
            require_starttls=context is not None and not intake,
            auth_required=False,
            auth_require_tls=context is not None,
            authenticator=None if intake else handler.authenticate,
            auth_exclude_mechanism=["LOGIN", "PLAIN"] if intake else None,
            timeout=settings.limits.idle_timeout_s,
        )

    host, port = listen
    return await asyncio.get_running_loop().create_server(
        factory, host, port, reuse_port=settings.workers > 1 or None
    )


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
"""filterd's own source directory (to tell our faults from the client's bad input)."""
_PATH_READER = RelaySMTP._getaddr.__code__
"""Not a fault of ours when aiosmtpd's path parser fails under it: bad input."""
_ONE_PER_SIGNED_MESSAGE = "452 4.5.3 one recipient per message: send the others separately"
_NUL_IN_MESSAGE = "550 5.6.0 message contains a NUL byte, which mail text may not hold"
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


_RCPT_PATH = re.compile(r"\s*TO:\s*<([^<>]*)>", re.IGNORECASE)


def _admit_path(arg: str, default_region: str | None) -> tuple[str, Address] | str | None:
    """Admission of RCPT's `TO:<path>`: (path, address) when admitted, the 553 reply
    (the same words as every other front end's) when refused, None when the argument
    is not of that form (aiosmtpd's own parser then answers)."""
    match = _RCPT_PATH.match(arg)
    if match is None:
        return None
    path = match.group(1)
    verdict = email_recipient(path, default_region)
    if isinstance(verdict, Refused):
        return replies.BAD_ADDRESS.format(address=verdict.shown, reason=verdict.reason)
    return path, verdict


def _peer(session: Session) -> str:
    peer: Any = session.peer  # (host, port) from the transport
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")
