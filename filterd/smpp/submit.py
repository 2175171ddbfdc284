"""The submit_sm path: one decision per message, the compliance rules on its text, then
the carrier.

Each submit_sm is decided (one registry read) and, if delivered, forwarded to
the carrier as received; the client gets the carrier's status, or:

| outcome                              | submit_sm_resp status          |
|--------------------------------------|--------------------------------|
| refused                              | 0x00000400                     |
| no consent                           | 0x00000401                     |
| no cancel instruction (none added)   | 0x00000402                     |
| no signature                         | 0x00000403                     |
| inside the recipient's quiet hours   | 0x00000404                     |
| registry unavailable                 | ESME_RTHROTTLED (0x58)         |
| carrier unavailable                  | ESME_RMSGQFUL (0x14)           |
| invalid destination                  | ESME_RINVDSTADR (0x0B)         |
| over the window                      | ESME_RTHROTTLED (0x58)         |

(the window is the session's: `filterd.smpp.session`). All parts of a
concatenated message (UDH or SAR) get the decision of its first part. The
client's message id is filterd's own; the carrier's id maps to it in the
registry (`smpp.receipt_ttl`), so that its delivery receipts can be routed back
(`filterd.smpp.deliveries`). The client is answered once the carrier has
accepted the submit_sm; the route is written behind the answer
(`filterd.routebook`).

Compliance (SPEC §7, `[compliance]`): quiet hours are the decision's
(`Service.screen` defers a commercial recipient inside them). A commercial
account's sender with a signature or a checked cancel text
(`filterd.smpp.compliance.SmsRules`) has its messages judged on their text
(`filterd.smpp.compliance.judge`, before the lookup): what the registry lets
through is then refused with 0x403 / 0x402 (one decision, drop with reason
`no_signature` / `no_cancel_method`, logged, counted and audited once; nothing
sent to the carrier), or sent, the last part with the cancel text appended
under "add". The parts of such a concatenated message
are held (`filterd.smpp.assembly`) until all are in: the message is then
decided once, judged on the text of all its parts and, if sent, every part
goes to the carrier in sequence order and each held submit_sm gets its own
part's answer. A message whose parts are not all in `hold_s` (20 s) after its
first is refused as its text cannot be checked (0x403 when a signature is
configured, else 0x402). Transactional accounts, and senders with nothing to
check, keep the path above.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import OrderedDict

from filterd.admission import Refused, phone_recipient
from filterd.logs import get_logger
from filterd.model import Action, Address, Decision, MessageClass, Reason
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import ComplianceSettings, SmppAccount
from filterd.smpp.assembly import Assembler
from filterd.smpp.carrier import CarrierClient, CarrierUnavailable
from filterd.smpp.compliance import SmsRules, judge
from filterd.smpp.pdu import GenericNack, Pdu, SubmitSm, response_to
from filterd.smpp.status import (
    ESME_RINVDSTADR,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    FILTERD_NO_CANCEL_METHOD,
    FILTERD_NO_CONSENT,
    FILTERD_NO_SIGNATURE,
    FILTERD_QUIET_HOURS,
    FILTERD_REFUSED,
)
from filterd.smpp.text import concat_key, concat_of

log = get_logger("smpp")

_CONCAT_TTL_S = 600.0
_CONCAT_MAX = 100_000
HOLD_S = 20.0
"""How long the parts of a concatenated message under text rules wait for the others."""
_STATUS = {
    Reason.REFUSED: FILTERD_REFUSED,
    Reason.NO_CONSENT: FILTERD_NO_CONSENT,
    Reason.NO_CANCEL_METHOD: FILTERD_NO_CANCEL_METHOD,
    Reason.NO_SIGNATURE: FILTERD_NO_SIGNATURE,
    Reason.QUIET_HOURS: FILTERD_QUIET_HOURS,
    Reason.REGISTRY_UNAVAILABLE: ESME_RTHROTTLED,
}


def _readdress(answer: Pdu, part: SubmitSm) -> Pdu:
    """The answer for a held part, under that submit_sm's sequence number."""
    return dataclasses.replace(answer, sequence_number=part.sequence_number)


