"""deliver_sm (and data_sm) from the carrier: delivery receipts routed back, and
consumers' replies acted on.

A receipt's carrier message id is looked up in the message routes (mapped when
the submit_sm was forwarded, see `filterd.smpp.submit`; `filterd.routebook`: this
process's own while their registry write is pending, else the registry's map),
so the receipt goes back to a receiver bind of the same account with the
client's id. Registry down: ESME_RTHROTTLED, so the carrier sends it again.
With `smpp.workers > 1` a receipt may come in on another process's carrier bind
before the submitting process's write has landed: a route not found there is
looked up once more `ROUTE_GRACE_S` later.

A deliver_sm to a number in `[[smpp.numbers]]` is a consumer's reply: an
opt-out keyword records a refusal for that number's sender (durably, before
anything else), an opt-in keyword a consent (the reply as evidence), help
nothing; a confirmation is sent back; the message is also passed to the owning
account's receiver binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
from collections.abc import Mapping
from typing import Protocol

from filterd.admission import Refused, phone_recipient
from filterd.errors import RegistryUnavailable
from filterd.keywords import Intent, Keywords
from filterd.logs import get_logger
from filterd.model import Address, Channel, FactRequest, Kind
from filterd.normalize import mask
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import SmppAccount, SmppSettings
from filterd.smpp.carrier import CarrierClient, CarrierUnavailable
from filterd.smpp.pdu import DataSm, DeliverSm, SubmitSm
from filterd.smpp.receipt import is_receipt, parse_receipt, rewrite_receipt
from filterd.smpp.status import ESME_ROK, ESME_RTHROTTLED
from filterd.smpp.text import SmsTextError, message_text, split_sms

log = get_logger("smpp")

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
ROUTE_GRACE_S = 1.0
"""With workers, how long after a miss a receipt's route is looked up again (the
submitting process may not have written it yet)."""


class Relay(Protocol):
    """What the deliveries ask of the relay (`filterd.smpp.server.SmppRelay`): its
    current settings and keywords (they change on reload), its carrier link, and
    a way to a client's receiver bind."""

    @property
    def settings(self) -> SmppSettings:
        """The relay's [smpp] settings (confirmation texts)."""
        ...

    @property
    def keywords(self) -> Keywords:
        """The opt-out / opt-in / help keywords."""
        ...

    @property
    def carrier(self) -> CarrierClient | None:
        """The carrier link, once there is one."""
        ...

    @property
    def accounts(self) -> Mapping[str, SmppAccount]:
        """The `[[smpp.accounts]]` by system_id."""
        ...

    @property
    def numbers(self) -> Mapping[str, str]:
        """The sender of each `[[smpp.numbers]]` address."""
        ...

    def forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Send a deliver_sm to a receiver bind of the account; False if none."""
        ...


class Deliveries:
    """Handles what the carrier delivers: receipts to route, consumers' replies (MO)."""

    def __init__(
        self, relay: Relay, service: Service, routes: RouteBook, default_region: str | None
    ) -> None:
        self.relay = relay
        self.service = service
        self.routes = routes
        self.default_region = default_region
        self._reference = itertools.count(secrets.randbelow(256))
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, pdu: DeliverSm | DataSm) -> int:
        """A deliver_sm from the carrier: a receipt to route, or a consumer's reply (MO).

        Returns the deliver_sm_resp status: ESME_RTHROTTLED asks the carrier to
        try again (registry down), so an opt-out is never lost.
        """
        if is_receipt(pdu):
            return await self._receipt(pdu)
        return await self._mobile_originated(pdu)

    async def _receipt(self, pdu: DeliverSm | DataSm) -> int:
        carrier_id = pdu.receipted_message_id()
        if carrier_id is None:
            parsed = parse_receipt(pdu.payload)
            carrier_id = parsed.message_id if parsed is not None else None
        if carrier_id is None:
            log.warning("receipt_without_id")
            return ESME_ROK
        try:
            found = await self._find(carrier_id)
            if found is None and self.relay.settings.workers > 1:
                await asyncio.sleep(ROUTE_GRACE_S)
                found = await self._find(carrier_id)
        except RegistryUnavailable:
            return ESME_RTHROTTLED
        if found is None:
            log.warning("receipt_for_unknown_message", carrier_id=carrier_id)
            return ESME_ROK
        owner, client_id = found
        if not self.relay.forward(owner, rewrite_receipt(pdu, client_id)):
            log.warning("receipt_undeliverable", system_id=owner, reason="no receiver bind")
        return ESME_ROK

    async def _find(self, carrier_id: str) -> tuple[str, str] | None:
        """The route of a receipt's carrier id, under the id as written or another
        spelling of it (RegistryUnavailable if the registry cannot be read)."""
        for key in (carrier_id, *_id_forms(carrier_id)):
            found = await self.routes.find(key)
            if found is not None:
                return found
        return None

    async def _mobile_originated(self, pdu: DeliverSm | DataSm) -> int:
        sender = self.relay.numbers.get(pdu.destination_addr)
        if sender is None:
            log.info("mo_for_unknown_number")
            return ESME_ROK
        try:
            text = message_text(pdu)
        except SmsTextError:
            text = None
        intent = self.relay.keywords.classify(text) if text else Intent.NONE
        if intent is not Intent.NONE:
            consumer = phone_recipient(pdu.source_addr, pdu.source_addr_ton, self.default_region)
            if isinstance(consumer, Refused):
                log.info("mo_from_invalid_number", intent=intent.value)
                return ESME_ROK
            try:
                await self._act(intent, sender, consumer, text or "")
            except RegistryUnavailable as exc:
                log.warning("mo_deferred", intent=intent.value, error=str(exc))
                return ESME_RTHROTTLED
            # the fact is on disk: answer the carrier now, confirm in the background
            task = asyncio.get_running_loop().create_task(self._confirm(pdu, intent, text or ""))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for account in self.relay.accounts.values():
            if account.sender == sender:
                self.relay.forward(account.system_id, pdu)
        return ESME_ROK

    async def _act(self, intent: Intent, sender: str, consumer: Address, text: str) -> None:
        """Record what the keyword asks for (durably) before anything else happens."""
        kind = {Intent.OPT_OUT: Kind.REFUSAL, Intent.OPT_IN: Kind.CONSENT}.get(intent)
        if kind is None:
            return
        request = FactRequest(
            consumer, kind, sender, Channel.SMS, "sms-keyword", evidence=f"SMS reply: {text}"
        )
        await self.service.record(request, origin="smpp")

    async def _confirm(self, mo: DeliverSm | DataSm, intent: Intent, text: str) -> None:
        """Send the configured confirmation (never screened: it answers the consumer)."""
        confirmations = self.relay.settings.confirmations
        carrier = self.relay.carrier
        if not confirmations.enabled or carrier is None:
            return
        language = "zh" if _CJK.search(text) else "en"
        reply = confirmations.text(intent.value, language)
        parts = split_sms(reply, next(self._reference) & 0xFF)
        for part in parts.messages:
            submit = SubmitSm(
                sequence_number=0,
                source_addr_ton=mo.dest_addr_ton,
                source_addr_npi=mo.dest_addr_npi,
                source_addr=mo.destination_addr,
                dest_addr_ton=mo.source_addr_ton,
                dest_addr_npi=mo.source_addr_npi,
                destination_addr=mo.source_addr,
                esm_class=parts.esm_class,
                data_coding=parts.data_coding,
                short_message=part,
            )
            try:
                await carrier.submit(submit)
            except CarrierUnavailable as exc:
                log.warning("confirmation_not_sent", error=str(exc))
                return
        log.info("confirmation_sent", intent=intent.value, consumer=mask("+" + mo.source_addr))


def _id_forms(carrier_id: str) -> list[str]:
    """Other spellings of a message id: some SMSCs answer submit_sm with a hex id and
    write the receipt's id in decimal (or the reverse)."""
    forms = []
    if carrier_id.isdecimal():
        forms.append(format(int(carrier_id), "x"))
        forms.append(format(int(carrier_id), "X"))
    with contextlib.suppress(ValueError):
        forms.append(str(int(carrier_id, 16)))
    return [f for f in forms if f != carrier_id]
