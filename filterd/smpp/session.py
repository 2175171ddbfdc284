"""One client connection to the SMPP server: its bind, its window of submits, and
the deliveries written to it.

Clients bind (transmitter, receiver or transceiver) with a `[[smpp.accounts]]`
system_id and password, judged inside the process's login gate (after a failed
login every next bind from that address, concurrent or not, waits 0.5 s
doubling to 30 s before it is checked); a wrong one gets ESME_RINVPASWD and
the connection is closed (an unknown system_id gets the same answer, so names
cannot be probed; a first bind with a field too long for SMPP is a failed bind
too, answered with the codec's status). A client that does not read its
answers is not read either once the transport's high-water mark of answers
waits for it. At most `smpp.window` submits of a client are in flight; one more
gets ESME_RTHROTTLED. A part of a concatenated message held until its other
parts are in (the `[compliance]` text rules, `filterd.smpp.submit`) is in
flight until its message is answered: a message needs a window of at least its
number of parts, here and in the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from typing import Protocol

from filterd.guard import Abandoned, LoginGate, Ticket
from filterd.linger import finish
from filterd.logs import get_logger
from filterd.settings import SmppAccount, SmppSettings
from filterd.smpp.decode import SmppProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.header import RESPONSE_BIT
from filterd.smpp.pdu import (
    AnyPdu,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DataSm,
    DeliverSm,
    EnquireLink,
    Pdu,
    SubmitSm,
    Unbind,
    UnbindResp,
    response_to,
)
from filterd.smpp.status import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVPASWD,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
)

log = get_logger("smpp")

_BINDS = frozenset(bind.command_id for bind in (BindReceiver, BindTransmitter, BindTransceiver))
"""The bind command ids (a bind the codec refused is a failed bind)."""


class Relay(Protocol):
    """What a session asks of the server that accepted it (`filterd.smpp.server.SmppRelay`)."""

    @property
    def settings(self) -> SmppSettings:
        """The server's [smpp] settings (the window)."""
        ...

    @property
    def gate(self) -> LoginGate:
        """The process's login gate."""
        ...

    @property
    def drain_s(self) -> float:
        """How long submits in flight may take at shutdown or disconnect."""
        ...

    def account(self, system_id: str, password: str) -> SmppAccount | None:
        """The account for a bind, or None."""
        ...

    def receivers_changed(self) -> None:
        """A session's receiver bind came or went."""
        ...

    async def submit(self, account: SmppAccount, pdu: SubmitSm) -> Pdu:
        """Decide one submit_sm and forward it; the response for the client."""
        ...


class ClientSession:
    """One client connection: bind state, window of submits, deliveries to it."""

    def __init__(
        self,
        relay: Relay,
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
        self._ended = False
        """True once the FIN is sent: nothing more is written (an unbind at shutdown
        racing the end of the session included)."""

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
            received = self.receives
            self.transmits = self.receives = False  # no more receipts or MOs to this session
            if received:
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
        if not self.writer.is_closing() and not self._ended:
            self.writer.write(encode(pdu))

    async def _finish(self) -> None:
        """Let submits in flight get their answers, then close without losing them
        (`filterd.linger`)."""
        await finish(self.reader, self.writer, self._tasks, self.relay.drain_s, self._end)

    def _end(self) -> None:
        """Before the FIN: nothing is written after it."""
        self._ended = True