class Submitter:
    """Decides each client's submit_sm and forwards the delivered ones to the carrier."""

    def __init__(
        self,
        service: Service,
        routes: RouteBook,
        default_region: str | None,
        compliance: ComplianceSettings | None = None,
        hold_s: float = HOLD_S,
    ) -> None:
        self.service = service
        self.routes = routes
        """The message routes of this process's submits (written behind the answers)."""
        self.default_region = default_region
        self.compliance = compliance
        self._rules: dict[str, SmsRules | None] = {}
        """[compliance]; None: no text rule applies."""
        self._decisions: OrderedDict[tuple[str, object], tuple[float, asyncio.Future[Decision]]] = (
            OrderedDict()
        )
        self._held: Assembler[SubmitSm, Pdu] = Assembler(hold_s, _readdress)

    def close(self) -> None:
        """Stopping: held concatenated messages are released now (incomplete: refused)."""
        self._held.close()

    def rules(self, account: SmppAccount) -> SmsRules | None:
        """The text rules on the account's messages: its sender's, for a commercial account."""
        if account.stream is not MessageClass.COMMERCIAL:
            return None
        if account.sender not in self._rules:  # [compliance] is read once, at start
            self._rules[account.sender] = SmsRules.of(self.compliance, account.sender)
        return self._rules[account.sender]

    async def submit(
        self,
        account: SmppAccount,
        pdu: SubmitSm,
        carrier: CarrierClient | None,
        receipt_ttl_s: int,
    ) -> Pdu:
        """Decide one submit_sm and forward it to `carrier`; the response for the client."""
        address = phone_recipient(pdu.destination_addr, pdu.dest_addr_ton, self.default_region)
        if isinstance(address, Refused):
            log.info("invalid_destination", system_id=account.system_id, reason=address.reason)
            return response_to(pdu, ESME_RINVDSTADR)
        rules = self.rules(account)
        concat = concat_of(pdu) if rules is not None else None
        if rules is not None and concat is not None:

            async def release(parts: list[SubmitSm], complete: bool) -> list[Pdu]:
                return await self._release(
                    account, address, rules, parts, complete,
                    carrier=carrier, receipt_ttl_s=receipt_ttl_s,
                )  # fmt: skip

            key = (account.system_id, concat_key(pdu))
            return await self._held.hold(key, concat, pdu, release)
        verdict = judge([pdu], rules) if rules is not None else None
        refused_by = verdict.refused if verdict is not None else None
        decision = await self._decide(account, pdu, address, refused_by)
        if decision.action is not Action.DELIVER:
            return response_to(pdu, _STATUS[decision.reason or Reason.NO_CONSENT])
        if verdict is not None and verdict.last is not None:
            pdu = verdict.last
        return await self._forward(account, pdu, carrier, receipt_ttl_s)

    async def _release(
        self,
        account: SmppAccount,
        address: Address,
        rules: SmsRules,
        parts: list[SubmitSm],
        complete: bool,
        *,
        carrier: CarrierClient | None,
        receipt_ttl_s: int,
    ) -> list[Pdu]:
        """A held message, its parts in sequence order: decided once, judged on its whole
        text, then every part forwarded; the answer for each part."""
        if not complete:
            log.info("concatenation_incomplete", system_id=account.system_id,
                     parts=len(parts))  # fmt: skip
            return self._refuse(account, parts, address, rules.unchecked)
        verdict = judge(parts, rules)
        decision = await self._screen(account, parts[0], address, verdict.refused)
        if decision.action is not Action.DELIVER:
            status = _STATUS[decision.reason or Reason.NO_CONSENT]
            return [response_to(part, status) for part in parts]
        if verdict.last is not None:
            parts = [*parts[:-1], verdict.last]
        return [await self._forward(account, part, carrier, receipt_ttl_s) for part in parts]

    def _refuse(
        self, account: SmppAccount, parts: list[SubmitSm], address: Address, reason: Reason
    ) -> list[Pdu]:
        """A held message that never arrived whole (its text cannot be judged): logged,
        counted and audited once, with no registry read; every part gets the status."""
        self.service.refuse(
            account.sender,
            [address],
            reason,
            origin="smpp",
            message_id=f"{account.system_id}/{parts[0].sequence_number}",
        )
        return [response_to(part, _STATUS[reason]) for part in parts]

    async def _forward(
        self,
        account: SmppAccount,
        pdu: SubmitSm,
        carrier: CarrierClient | None,
        receipt_ttl_s: int,
    ) -> Pdu:
        """Send one submit_sm to the carrier; the client's answer (filterd's message id)."""
        if carrier is None:
            self.service.metrics.upstream_error("smpp", "no_carrier")
            return response_to(pdu, ESME_RMSGQFUL)
        try:
            answer = await carrier.submit(pdu)
        except CarrierUnavailable as exc:
            log.warning("carrier_unavailable", error=str(exc), system_id=account.system_id)
            self.service.metrics.upstream_error("smpp", "unavailable")
            return response_to(pdu, ESME_RMSGQFUL)
        if answer.command_status != ESME_ROK or isinstance(answer, GenericNack):
            self.service.metrics.upstream_error("smpp", "refused")
            return response_to(pdu, answer.command_status or ESME_RSYSERR)
        client_id = secrets.token_hex(8)
        self.routes.add(answer.message_id, account.system_id, client_id, receipt_ttl_s)
        return response_to(pdu, ESME_ROK, message_id=client_id)

    async def _decide(
        self, account: SmppAccount, pdu: SubmitSm, address: Address, refused_by: Reason | None
    ) -> Decision:
        """One decision per message: parts of a concatenated message share the first's
        (parts arriving together wait for the one lookup in flight; such parts are
        never judged by a text rule, which holds them instead)."""
        key = concat_key(pdu)
        if key is None:
            return await self._screen(account, pdu, address, refused_by)
        cache_key = (account.system_id, key)
        now = time.monotonic()
        cached = self._decisions.get(cache_key)
        if cached is not None and now - cached[0] < _CONCAT_TTL_S:
            return await asyncio.shield(cached[1])
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._decisions[cache_key] = (now, future)
        while len(self._decisions) > _CONCAT_MAX:
            self._decisions.popitem(last=False)
        try:
            decision = await self._screen(account, pdu, address, refused_by)
        except BaseException as exc:
            self._decisions.pop(cache_key, None)
            future.set_exception(exc)
            future.exception()  # retrieved: later parts decide afresh
            raise
        future.set_result(decision)
        if decision.action is Action.DEFER:  # not a decision: the next part asks again
            self._decisions.pop(cache_key, None)
        return decision

    async def _screen(
        self, account: SmppAccount, pdu: SubmitSm, address: Address, refused_by: Reason | None
    ) -> Decision:
        """The one recorded decision (a failed text rule drops what the registry lets
        through)."""
        decisions = await self.service.screen(
            account.sender,
            account.stream,
            [address],
            origin="smpp",
            message_id=f"{account.system_id}/{pdu.sequence_number}",
            refused_by=refused_by,
        )
        return decisions[0]
