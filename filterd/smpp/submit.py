"""The submit_sm path: one decision per message, then the carrier.

Each submit_sm is decided (one registry read) and, if delivered, forwarded to
the carrier as received; the client gets the carrier's status, or:

| outcome              | submit_sm_resp status          |
|----------------------|--------------------------------|
| refused              | 0x00000400                     |
| no consent           | 0x00000401                     |
| registry unavailable | ESME_RTHROTTLED (0x58)         |
| carrier unavailable  | ESME_RMSGQFUL (0x14)           |
| invalid destination  | ESME_RINVDSTADR (0x0B)         |
| over the window      | ESME_RTHROTTLED (0x58)         |

(the window is the session's: `filterd.smpp.session`). All parts of a
concatenated message (UDH or SAR) get the decision of its first part. The
client's message id is filterd's own; the carrier's id maps to it in the
registry (`smpp.receipt_ttl`), so that its delivery receipts can be routed back
(`filterd.smpp.deliveries`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict

from filterd.admission import Refused, phone_recipient
from filterd.errors import RegistryUnavailable
from filterd.logs import get_logger
from filterd.model import Action, Address, Decision, Reason
from filterd.service import Service
from filterd.settings import SmppAccount
from filterd.smpp.carrier import CarrierClient, CarrierUnavailable
from filterd.smpp.pdu import GenericNack, Pdu, SubmitSm, response_to
from filterd.smpp.status import (
    ESME_RINVDSTADR,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    FILTERD_NO_CONSENT,
    FILTERD_REFUSED,
)
from filterd.smpp.text import concat_key
from filterd.storage.port import Registry

log = get_logger("smpp")

_CONCAT_TTL_S = 600.0
_CONCAT_MAX = 100_000
_STATUS = {
    Reason.REFUSED: FILTERD_REFUSED,
    Reason.NO_CONSENT: FILTERD_NO_CONSENT,
    Reason.REGISTRY_UNAVAILABLE: ESME_RTHROTTLED,
}


class Submitter:
    """Decides each client's submit_sm and forwards the delivered ones to the carrier."""

    def __init__(self, service: Service, registry: Registry, default_region: str | None) -> None:
        self.service = service
        self.registry = registry
        self.default_region = default_region
        self._decisions: OrderedDict[tuple[str, object], tuple[float, asyncio.Future[Decision]]] = (
            OrderedDict()
        )

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
        decision = await self._decide(account, pdu, address)
        if decision.action is not Action.DELIVER:
            status = _STATUS[decision.reason or Reason.NO_CONSENT]
            return response_to(pdu, status)
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
        try:
            await self.registry.remember_message(
                answer.message_id, account.system_id, client_id, receipt_ttl_s
            )
        except RegistryUnavailable as exc:  # sent already: only the receipt's route is lost
            log.warning("message_id_not_mapped", error=str(exc))
        return response_to(pdu, ESME_ROK, message_id=client_id)

    async def _decide(self, account: SmppAccount, pdu: SubmitSm, address: Address) -> Decision:
        """One decision per message: parts of a concatenated message share the first's
        (parts arriving together wait for the one lookup in flight)."""
        key = concat_key(pdu)
        if key is None:
            return await self._screen(account, pdu, address)
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
            decision = await self._screen(account, pdu, address)
        except BaseException as exc:
            self._decisions.pop(cache_key, None)
            future.set_exception(exc)
            future.exception()  # retrieved: later parts decide afresh
            raise
        future.set_result(decision)
        if decision.action is Action.DEFER:  # not a decision: the next part asks again
            self._decisions.pop(cache_key, None)
        return decision

    async def _screen(self, account: SmppAccount, pdu: SubmitSm, address: Address) -> Decision:
        decisions = await self.service.screen(
            account.sender,
            account.stream,
            [address],
            origin="smpp",
            message_id=f"{account.system_id}/{pdu.sequence_number}",
        )
        return decisions[0]
