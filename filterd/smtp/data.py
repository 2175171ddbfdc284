"""DATA of an SMTP relay transaction: the message goes to the upstream and the
client gets the upstream's reply, 250 only after the upstream accepted it.
Nothing is spooled.

Before that: a message with a NUL byte is refused (550 5.6.0: mail text may not
hold NUL, RFC 5322 §2.3); the transaction's opt-outs are written durably (451
when the registry cannot take them; 250 "unsubscribed" when nothing else is
left to relay). A transactional account's message with commercial signals
(signals.py) is upgraded: all its recipients are judged at once; those without
permission are dropped (and audited), the upstream transaction is redone for
the rest, and if none remain the message is refused with 550 5.7.1. A
commercial message then gets its way to cancel checked (smtp/cancel.py: the
one-click headers added, or 550 5.7.1 without them) and, with `[dkim]`, is
signed before it goes upstream.

On the unsubscribe listener, a message to `smtp.feedback_address` is a
feedback report (smtp/complaints.py): 550 5.6.0 when it is not one, else 250
once its complaint is recorded or audited (451 when the registry cannot take
it); nothing is relayed.
"""

from __future__ import annotations

import asyncio

from filterd import replies
from filterd.errors import RegistryUnavailable
from filterd.logs import get_logger
from filterd.model import MessageClass, Reason
from filterd.normalize import mask_text
from filterd.service import Service
from filterd.settings import CancelMethod, SmtpAccount
from filterd.smtp.cancel import NO_LIST_UNSUBSCRIBE, ONE_PER_MESSAGE, MailCancel, mail_cancel
from filterd.smtp.complaints import NOT_A_REPORT, REPORT_TAKEN, Complaints
from filterd.smtp.feedback import read_report
from filterd.smtp.oneclick import UNSUBSCRIBED, OneClick
from filterd.smtp.outbound import UpstreamReply
from filterd.smtp.signals import commercial_signals, header_fields
from filterd.smtp.transaction import EnvelopeView, RelayState, Transactions

log = get_logger("smtp")


