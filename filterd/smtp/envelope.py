"""The envelope of an SMTP relay transaction: who may send (MAIL) and, per
recipient (RCPT), admission, the consent decision and the upstream's RCPT.

MAIL: the account comes from the login or from the client's address in an
account's `networks`; otherwise 530 5.7.0. On the unsubscribe listener anyone
may go on (nothing is relayed from there). Addresses are checked before
anything uses them: bytes that are not UTF-8, spaces or control characters get
553 (never a crash or a 500); the null reverse-path `<>` is passed upstream as
such.

RCPT: every RCPT of a transaction, refused or not, counts toward
`max_recipients`. The recipient is admitted (the same 553 words as every other
front end), a commercial account's recipient is decided (one registry read),
then the same RCPT goes to the upstream in real time, so an upstream refusal
reaches the client as that recipient's reply. Recipients
`unsubscribe+TOKEN@{unsubscribe_domain}` are opt-outs: their token is checked
here and they are recorded at DATA, never relayed. When filterd adds one-click
headers (`[compliance] cancel_method = "add"`, or `[dkim]`) a commercial
transaction carries one recipient (452 4.5.3 for more: the token names one
consumer). On the unsubscribe listener `smtp.feedback_address` is taken too:
its message is read as a feedback report at DATA (smtp/complaints.py).
"""

from __future__ import annotations

import re
import secrets

from filterd import replies
from filterd.accounts import AccountBook
from filterd.admission import Refused, email_recipient, shown, unusable
from filterd.logs import get_logger
from filterd.model import Address, MessageClass
from filterd.normalize import mask, mask_text
from filterd.service import Service
from filterd.settings import SmtpAccount
from filterd.smtp.complaints import Complaints
from filterd.smtp.oneclick import BAD_UNSUBSCRIBE_ADDRESS, OneClick
from filterd.smtp.transaction import EnvelopeView, RelayState, Transactions

log = get_logger("smtp")


class EnvelopeStage:
    """MAIL and RCPT of one listener's transactions."""

    def __init__(
        self,
        service: Service,
        accounts: AccountBook,
        transactions: Transactions,
        *,
        max_recipients: int,
        default_region: str | None,
        oneclick: OneClick | None = None,
        intake_only: bool = False,
        one_per_message: bool = False,
        complaints: Complaints | None = None,
    ) -> None:
        self.service = service
        self.accounts = accounts
        self.transactions = transactions
        self.max_recipients = max_recipients
        self.default_region = default_region
        self.oneclick = oneclick
        """Opt-out intake and DKIM signing; None when neither is configured."""
        self.intake_only = intake_only
        """The `smtp.unsubscribe_listen` listener: no login, only unsubscribe recipients."""
        self.one_per_message = one_per_message
        """A commercial transaction takes one recipient (452 4.5.3 to the others): the
        one-click headers filterd adds (cancel_method add, or [dkim]) name one consumer."""
        self.complaints = complaints
        """smtp.feedback_address, on the unsubscribe listener only; None without it."""

    async def mail(
        self, relay: RelayState, envelope: EnvelopeView, address: str, mail_options: list[str],
        *, login: object, peer: str,
    ) -> str:  # fmt: skip
        """Choose the account (`login`, else the client's network) or refuse with
        530 5.7.0; on the unsubscribe listener anyone may go on (its RCPTs take only
        unsubscribe addresses)."""
        account = login if isinstance(login, SmtpAccount) else self.accounts.by_address(peer)
        if self.intake_only:
            account = None  # nothing is relayed from this listener, login or not
        elif account is None:
            return replies.AUTH_REQUIRED
        null_path = address in ("<>", "")  # bounces (RFC 5321 4.5.5)
        problem = None if null_path else unusable(address)
        if problem is not None:
            return f"553 5.1.7 sender address not accepted: {problem}"
        await self.transactions.end(relay)
        relay.account = account
        relay.utf8 = "SMTPUTF8" in mail_options
        relay.transaction = secrets.token_hex(8)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    def before_rcpt(self, relay: RelayState, arg: str) -> str | None:
        """A RCPT command inside a transaction, before its path is parsed: count it
        (so a transaction cannot probe without end) and admit its path; the reply
        that refuses it, or None to go on."""
        relay.rcpts += 1
        if relay.rcpts > self.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        relay.admitted = admit_path(arg, self.default_region)
        if isinstance(relay.admitted, str):  # admission's words, as on every front end
            return relay.admitted
        return None

    async def rcpt(
        self, relay: RelayState, envelope: EnvelopeView, address: str, rcpt_options: list[str]
    ) -> str:
        """Decide this recipient; if delivered, open it at the upstream too."""
        if self.oneclick is not None and relay.transaction:
            token = self.oneclick.intake_token(address)
            if token is not None:
                return self._take_optout(relay, envelope, address, token)
        complaints = self.complaints
        if complaints is not None and relay.transaction and complaints.is_feedback_address(address):
            relay.feedback = True  # its message is read at DATA
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        if self.intake_only:
            return f"550 5.7.1 <{shown(address)}>: this address takes unsubscribe mail only"
        recipient = await self._admit(relay, address)
        if isinstance(recipient, str):
            return recipient
        reply = await self.transactions.rcpt(relay, envelope, address)
        if not reply.ok:
            self.service.metrics.upstream_error("smtp", f"rcpt_{reply.code // 100}xx")
            log.info(
                "upstream_refused_recipient",
                recipient=mask(recipient.canonical),
                reply=mask_text(reply.line()),  # upstreams name the address
            )
            return reply.line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        relay.addresses.append(recipient)
        relay.paths.append(address)
        return "250 2.1.5 OK"

    def _take_optout(
        self, relay: RelayState, envelope: EnvelopeView, address: str, token: str
    ) -> str:
        """An unsubscribe recipient: check its token now, record it at DATA."""
        assert self.oneclick is not None  # noqa: S101 - the caller checked
        wanted = self.oneclick.verify(token)
        if wanted is None:
            return BAD_UNSUBSCRIBE_ADDRESS.format(address=shown(address))
        relay.optouts.append(wanted)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _admit(self, relay: RelayState, address: str) -> Address | str:
        """The normalised recipient if it may be sent to, else the reply that refuses it."""
        account = relay.account
        if account is None:
            return replies.AUTH_REQUIRED
        limited = self._envelope_limit(relay, account)
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

    def _envelope_limit(self, relay: RelayState, account: SmtpAccount) -> str | None:
        """452 when this transaction may take no more recipients, else None."""
        if self.one_per_message and account.stream is MessageClass.COMMERCIAL and relay.addresses:
            return _ONE_PER_SIGNED_MESSAGE
        return None


def admit_path(arg: str, default_region: str | None) -> tuple[str, Address] | str | None:
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


_ONE_PER_SIGNED_MESSAGE = "452 4.5.3 one recipient per message: send the others separately"
_RCPT_PATH = re.compile(r"\s*TO:\s*<([^<>]*)>", re.IGNORECASE)
