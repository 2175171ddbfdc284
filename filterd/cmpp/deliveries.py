"""CMPP_DELIVER from the ISMG: status reports routed back, and consumers' replies acted on.

A status report (Registered_Delivery = 1) names the Msg_Id the ISMG gave a
forwarded submit; that id is looked up in the message routes (`filterd.routebook`:
this process's own while their registry write is pending, else the registry's map,
under `filterd.cmpp.ismg.route_id`), and the report goes to a connection of the
submitting SP with filterd's Msg_Id in place of the ISMG's. Registry down: Result
8, so the ISMG sends it again. With `cmpp.workers > 1` a report may come in on
another process's ISMG link before the submitting process's write has landed: a
route not found there is looked up once more `ROUTE_GRACE_S` later.

An MO (Registered_Delivery = 0) whose Dest_Id starts with a `[[cmpp.numbers]]`
address (the longest that matches: a service number carries the SP's
extensions after it) is a consumer's reply to that number's sender: an opt-out
keyword records a refusal (durably, before the CMPP_DELIVER_RESP; registry down
→ Result 8 and the ISMG resends), an opt-in keyword a consent (the reply as
evidence), help nothing; a confirmation goes back to the consumer; the MO is
also passed to the connections of the sender's accounts.

Terminal ids are read as phone numbers in `registry.default_region`, China when
none is set (CMPP's numbers are Chinese; `86…` and `+86…` read the same); a 3.0
pseudo terminal (Src_terminal_type 1) names no number, so its keywords are
logged and not acted on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import secrets
from collections.abc import Mapping
from typing import Protocol

from filterd.admission import Refused, phone_recipient
from filterd.cmpp.header import V20, V30
from filterd.cmpp.ismg import IsmgClient, IsmgUnavailable, route_id
from filterd.cmpp.pdu import Deliver, Submit
from filterd.cmpp.report import ReportError, decode_report, encode_report, report_length
from filterd.cmpp.result import FLOW_CONTROL, OK
from filterd.cmpp.text import MSG_FMT_ASCII, MSG_FMT_UCS2, part_text
from filterd.errors import RegistryUnavailable
from filterd.keywords import Intent, Keywords
from filterd.logs import get_logger
from filterd.model import Address, Channel, FactRequest, Kind
from filterd.normalize import mask
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import CmppAccount, CmppSettings
from filterd.smpp.text import SmsTextError

log = get_logger("cmpp")

CMPP_REGION = "CN"
"""How a terminal id is read when `registry.default_region` is not set."""
PSEUDO_TERMINAL = 1
"""Src_terminal_type of a pseudo code (3.0): not a phone number."""
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SINGLE = 140
"""Octets of content one message carries."""
_PART = 134
"""Octets of text per part of a long message (after a 6-octet concatenation UDH)."""
ROUTE_GRACE_S = 1.0
"""With workers, how long after a miss a report's route is looked up again (the
submitting process may not have written it yet)."""


class Relay(Protocol):
    """What the deliveries ask of the relay (`filterd.cmpp.server.CmppRelay`): its
    current settings and keywords (they change on reload), its ISMG link, and a way
    to an SP's connections."""

    @property
    def settings(self) -> CmppSettings:
        """The relay's [cmpp] settings (confirmation texts)."""
        ...

    @property
    def keywords(self) -> Keywords:
        """The opt-out / opt-in / help keywords."""
        ...

    @property
    def carrier(self) -> IsmgClient | None:
        """The ISMG link, once there is one."""
        ...

    @property
    def accounts(self) -> Mapping[str, CmppAccount]:
        """The `[[cmpp.accounts]]` by sp_id."""
        ...

    @property
    def numbers(self) -> Mapping[str, str]:
        """The sender of each `[[cmpp.numbers]]` address."""
        ...

    def forward(self, sp_id: str, deliver: Deliver) -> bool:
        """Send a CMPP_DELIVER to a connection of the SP; False if none."""
        ...


def number_for(numbers: Mapping[str, str], dest_id: str) -> str | None:
    """The `[[cmpp.numbers]]` address `dest_id` starts with (the longest), or None."""
    best = None
    for address in numbers:
        if dest_id.startswith(address) and (best is None or len(address) > len(best)):
            best = address
    return best


def rewrite_report(deliver: Deliver, client_msg_id: int) -> Deliver:
    """The status report DELIVER with the report's Msg_Id replaced by `client_msg_id`
    (the content keeps its layout: 60 octets for 2.0, 71 for 3.0). ReportError if the
    content is not a report."""
    version = report_version(deliver.msg_content)
    report = decode_report(deliver.msg_content, version)
    content = encode_report(dataclasses.replace(report, msg_id=client_msg_id), version)
    return dataclasses.replace(deliver, msg_content=content)


def report_version(content: bytes) -> int:
    """The version whose report layout `content` has (by its length); ReportError if neither."""
    for version in (V30, V20):
        if len(content) == report_length(version):
            return version
    raise ReportError(f"status report of {len(content)} octets is neither 2.0 nor 3.0")


