"""The inbound leg: aiosmtpd's handler hooks of one SMTP relay listener.

Marketing tools submit here. Per connection the account comes from AUTH
(PLAIN/LOGIN against [[smtp.accounts]]; after STARTTLS when TLS is configured)
or from the client's address in an account's `networks`; otherwise MAIL gets
530 5.7.0. Each hook hands its command to the collaborators the handler is
given: the envelope stage (MAIL, RCPT: envelope.py), the DATA stage (data.py),
and the transactions' upstream leg (transaction.py); connection.py is the
protocol side (caps, login gate, path parsing), listener.py the listening
socket. EHLO advertises PIPELINING; EHLO, MAIL and RSET end an open
transaction. A command that fails gets 501 when the client's input could not
be parsed, 451 when filterd's own code failed, never the exception's text.

Email opt-outs (oneclick.py): recipients `unsubscribe+TOKEN@{unsubscribe_domain}`
are never relayed; their refusals are written durably before DATA's 250. On
the relay listener they are taken from logged-in clients like any recipient
(MAIL without an account is 530, SPEC §4); on `smtp.unsubscribe_listen` from
anyone, and nothing else is taken there (no AUTH is offered on it) but
feedback reports to `smtp.feedback_address` (complaints.py).
"""

from __future__ import annotations

import inspect
import traceback
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from filterd.accounts import AccountBook
from filterd.guard import LoginGate, peer_host
from filterd.logs import get_logger
from filterd.smtp.connection import Connections, RelaySMTP, hook_names
from filterd.smtp.data import DataStage
from filterd.smtp.envelope import EnvelopeStage
from filterd.smtp.transaction import Transactions

log = get_logger("smtp")


class RelayHandler:
    """aiosmtpd handler hooks of one listener: authentication, and each command
    handed to the envelope stage, the DATA stage or the transactions."""

    def __dir__(self) -> list[str]:
        """Only the hook names aiosmtpd looks for on every connection (see RelaySMTP)."""
        return hook_names(type(self))

    def __init__(
        self,
        envelope_stage: EnvelopeStage,
        data_stage: DataStage,
        transactions: Transactions,
        connections: Connections,
        *,
        accounts: AccountBook,
        gate: LoginGate,
    ) -> None:
        self.envelope_stage = envelope_stage
        self.data_stage = data_stage
        self.transactions = transactions
        self.connections = connections
        """This listener's client connections (caps, draining)."""
        self.accounts = accounts
        self.gate = gate
        """The process's login gate (per-address back-off after failed logins)."""

    @property
    def intake_only(self) -> bool:
        """The `smtp.unsubscribe_listen` listener: no login, only unsubscribe recipients."""
        return self.envelope_stage.intake_only

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
        peer = peer_host(session.peer)
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
        await self.transactions.end(server.relay)
        if self.intake_only:  # no login there: do not advertise one
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    # aiosmtpd reads this hook's signature on every new connection (to tell its old
    # 4-argument form): given once here, it is not worked out again each time
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)  # type: ignore[attr-defined]

    async def handle_MAIL(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:  # fmt: skip
        """The sender and its account (the envelope stage)."""
        login = session.auth_data if session.authenticated else None
        peer = peer_host(session.peer)
        return await self.envelope_stage.mail(
            server.relay, envelope, address, mail_options, login=login, peer=peer
        )

    async def handle_RCPT(
        self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        """Decide this recipient; if delivered, open it at the upstream too."""
        return await self.envelope_stage.rcpt(server.relay, envelope, address, rcpt_options)

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        """Record opt-outs, then relay the message; answer with the upstream's reply."""
        return await self.data_stage.relay_message(server.relay, envelope, peer_host(session.peer))

    async def handle_RSET(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        """RSET ends the upstream transaction too."""
        await self.transactions.end(server.relay)
        return "250 2.0.0 OK"


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
"""filterd's own source directory (to tell our faults from the client's bad input)."""
_PATH_READER = RelaySMTP._getaddr.__code__
"""Not a fault of ours when aiosmtpd's path parser fails under it: bad input."""