class DataStage:
    """DATA of one listener's transactions."""

    def __init__(
        self,
        service: Service,
        transactions: Transactions,
        oneclick: OneClick | None = None,
        cancel_method: CancelMethod | None = None,
        complaints: Complaints | None = None,
    ) -> None:
        self.service = service
        self.transactions = transactions
        self.oneclick = oneclick
        """Opt-out intake, one-click headers and DKIM signing; None when not configured."""
        self.cancel_method = cancel_method
        """[compliance] cancel_method; None without the table (smtp/cancel.py)."""
        self.complaints = complaints
        """smtp.feedback_address, on the unsubscribe listener only; None without it."""

    async def relay_message(self, relay: RelayState, envelope: EnvelopeView, peer: str) -> str:
        """Record opt-outs, then relay the message; answer with the upstream's reply."""
        content: bytes = envelope.original_content or b""
        if b"\0" in content:
            await self.transactions.end(relay)
            return _NUL_IN_MESSAGE
        if relay.feedback:
            return await self._take_report(relay, content, peer)
        return await self._relay(relay, envelope, content, peer)

    async def _relay(
        self, relay: RelayState, envelope: EnvelopeView, content: bytes, peer: str
    ) -> str:
        """Record the transaction's opt-outs, judge and relay its message."""
        account = relay.account
        reply: UpstreamReply | None = None
        try:
            if relay.optouts:
                taken = await self._record_optouts(relay, peer)
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
            if commercial and account is not None:
                outgoing = await self._outgoing(content, account.sender, relay)
                if isinstance(outgoing, str):
                    return outgoing
                content = outgoing
            try:
                reply = await upstream.data(content)
            except BaseException:
                upstream.close()  # interrupted mid-DATA: never reuse this connection
                raise
        finally:
            # after a 250 the transaction is over; after a refusal (of the DATA command
            # itself, say) it may still be open at the upstream: RSET before reuse
            await self.transactions.end(relay, reset=reply is None or not reply.ok)
        if not reply.ok:
            self.service.metrics.upstream_error("smtp", f"data_{reply.code // 100}xx")
        log.info("relayed" if reply.ok else "upstream_refused_message",
                 sender=account.sender if account else None, recipients=len(envelope.rcpt_tos),
                 transaction=relay.transaction, reply=mask_text(reply.line()))  # fmt: skip
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
            await self.transactions.end(relay)
            return replies.UNAVAILABLE
        relay.optouts = []
        if relay.upstream is None and not relay.addresses:
            await self.transactions.end(relay)
            return UNSUBSCRIBED
        return None

    async def _take_report(self, relay: RelayState, content: bytes, peer: str) -> str:
        """A message to the feedback address: 550 5.6.0 when it is not a report;
        else its complaint (and the transaction's other opt-outs) recorded durably,
        or audited as unmatched, before the 250 (451 when the registry cannot)."""
        assert self.complaints is not None  # noqa: S101 - feedback needs it
        # parsing a message of up to max_message_size must not hold up the other clients
        report = await asyncio.to_thread(read_report, content)
        if report is None:
            await self.transactions.end(relay)
            return NOT_A_REPORT
        try:
            if relay.optouts:
                taken = await self._record_optouts(relay, peer)
                if taken == replies.UNAVAILABLE:
                    return taken
            await self.complaints.take(report, peer, message_id=relay.transaction)
        except RegistryUnavailable as exc:
            log.warning("complaint_deferred", error=str(exc), origin="complaint")
            return replies.UNAVAILABLE
        finally:
            await self.transactions.end(relay)
        return REPORT_TAKEN

    async def _outgoing(self, content: bytes, sender: str, relay: RelayState) -> bytes | str:
        """A commercial message as it goes upstream (its way to cancel added, signed),
        or the 550 that refuses it for want of one (smtp/cancel.py)."""
        signing = self.oneclick is not None and self.oneclick.signs
        if not signing and self.cancel_method in (None, CancelMethod.OFF):
            return content  # nothing to check, add or sign: the header is not even read
        action = mail_cancel(
            header_fields(content), self.cancel_method, len(relay.addresses), signing=signing
        )
        if action is MailCancel.REFUSE:
            self.service.refuse(
                sender, relay.addresses, Reason.NO_CANCEL_METHOD,
                origin="smtp", message_id=relay.transaction,
            )  # fmt: skip
            several = len(relay.addresses) > 1 and self.cancel_method is CancelMethod.ADD
            return NO_LIST_UNSUBSCRIBE + (ONE_PER_MESSAGE if several else "")
        if self.oneclick is None:
            return content
        return await self.oneclick.outgoing(
            content, sender, relay.addresses, add=action is MailCancel.ADD
        )

    async def _upgrade(
        self, relay: RelayState, envelope: EnvelopeView, account: SmtpAccount, signals: list[str]
    ) -> str | None:
        """The service's upgrade rule (one read); keep the permitted recipients."""
        upgrade = await self.service.upgrade(
            account.sender, relay.addresses, signals,
            origin="smtp", message_id=relay.transaction,
        )  # fmt: skip
        if upgrade.deferral is not None:  # the whole message waits (registry, quiet hours)
            index, decision = upgrade.deferral
            deferred = replies.for_decision(decision, relay.paths[index]) or replies.UNAVAILABLE
            await self.transactions.end(relay)
            return deferred
        # the relayable recipients only: unsubscribe+TOKEN ones are in rcpt_tos too
        pairs = list(zip(relay.paths, relay.addresses, strict=True))
        keep = [pairs[index] for index in upgrade.keep]
        if not keep:
            await self.transactions.end(relay)
            return replies.ALL_DROPPED
        if len(keep) == len(relay.addresses):
            return None
        # Some were dropped: redo the upstream transaction with the rest only. If the
        # upstream now refuses one of them, the whole message gets that answer (a 4xx
        # first), never a 250 that silently leaves a permitted recipient out.
        await self.transactions.end(relay)
        envelope.rcpt_tos = []
        failures = []
        for address, recipient in keep:
            reply = await self.transactions.rcpt(relay, envelope, address)
            if not reply.ok:
                failures.append(reply)
                break
            envelope.rcpt_tos.append(address)
            relay.addresses.append(recipient)
            relay.paths.append(address)
        if failures:
            await self.transactions.end(relay)
            worst = min(failures, key=lambda r: (r.code >= 500, r.code))
            return worst.line()
        return None


_NUL_IN_MESSAGE = "550 5.6.0 message contains a NUL byte, which mail text may not hold"
