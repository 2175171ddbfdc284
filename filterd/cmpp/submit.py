"""The CMPP_SUBMIT path: one decision per destination in one registry read, the
compliance rules on the message's text, then the ISMG with the permitted
destinations only.

Every Dest_terminal_Id of a submit (up to 100) is decided by one `Service.screen`
(one registry round trip). The client's CMPP_SUBMIT_RESP:

| outcome                                              | Result                  |
|------------------------------------------------------|-------------------------|
| some permitted: forwarded to them (filterd's Msg_Id) | 0, or the ISMG's Result |
| none permitted, deferred, or refused by a text rule  | 64, 65, 66, 67 or 8     |
| ISMG link down (or no [cmpp.upstream])               | 8                       |
| a field wider than the ISMG link's version carries   | 1                       |
| a Dest_terminal_Id that is not a phone number        | 13                      |

(the second row's Results: `filterd.cmpp.answers.refusal`).

A deferral of any destination (registry down, quiet hours) defers the whole
submit, nothing forwarded: the client sends it again later. When some
destinations are permitted, the removed ones are returned with the Stat of their
status report (REFUSED, NOCONST): the session sends those reports when the submit
asked for them (Registered_Delivery = 1).

The client's Msg_Id is filterd's own (`MsgIdGenerator`); the ISMG's maps to it in the
registry's message routes (`filterd.cmpp.ismg.route_id`, `cmpp.receipt_ttl`), so
its status reports can be routed back. The client is answered once the ISMG has
accepted the submit; the route is written behind the answer
(`filterd.routebook`). The forwarded submit carries filterd's SP
code as Msg_src ([cmpp.upstream] sp_id), as the ISMG knows filterd by it. A
submit forwarded whole (every destination permitted, its text unchanged, the ISMG
link in the client's version) goes out as the octets the client sent with Msg_Id
and Msg_src rewritten (`filterd.cmpp.encode.resubmit`), not encoded again.

Long messages (a UDH concatenation element, or Pk_total > 1) get one decision for
all parts: the parts of one message (same account, Src_Id, destinations,
reference and total) share the first part's decision; a part number seen again
starts a new message. Under a commercial account whose sender has text rules
(`filterd.cmpp.rules`), the parts are held (`filterd.smpp.assembly`) until all are
in, judged on their whole text, decided once and forwarded in part order; a
message not whole `hold_s` after its first part is refused as unchecked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from filterd.admission import INTERNATIONAL, Refused, phone_recipient
from filterd.cmpp.answers import STAT, TEXT_RESULT, refusal
from filterd.cmpp.encode import fixed_text, resubmit
from filterd.cmpp.ismg import IsmgClient, IsmgUnavailable, route_id
from filterd.cmpp.msgid import MsgIdGenerator
from filterd.cmpp.pdu import Submit, SubmitResp
from filterd.cmpp.report import NO_CONSENT
from filterd.cmpp.result import BAD_DEST_TERMINAL_ID, BAD_STRUCTURE, FLOW_CONTROL, OK
from filterd.cmpp.rules import judge
from filterd.cmpp.text import concat_of, parts_of
from filterd.logs import get_logger
from filterd.model import Action, Address, Decision, MessageClass, Reason
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import CmppAccount, ComplianceSettings
from filterd.smpp.assembly import Assembler
from filterd.smpp.compliance import SmsRules
from filterd.smpp.text import Concat

log = get_logger("cmpp")

HOLD_S = 20.0
"""How long the parts of a long message under text rules wait for the others."""
_CONCAT_TTL_S = 600.0
_CONCAT_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one CMPP_SUBMIT and the destinations removed from it."""

    answer: SubmitResp
    removed: tuple[tuple[str, str], ...] = ()
    """(Dest_terminal_Id, Stat) of each destination not sent to, when others were."""


class Received(NamedTuple):
    """A CMPP_SUBMIT's whole frame as the client sent it, in its session's version."""

    frame: bytes
    version: int


class MessageKey(NamedTuple):
    """What every part of one long message shares."""

    sp_id: str
    src_id: str
    destinations: tuple[str, ...]
    reference: int
    """The UDH's reference; -1 for parts numbered by Pk_total / Pk_number alone."""
    total: int


def terminal_address(raw: str, region: str) -> Address | Refused:
    """The phone number a Dest_terminal_Id names (read in `region`), or why not.

    In China (region CN) CMPP's two usual forms are read as the international numbers
    national parsing makes of them, without its cost: 86 and 11 digits, and 11 digits
    starting with 1 (a mobile number: +86 and those digits). Anything else is a
    national number of `region`, or international with its "+".
    """
    if region == "CN" and raw.isdigit():
        if len(raw) == 13 and raw.startswith("86"):
            return phone_recipient(raw, INTERNATIONAL, region)
        if len(raw) == 11 and raw.startswith("1"):
            return phone_recipient("86" + raw, INTERNATIONAL, region)
    return phone_recipient(raw, 0, region)