class Deliveries:
    """Handles what the ISMG delivers: status reports to route, consumers' replies (MO)."""

    def __init__(
        self, relay: Relay, service: Service, routes: RouteBook, default_region: str | None
    ) -> None:
        self.relay = relay
        self.service = service
        self.routes = routes
        self.region = default_region or CMPP_REGION
        self._reference = itertools.count(secrets.randbelow(256))
        self._background: set[asyncio.Task[None]] = set()

    async def handle(self, deliver: Deliver) -> int:
        """A CMPP_DELIVER from the ISMG: the Result of its CMPP_DELIVER_RESP (8 asks the
        ISMG to send it again: registry down, so an opt-out is never lost)."""
        if deliver.registered_delivery == 1:
            return await self._report(deliver)
        return await self._mobile_originated(deliver)

    async def _report(self, deliver: Deliver) -> int:
        try:
            report = decode_report(deliver.msg_content, report_version(deliver.msg_content))
        except ReportError as exc:
            log.warning("report_malformed", reason=str(exc))
            return OK
        key = route_id(report.msg_id)
        try:
            found = await self.routes.find(key)
            if found is None and self.relay.settings.workers > 1:
                await asyncio.sleep(ROUTE_GRACE_S)
                found = await self.routes.find(key)
        except RegistryUnavailable:
            return FLOW_CONTROL
        if found is None:
            log.warning("report_for_unknown_message", ismg_msg_id=report.msg_id)
            return OK
        owner, client_id = found
        if not client_id.isdecimal() or int(client_id) >= 1 << 64:
            log.warning("report_route_malformed", ismg_msg_id=report.msg_id)
            return OK
        if not self.relay.forward(owner, rewrite_report(deliver, int(client_id))):
            log.warning("report_undeliverable", sp_id=owner, reason="no connection")
        return OK

    async def _mobile_originated(self, deliver: Deliver) -> int:
        number = number_for(self.relay.numbers, deliver.dest_id)
        if number is None:
            log.info("mo_for_unknown_number")
            return OK
        sender = self.relay.numbers[number]
        try:
            text = part_text(deliver)
        except SmsTextError:
            text = None
        intent = self.relay.keywords.classify(text) if text else Intent.NONE
        if intent is not Intent.NONE and deliver.src_terminal_type == PSEUDO_TERMINAL:
            log.info("mo_from_pseudo_terminal", intent=intent.value)  # the SP still gets it
        elif intent is not Intent.NONE:
            consumer = phone_recipient(deliver.src_terminal_id, 0, self.region)
            if isinstance(consumer, Refused):
                log.info("mo_from_invalid_number", intent=intent.value)
                return OK
            try:
                await self._act(intent, sender, consumer, text or "")
            except RegistryUnavailable as exc:
                log.warning("mo_deferred", intent=intent.value, error=str(exc))
                return FLOW_CONTROL
            # the fact is on disk: answer the ISMG now, confirm in the background
            confirm = self._confirm(deliver, intent, text or "", consumer)
            task = asyncio.get_running_loop().create_task(confirm)
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for account in self.relay.accounts.values():
            if account.sender == sender:
                self.relay.forward(account.sp_id, deliver)
        return OK

    async def _act(self, intent: Intent, sender: str, consumer: Address, text: str) -> None:
        """Record what the keyword asks for (durably) before anything else happens."""
        kind = {Intent.OPT_OUT: Kind.REFUSAL, Intent.OPT_IN: Kind.CONSENT}.get(intent)
        if kind is None:
            return
        request = FactRequest(
            consumer, kind, sender, Channel.SMS, "sms-keyword", evidence=f"SMS reply: {text}"
        )
        await self.service.record(request, origin="cmpp")

    async def _confirm(self, mo: Deliver, intent: Intent, text: str, consumer: Address) -> None:
        """Send the configured confirmation (never screened: it answers the consumer)."""
        confirmations = self.relay.settings.confirmations
        carrier = self.relay.carrier
        if not confirmations.enabled or carrier is None:
            return
        language = "zh" if _CJK.search(text) else "en"
        reply = confirmations.text(intent.value, language)
        sp_id = self.relay.settings.upstream.sp_id if self.relay.settings.upstream else ""
        for part in confirmation(reply, next(self._reference) & 0xFF, mo, sp_id):
            try:
                answer = await carrier.submit(part)
            except IsmgUnavailable as exc:
                log.warning("confirmation_not_sent", error=str(exc))
                return
            if answer.result != OK:
                log.warning("confirmation_refused", result=answer.result)
                return
        log.info("confirmation_sent", intent=intent.value, consumer=mask(consumer.canonical))


def confirmation(text: str, reference: int, mo: Deliver, sp_id: str) -> list[Submit]:
    """The CMPP_SUBMIT(s) answering `mo` with `text`: from the number it reached, to its
    sender; ASCII when it is ASCII, else UCS2; split with a concatenation UDH (8-bit
    `reference`) when it does not fit one message."""
    msg_fmt = MSG_FMT_ASCII if text.isascii() else MSG_FMT_UCS2
    data = text.encode("ascii" if msg_fmt == MSG_FMT_ASCII else "utf-16-be")
    if len(data) <= _SINGLE:
        chunks = [data]
    else:
        chunks = [data[i : i + _PART] for i in range(0, len(data), _PART)]
    total = len(chunks)
    return [
        Submit(
            sequence_id=0,
            pk_total=total,
            pk_number=number,
            service_id=mo.service_id,
            tp_udhi=int(total > 1),
            msg_fmt=msg_fmt,
            msg_src=sp_id,
            src_id=mo.dest_id,
            dest_terminal_ids=(mo.src_terminal_id,),
            dest_terminal_type=mo.src_terminal_type,
            msg_content=(_udh(reference, total, number) if total > 1 else b"") + chunk,
            link_id=mo.link_id,
        )
        for number, chunk in enumerate(chunks, 1)
    ]


def _udh(reference: int, total: int, number: int) -> bytes:
    """A user data header with one 8-bit concatenation element."""
    return bytes([5, 0x00, 3, reference, total, number])
