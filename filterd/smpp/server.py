"""The SMPP 3.4 server that marketing tools bind to, and the relay logic.

Clients bind (transmitter, receiver or transceiver) with a `[[smpp.accounts]]`
system_id and password, judged inside the process's login gate (after a failed
login every next bind from that address, concurrent or not, waits 0.5 s
doubling to 30 s before it is checked); a wrong one gets ESME_RINVPASWD and
the connection is closed (an unknown system_id gets the same answer, so names
cannot be probed; a first bind with a field too long for SMPP is a failed bind
too, answered with the codec's status). A client that does not read its
answers is not read either once the transport's high-water mark of answers
waits for it. The listener takes at most `max_connections`
(`max_connections_per_address` from one address; beyond them a connection is
closed at once) and closes a connection that sends nothing for `idle_timeout`
(enquire_link is traffic).
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

All parts of a concatenated message (UDH or SAR) get the decision of its first
part. The client's message id is filterd's own; the carrier's id maps to it
in the registry (`smpp.receipt_ttl`), so delivery receipts are routed back to
a receiver bind of the same account with the client's id.

From the carrier, a deliver_sm to a number in `[[smpp.numbers]]` is a
consumer's reply: an opt-out keyword records a refusal for that number's
sender (durably, before anything else), an opt-in keyword a consent (the reply
as evidence), help nothing; a confirmation is sent back; the message is also
passed to the owning account's receiver binds.

With `smpp.workers > 1` several processes serve the port; a receipt or MO
that arrives on this process's carrier bind while the client's receiver bind
is in another process is handed to `hub` (see `filterd.smpp.hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import re
import secrets
import time
from collections import OrderedDict

from filterd.accounts import password_matches
from filterd.admission import Refused, phone_recipient
from filterd.errors import RegistryUnavailable
from filterd.guard import Abandoned, ConnectionTable, LoginGate, Ticket
from filterd.keywords import Intent, Keywords
from filterd.logs import get_logger
from filterd.model import Action, Address, Channel, Decision, FactRequest, Kind, Reason
from filterd.normalize import mask
from filterd.service import Service
from filterd.settings import SmppAccount, SmppSettings
from filterd.smpp.carrier import CarrierClient, CarrierUnavailable
from filterd.smpp.hub import Peers
from filterd.smpp.pdu import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVDSTADR,
    ESME_RINVPASWD,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    FILTERD_NO_CONSENT,
    FILTERD_REFUSED,
    RESPONSE_BIT,
    AnyPdu,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DataSm,
    DeliverSm,
    EnquireLink,
    Framer,
    GenericNack,
    Pdu,
    SmppProtocolError,
    SubmitSm,
    Unbind,
    UnbindResp,
    encode,
    is_receipt,
    parse_receipt,
    response_to,
    rewrite_receipt,
)
from filterd.smpp.text import SmsTextError, concat_key, message_text, split_sms
from filterd.storage.port import Registry

log = get_logger("smpp")

_CONCAT_TTL_S = 600.0
_CONCAT_MAX = 100_000
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_STATUS = {
    Reason.REFUSED: FILTERD_REFUSED,
    Reason.NO_CONSENT: FILTERD_NO_CONSENT,
    Reason.REGISTRY_UNAVAILABLE: ESME_RTHROTTLED,
}


DELIVER_BACKLOG = 1024 * 1024
"""Bytes of deliver_sm a client's connection may have waiting to be written: a
receiver that stops reading gets no more past it (the delivery counts as
undeliverable there, logged), so its backlog cannot grow filterd's memory."""
_BINDS = frozenset(bind.command_id for bind in (BindReceiver, BindTransmitter, BindTransceiver))
"""The bind command ids (a bind the codec refused is a failed bind)."""