def message_key(sp_id: str, pdu: Submit) -> tuple[MessageKey, Concat] | None:
    """The key of the long message `pdu` is a part of, and its place; None for a single submit."""
    place = parts_of(pdu)
    if place is None:
        return None
    total, number = place
    concat = concat_of(pdu.tp_udhi, pdu.msg_content)
    reference = concat.reference if concat is not None else -1
    key = MessageKey(sp_id, pdu.src_id, pdu.dest_terminal_ids, reference, total)
    return key, Concat(reference, total, number)


def _readdress(outcome: Outcome, part: Submit) -> Outcome:
    """The outcome for a held part, under that CMPP_SUBMIT's Sequence_Id."""
    answer = dataclasses.replace(outcome.answer, sequence_id=part.sequence_id)
    return dataclasses.replace(outcome, answer=answer)


class Submitter:
    """Decides each client's CMPP_SUBMIT and forwards it to the ISMG."""

    def __init__(
        self,
        service: Service,
        routes: RouteBook,
        msg_ids: MsgIdGenerator,
        *,
        default_region: str,
        msg_src: str | None,
        compliance: ComplianceSettings | None = None,
        hold_s: float = HOLD_S,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.service = service
        self.routes = routes
        self.msg_ids = msg_ids
        self.region = default_region
        """How terminal ids are read (`registry.default_region`, China when none)."""
        self.msg_src = msg_src
        """filterd's SP code at the ISMG, the Msg_src of what it forwards."""
        self._msg_src = fixed_text("msg_src", msg_src, 6) if msg_src is not None else None
        self.compliance = compliance
        self.clock = clock
        self._rules: dict[str, SmsRules | None] = {}
        self._decisions: OrderedDict[
            MessageKey, tuple[float, set[int], asyncio.Future[list[Decision]]]
        ] = OrderedDict()
        self._held: Assembler[Submit, Outcome] = Assembler(hold_s, _readdress)

    def close(self) -> None:
        """Stopping: held long messages are released now (incomplete: refused)."""
        self._held.close()

    def rules(self, account: CmppAccount) -> SmsRules | None:
        """The text rules on the account's messages: its sender's, for a commercial account."""
        if account.stream is not MessageClass.COMMERCIAL:
            return None
        if account.sender not in self._rules:
            self._rules[account.sender] = SmsRules.of(self.compliance, account.sender)
        return self._rules[account.sender]

    async def submit(
        self,
        account: CmppAccount,
        pdu: Submit,
        carrier: IsmgClient | None,
        receipt_ttl_s: int,
        received: Received | None = None,
    ) -> Outcome:
        """Decide one CMPP_SUBMIT (`received`: its octets) and forward it to `carrier`; the
        outcome for the client."""
        addresses = []
        for raw in pdu.dest_terminal_ids:
            address = terminal_address(raw, self.region)
            if isinstance(address, Refused):
                log.info("invalid_destination", sp_id=account.sp_id, reason=address.reason)
                return Outcome(SubmitResp(pdu.sequence_id, result=BAD_DEST_TERMINAL_ID))
            addresses.append(address)
        rules = self.rules(account)
        place = message_key(account.sp_id, pdu)
        if rules is not None and place is not None:

            async def release(parts: list[Submit], complete: bool) -> list[Outcome]:
                return await self._release(
                    account, addresses, rules, parts, complete,
                    carrier=carrier, receipt_ttl_s=receipt_ttl_s,
                )  # fmt: skip

            return await self._held.hold(place[0], place[1], pdu, release)
        verdict = judge([pdu], rules) if rules is not None else None
        refused_by = verdict.refused if verdict is not None else None
        if place is None:
            decisions = await self._screen(account, pdu, addresses, refused_by)
        else:
            decisions = await self._decide_part(account, pdu, addresses, place)
        if verdict is not None and verdict.last is not None:
            pdu, received = verdict.last, None
        return await self._send(account, pdu, decisions, carrier, receipt_ttl_s, received=received)

    async def _release(
        self,
        account: CmppAccount,
        addresses: list[Address],
        rules: SmsRules,
        parts: list[Submit],
        complete: bool,
        *,
        carrier: IsmgClient | None,
        receipt_ttl_s: int,
    ) -> list[Outcome]:
        """A held message, its parts in order: judged on its whole text, decided once, then
        every part forwarded; the outcome for each part."""
        if not complete:
            log.info("concatenation_incomplete", sp_id=account.sp_id, parts=len(parts))
            self.service.refuse(
                account.sender,
                addresses,
                rules.unchecked,
                origin="cmpp",
                message_id=f"{account.sp_id}/{parts[0].sequence_id}",
            )
            result = TEXT_RESULT[rules.unchecked]
            return [Outcome(SubmitResp(part.sequence_id, result=result)) for part in parts]
        verdict = judge(parts, rules)
        decisions = await self._screen(account, parts[0], addresses, verdict.refused)
        if verdict.last is not None:
            parts = [*parts[:-1], verdict.last]
        return [
            await self._send(account, part, decisions, carrier, receipt_ttl_s) for part in parts
        ]

    async def _send(
        self,
        account: CmppAccount,
        pdu: Submit,
        decisions: list[Decision],
        carrier: IsmgClient | None,
        receipt_ttl_s: int,
        *,
        received: Received | None = None,
    ) -> Outcome:
        """Forward `pdu` to its permitted destinations (or refuse it); the client's outcome.
        `received`: its octets, passed on as they came when it goes whole to a link of
        their version."""
        result = refusal(decisions)
        if result is not None:
            return Outcome(SubmitResp(pdu.sequence_id, result=result))
        destinations = pdu.dest_terminal_ids
        permitted = [
            raw
            for raw, d in zip(destinations, decisions, strict=True)
            if d.action is Action.DELIVER
        ]
        removed = tuple(
            (raw, STAT.get(d.reason or Reason.NO_CONSENT, NO_CONSENT))
            for raw, d in zip(destinations, decisions, strict=True)
            if d.action is Action.DROP
        )
        frame = None
        if (
            received is not None
            and self._msg_src is not None
            and carrier is not None
            and carrier.version == received.version
            and len(permitted) == len(destinations)
        ):
            frame = resubmit(received.frame, received.version, self._msg_src)
        msg_src = self.msg_src or pdu.msg_src
        forwarded = pdu
        if frame is None and (
            pdu.msg_id or pdu.msg_src != msg_src or len(permitted) < len(destinations)
        ):
            forwarded = dataclasses.replace(
                pdu, msg_id=0, msg_src=msg_src, dest_terminal_ids=tuple(permitted)
            )
        answer = await self._forward(account, forwarded, carrier, receipt_ttl_s, frame)
        return Outcome(answer, removed if answer.result == OK else ())

    async def _forward(
        self,
        account: CmppAccount,
        pdu: Submit,
        carrier: IsmgClient | None,
        receipt_ttl_s: int,
        frame: bytes | None = None,
    ) -> SubmitResp:
        """Send one CMPP_SUBMIT to the ISMG (`frame`: already encoded for it); the client's
        answer (filterd's Msg_Id)."""
        if carrier is None:
            self.service.metrics.upstream_error("cmpp", "no_carrier")
            return SubmitResp(pdu.sequence_id, result=FLOW_CONTROL)
        try:
            if frame is not None:
                answer = await carrier.submit_frame(frame)
            else:
                answer = await carrier.submit(pdu)
        except IsmgUnavailable as exc:
            log.warning("ismg_unavailable", error=str(exc), sp_id=account.sp_id)
            self.service.metrics.upstream_error("cmpp", "unavailable")
            return SubmitResp(pdu.sequence_id, result=FLOW_CONTROL)
        except ValueError as exc:  # a field wider than the ISMG's version carries
            log.info("submit_unfit_for_ismg", error=str(exc), sp_id=account.sp_id)
            return SubmitResp(pdu.sequence_id, result=BAD_STRUCTURE)
        if answer.result != OK:
            self.service.metrics.upstream_error("cmpp", "refused")
            return SubmitResp(pdu.sequence_id, result=answer.result)
        client_id = self.msg_ids.issue(self.clock())
        self.routes.add(route_id(answer.msg_id), account.sp_id, str(client_id), receipt_ttl_s)
        return SubmitResp(pdu.sequence_id, msg_id=client_id, result=OK)

    async def _decide_part(
        self,
        account: CmppAccount,
        pdu: Submit,
        addresses: list[Address],
        place: tuple[MessageKey, Concat],
    ) -> list[Decision]:
        """One decision per long message: its parts share the first's (parts arriving
        together wait for the one lookup in flight; a part number seen again, or a
        deferral, starts afresh)."""
        key, concat = place
        now = time.monotonic()
        cached = self._decisions.get(key)
        if (
            cached is not None
            and now - cached[0] < _CONCAT_TTL_S
            and concat.sequence not in cached[1]
        ):
            cached[1].add(concat.sequence)
            return await asyncio.shield(cached[2])
        future: asyncio.Future[list[Decision]] = asyncio.get_running_loop().create_future()
        self._decisions[key] = (now, {concat.sequence}, future)
        self._decisions.move_to_end(key)
        while len(self._decisions) > _CONCAT_MAX:
            self._decisions.popitem(last=False)
        try:
            decisions = await self._screen(account, pdu, addresses, None)
        except BaseException as exc:
            self._decisions.pop(key, None)
            future.set_exception(exc)
            future.exception()  # retrieved: later parts decide afresh
            raise
        future.set_result(decisions)
        if any(d.action is Action.DEFER for d in decisions):
            self._decisions.pop(key, None)
        return decisions

    async def _screen(
        self,
        account: CmppAccount,
        pdu: Submit,
        addresses: list[Address],
        refused_by: Reason | None,
    ) -> list[Decision]:
        """The one recorded decision for every destination (a failed text rule drops what
        the registry lets through)."""
        return await self.service.screen(
            account.sender,
            account.stream,
            addresses,
            origin="cmpp",
            message_id=f"{account.sp_id}/{pdu.sequence_id}",
            refused_by=refused_by,
        )