class SmppRelay:
    """The client-facing server and the relay between clients and the carrier."""

    def __init__(
        self,
        settings: SmppSettings,
        service: Service,
        registry: Registry,
        keywords: Keywords,
        *,
        default_region: str | None,
        drain_s: float = 30.0,
        gate: LoginGate | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.registry = registry
        self.keywords = keywords
        self.drain_s = drain_s
        """How long submits in flight may take at shutdown or disconnect."""
        self.default_region = default_region
        self.carrier: CarrierClient | None = None
        self.hub: Peers | None = None
        """The other SMPP processes (smpp.workers > 1), for deliveries bound elsewhere."""
        self.sessions: set[ClientSession] = set()
        self._announced: frozenset[str] = frozenset()
        self._accounts = {a.system_id: a for a in settings.accounts}
        self._numbers = {n.address: n.sender for n in settings.numbers}
        self._decisions: OrderedDict[tuple[str, object], tuple[float, asyncio.Future[Decision]]] = (
            OrderedDict()
        )
        self._reference = itertools.count(secrets.randbelow(256))
        self._background: set[asyncio.Task[None]] = set()
        self.gate = gate or LoginGate()
        """The process's login gate (per-address back-off after failed logins)."""
        self.table = ConnectionTable("smpp", settings.limits)
        """This listener's connections, within its caps and idle timeout."""

    def reload(self, settings: SmppSettings, keywords: Keywords) -> None:
        """Take new accounts, numbers, keywords and confirmation texts (SIGHUP).

        Bound sessions keep the account they bound with; listen, upstream and
        window changes need a restart.
        """
        self.settings = dataclasses.replace(
            self.settings,
            accounts=settings.accounts,
            numbers=settings.numbers,
            receipt_ttl_s=settings.receipt_ttl_s,
            confirmations=settings.confirmations,
        )
        self.keywords = keywords
        self._accounts = {a.system_id: a for a in settings.accounts}
        self._numbers = {n.address: n.sender for n in settings.numbers}

    async def start(self) -> asyncio.Server:
        """Listen on smpp.listen (shared with the other workers' processes: SO_REUSEPORT)."""
        host, port = self.settings.listen
        reuse_port = self.settings.workers > 1 or None
        server = await asyncio.start_server(self._connected, host, port, reuse_port=reuse_port)
        self.table.start()
        return server

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = self.table.admit_transport(writer.transport, close=writer.close)
        if ticket is None:  # over a cap: closed at once, nothing said
            return
        session = ClientSession(self, reader, writer, ticket)
        self.sessions.add(session)
        try:
            await session.serve()
        finally:
            ticket.release()
            self.sessions.discard(session)
            self.receivers_changed()

    def receivers_changed(self) -> None:
        """Tell the hub the system_ids with a live receiver bind here, when that set changed."""
        system_ids = frozenset(
            session.account.system_id
            for session in self.sessions
            if session.account is not None and session.receives
        )
        if system_ids != self._announced:
            self._announced = system_ids
            if self.hub is not None:
                self.hub.receivers(system_ids)

    def account(self, system_id: str, password: str) -> SmppAccount | None:
        """The account for a bind, or None (constant-time password check)."""
        account = self._accounts.get(system_id)
        expected = account.password if account is not None else None
        return account if password_matches(expected, password) else None

    # ---- submit_sm ---------------------------------------------------------------

    async def submit(self, account: SmppAccount, pdu: SubmitSm) -> Pdu:
        """Decide one submit_sm and forward it; the response for the client."""
        address = phone_recipient(pdu.destination_addr, pdu.dest_addr_ton, self.default_region)
        if isinstance(address, Refused):
            log.info("invalid_destination", system_id=account.system_id, reason=address.reason)
            return response_to(pdu, ESME_RINVDSTADR)
        decision = await self._decide(account, pdu, address)
        if decision.action is not Action.DELIVER:
            status = _STATUS[decision.reason or Reason.NO_CONSENT]
            return response_to(pdu, status)
        if self.carrier is None:
            self.service.metrics.upstream_error("smpp", "no_carrier")
            return response_to(pdu, ESME_RMSGQFUL)
        try:
            answer = await self.carrier.submit(pdu)
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
                answer.message_id, account.system_id, client_id, self.settings.receipt_ttl_s
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

    # ---- deliver_sm from the carrier --------------------------------------------

    async def from_carrier(self, pdu: DeliverSm | DataSm) -> int:
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
            found = await self.registry.find_message(carrier_id)
            for other in _id_forms(carrier_id) if found is None else ():
                found = await self.registry.find_message(other)
                if found is not None:
                    break
        except RegistryUnavailable:
            return ESME_RTHROTTLED
        if found is None:
            log.warning("receipt_for_unknown_message", carrier_id=carrier_id)
            return ESME_ROK
        owner, client_id = found
        if not self._forward(owner, rewrite_receipt(pdu, client_id)):
            log.warning("receipt_undeliverable", system_id=owner, reason="no receiver bind")
        return ESME_ROK

    async def _mobile_originated(self, pdu: DeliverSm | DataSm) -> int:
        sender = self._numbers.get(pdu.destination_addr)
        if sender is None:
            log.info("mo_for_unknown_number")
            return ESME_ROK
        try:
            text = message_text(pdu)
        except SmsTextError:
            text = None
        intent = self.keywords.classify(text) if text else Intent.NONE
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
        for account in self._accounts.values():
            if account.sender == sender:
                self._forward(account.system_id, pdu)
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
        confirmations = self.settings.confirmations
        if not confirmations.enabled or self.carrier is None:
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
                await self.carrier.submit(submit)
            except CarrierUnavailable as exc:
                log.warning("confirmation_not_sent", error=str(exc))
                return
        log.info("confirmation_sent", intent=intent.value, consumer=mask("+" + mo.source_addr))

    def _forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Send a deliver_sm to a receiver bind of the account, here or (through the hub)
        in another process; False if none."""
        if self.deliver_local(system_id, pdu):
            return True
        return self.hub is not None and self.hub.forward(system_id, pdu)

    def deliver_local(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Send a deliver_sm to one live receiver bind of the account in this process;
        False if none."""
        for session in self.sessions:
            account = session.account
            live = session.receives and not session.writer.is_closing()
            if account is not None and account.system_id == system_id and live:
                if session.writer.transport.get_write_buffer_size() >= DELIVER_BACKLOG:
                    log.warning("deliver_backlog_full", system_id=system_id, peer=session.peer())
                    continue
                session.send_deliver(pdu)
                return True
        return False

    async def unbind_all(self) -> None:
        """Stop: let every client's submits in flight get their answers, then unbind."""
        self.table.stop()
        await asyncio.gather(*(session.close_gracefully() for session in list(self.sessions)))


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


class ClientSession:
    """One client connection: bind state, window of submits, deliveries to it."""

    def __init__(
        self,
        relay: SmppRelay,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ticket: Ticket,
    ) -> None:
        self.relay = relay
        self.reader = reader
        self.writer = writer
        self.ticket = ticket
        self.account: SmppAccount | None = None
        self.transmits = False
        self.receives = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sequence = itertools.count(1)

    def gone(self) -> bool:
        """Whether the client has left (or the connection is being closed)."""
        return self.reader.at_eof() or self.writer.is_closing()

    def peer(self) -> str:
        """The client's IP address (the back-off key)."""
        info = self.writer.get_extra_info("peername")
        return str(info[0]) if isinstance(info, tuple) and info else "unknown"

    async def serve(self) -> None:
        """Read PDUs until the client leaves (or breaks the framing)."""
        framer = Framer()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.ticket.extend()  # traffic: idle_timeout from now
                framer.feed(data)
                if not await self._drain(framer):
                    break
                # a client that does not read its answers is not read either: at most
                # the transport's high-water mark of answers waits for it
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.transmits = self.receives = False  # no more receipts or MOs to this session
            self.relay.receivers_changed()
            await self._finish()

    async def _drain(self, framer: Framer) -> bool:
        """Handle every complete PDU; False when the connection must close."""
        while True:
            try:
                pdu = framer.next_pdu()
            except SmppProtocolError as exc:
                if exc.command_id in _BINDS and self.account is None:
                    # an overlong system_id or password: a failed bind, the codec's status
                    with contextlib.suppress(Abandoned):
                        async with self.relay.gate.attempt(self.peer(), self.gone) as attempt:
                            attempt.failed()
                            self._refuse_bind(exc.reply(), exc.reason)
                    return False
                reply = exc.reply()
                if reply is not None:
                    self._write(reply)
                if exc.close:
                    return False
                continue
            if pdu is None:
                return True
            if not await self._handle(pdu):
                return False

    async def _handle(self, pdu: AnyPdu) -> bool:
        if pdu.command_id & RESPONSE_BIT:
            return True  # answers to what we sent (known or not); nothing waits for them
        if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
            return await self._bind(pdu)
        if isinstance(pdu, SubmitSm):
            self._submit(pdu)
        elif isinstance(pdu, EnquireLink):
            self._write(response_to(pdu))
        elif isinstance(pdu, Unbind):
            self._write(UnbindResp(sequence_number=pdu.sequence_number))
            return False
        else:
            self._write(response_to(pdu, ESME_RINVBNDSTS if isinstance(pdu, Pdu) else None))
        return True

    async def _bind(self, pdu: BindTransmitter | BindReceiver | BindTransceiver) -> bool:
        if self.account is not None:
            self._write(response_to(pdu, ESME_RALYBND))
            return True
        try:
            return await self._judge_bind(pdu)
        except Abandoned:  # the client left while its bind waited: nothing to answer
            return False

    async def _judge_bind(self, pdu: BindTransmitter | BindReceiver | BindTransceiver) -> bool:
        """Check a first bind inside the login gate; answer it."""
        async with self.relay.gate.attempt(self.peer(), self.gone) as attempt:
            account = self.relay.account(pdu.system_id, pdu.password)
            if account is None:
                attempt.failed()
                self._refuse_bind(response_to(pdu, ESME_RINVPASWD), "wrong password", pdu.system_id)
                return False
            attempt.succeeded()
        self.account = account
        self.transmits = not isinstance(pdu, BindReceiver)
        self.receives = not isinstance(pdu, BindTransmitter)
        self._write(response_to(pdu, ESME_ROK, system_id="filterd"))
        log.info("bound", system_id=account.system_id, mode=type(pdu).__name__)
        if self.receives:
            self.relay.receivers_changed()
        return True

    def _refuse_bind(self, answer: Pdu | None, reason: str, system_id: str | None = None) -> None:
        """A failed bind (inside the login gate): `answer`; the connection then closes."""
        log.warning("bind_refused", system_id=system_id, peer=self.peer(), reason=reason)
        if answer is not None:
            self._write(answer)

    def _submit(self, pdu: SubmitSm) -> None:
        account = self.account
        if account is None or not self.transmits:
            self._write(response_to(pdu, ESME_RINVBNDSTS))
            return
        if len(self._tasks) >= self.relay.settings.window:
            self._write(response_to(pdu, ESME_RTHROTTLED))
            return
        task = asyncio.get_running_loop().create_task(self._relay(account, pdu))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, account: SmppAccount, pdu: SubmitSm) -> None:
        try:
            answer = await self.relay.submit(account, pdu)
        except Exception:
            log.exception("submit_failed", system_id=account.system_id)
            answer = response_to(pdu, ESME_RSYSERR)
        self._write(answer)

    def send_deliver(self, pdu: DeliverSm | DataSm) -> None:
        """Pass a deliver_sm (receipt or MO) to this client, with our own sequence number."""
        sequence = next(self._sequence) & 0x7FFFFFFF
        self._write(dataclasses.replace(pdu, sequence_number=sequence))

    async def close_gracefully(self) -> None:
        """Shutdown: take no more submits, answer those in flight (drain_s at most), unbind."""
        self.transmits = self.receives = False
        self.relay.receivers_changed()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks), self.relay.drain_s)
        self._write(Unbind(sequence_number=next(self._sequence) & 0x7FFFFFFF))
        self.writer.close()

    def _write(self, pdu: Pdu) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(pdu))

    async def _finish(self) -> None:
        """Let submits in flight get their answers, then close."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks), self.relay.drain_s)
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
