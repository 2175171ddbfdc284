"""One SP platform's connection to the CMPP server: its login, its window of submits,
the keep-alive, and the DELIVERs (status reports, MO) written to it.

The first message must be CMPP_CONNECT (anything else closes the connection). It is
judged inside the process's login gate (after a failed login every next CONNECT
from that address, concurrent or not, waits 0.5 s doubling to 30 s first) by
`filterd.cmpp.answers.connect_answer`; a refused one (a CONNECT the codec cannot
read too: Status 1) is answered and the connection closed. The session then speaks
its version both ways. At most `cmpp.window` submits are in flight; one more gets
Result 8 (flow control). CMPP_ACTIVE_TEST is answered; after half the listener's
`idle_timeout` without traffic filterd sends its own (the answer is traffic; a dead
peer is closed at the idle timeout). CMPP_TERMINATE is answered and the connection
closes once the submits in flight are answered. A status report handed over in the
other version's layout is rewritten in this session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from datetime import datetime
from typing import Protocol

from filterd.cmpp.answers import connect_answer, in_layout, removed_report
from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import CONNECT, V20, V30
from filterd.cmpp.msgid import MsgIdGenerator
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.result import BAD_COMMAND_ID, CONNECT_OTHER_ERROR, FLOW_CONTROL, OK
from filterd.cmpp.submit import Outcome, Received
from filterd.guard import Abandoned, LoginGate, Ticket
from filterd.linger import finish
from filterd.logs import get_logger
from filterd.settings import CmppAccount, CmppSettings

log = get_logger("cmpp")
OTHER_ERROR_V20 = 9
"""A Result over one octet, told to a 2.0 client: 9 and above are "other errors" there."""


class Relay(Protocol):
    """What a session asks of the server that accepted it (`filterd.cmpp.server.CmppRelay`)."""

    @property
    def settings(self) -> CmppSettings:
        """The server's [cmpp] settings (the window, the idle timeout)."""
        ...

    @property
    def gate(self) -> LoginGate:
        """The process's login gate."""
        ...

    @property
    def drain_s(self) -> float:
        """How long submits in flight may take at shutdown or disconnect."""
        ...

    @property
    def msg_ids(self) -> MsgIdGenerator:
        """The process's Msg_Id generator."""
        ...

    def account_of(self, sp_id: str) -> CmppAccount | None:
        """The account with that sp_id, or None."""
        ...

    def receivers_changed(self) -> None:
        """A session logged in (the server's other processes learn where its SP is)."""
        ...

    async def submit(self, account: CmppAccount, pdu: Submit, received: Received) -> Outcome:
        """Decide one CMPP_SUBMIT (`received`: its octets) and forward it; the outcome for
        the client."""
        ...


class ClientSession:
    """One client connection: login, window of submits, deliveries to it."""

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
        self.account: CmppAccount | None = None
        self.version = V30
        """The version spoken (set at login)."""
        self.framer = Framer(V30)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sequence = itertools.count(1)
        self._heard = time.monotonic()
        self.open = True
        """False once the session is ending: DELIVERs go to another connection."""
        self._ended = False
        """True once the FIN is sent: nothing more is written."""
        self._out: list[bytes] = []
        """Messages queued for the client in this turn of the event loop."""

    def gone(self) -> bool:
        """Whether the client has left (or the connection is being closed)."""
        return self.reader.at_eof() or self.writer.is_closing()

    def peer(self) -> str:
        """The client's IP address (the back-off key)."""
        info = self.writer.get_extra_info("peername")
        return str(info[0]) if isinstance(info, tuple) and info else "unknown"

    async def serve(self) -> None:
        """Read messages until the client leaves, terminates or breaks the framing."""
        keepalive = asyncio.get_running_loop().create_task(self._keepalive())
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.ticket.extend()  # traffic: idle_timeout from now
                self._heard = time.monotonic()
                self.framer.feed(data)
                if not await self._drain():
                    break
                # a client that does not read its answers is not read either
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            keepalive.cancel()
            self.open = False  # no more DELIVERs to this session
            await self._finish()

    async def _drain(self) -> bool:
        """Handle every complete message; False when the connection must close."""
        while True:
            try:
                pdu = self.framer.next_pdu()
            except CmppProtocolError as exc:
                if self.account is None:  # an unreadable first message: a failed login
                    if exc.command_id == CONNECT:
                        await self._unreadable_login(exc)
                    return False
                reply = exc.reply(self.version)
                if reply is not None:
                    self._write(reply)
                if exc.close:
                    return False
                continue
            if pdu is None:
                return True
            if type(pdu) is Submit and self.account is not None:  # most messages: no await
                self._submit(self.account, pdu, self.framer.frame)
            elif not await self._handle(pdu):
                return False

    async def _handle(self, pdu: Pdu) -> bool:
        if self.account is None:
            if isinstance(pdu, Connect):
                return await self._login(pdu)
            log.info("not_logged_in", peer=self.peer(), command=type(pdu).__name__)
            return False
        if pdu.is_response:
            return True  # answers to our DELIVERs and ACTIVE_TESTs: nothing waits for them
        if isinstance(pdu, Submit):
            self._submit(self.account, pdu, self.framer.frame)
        elif isinstance(pdu, ActiveTest):
            self._write(ActiveTestResp(pdu.sequence_id))
        elif isinstance(pdu, Terminate):
            self._write(TerminateResp(pdu.sequence_id))
            return False
        elif isinstance(pdu, Connect):
            self._write(ConnectResp(pdu.sequence_id, CONNECT_OTHER_ERROR, version=self.version))
        elif isinstance(pdu, Deliver):
            self._write(DeliverResp(pdu.sequence_id, msg_id=pdu.msg_id, result=BAD_COMMAND_ID))
        return True

    async def _login(self, connect: Connect) -> bool:
        """Judge a CONNECT inside the login gate (`filterd.cmpp.answers.connect_answer`);
        answer it. False: close."""
        try:
            async with self.relay.gate.attempt(self.peer(), self.gone) as attempt:
                account = self.relay.account_of(connect.source_addr)
                judged = connect_answer(connect, account)
                if judged.failed_login:
                    attempt.failed()
                else:
                    attempt.succeeded()
        except Abandoned:  # the client left while its CONNECT waited: nothing to answer
            return False
        self.version = judged.layout
        if judged.reason is not None or account is None:
            log.warning("connect_refused", sp_id=connect.source_addr, peer=self.peer(),
                        reason=judged.reason)  # fmt: skip
            self._write(judged.answer)
            return False
        self.account = account
        self.framer.version = judged.layout
        self._write(judged.answer)
        log.info("connected", sp_id=account.sp_id, version=f"{judged.layout:#04x}")
        self.relay.receivers_changed()
        return True

    async def _unreadable_login(self, exc: CmppProtocolError) -> None:
        """A CONNECT the codec could not read: a failed login, answered with Status 1."""
        with contextlib.suppress(Abandoned):
            async with self.relay.gate.attempt(self.peer(), self.gone) as attempt:
                attempt.failed()
                log.warning("connect_refused", sp_id=None, peer=self.peer(), reason=exc.reason)
                answer = exc.reply(V30)
                if answer is not None:
                    self._write(answer)

    def _submit(self, account: CmppAccount, pdu: Submit, frame: bytes) -> None:
        if len(self._tasks) >= self.relay.settings.window:
            self._write(SubmitResp(pdu.sequence_id, result=FLOW_CONTROL))
            return
        received = Received(frame, self.version)
        task = asyncio.get_running_loop().create_task(self._relay(account, pdu, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, account: CmppAccount, pdu: Submit, received: Received) -> None:
        try:
            outcome = await self.relay.submit(account, pdu, received)
        except Exception:
            log.exception("submit_failed", sp_id=account.sp_id)
            outcome = Outcome(SubmitResp(pdu.sequence_id, result=FLOW_CONTROL))
        answer = outcome.answer
        if self.version == V20 and answer.result > 0xFF:
            answer = dataclasses.replace(answer, result=OTHER_ERROR_V20)
        self._write(answer)
        if answer.result == OK and pdu.registered_delivery == 1:
            for destination, stat in outcome.removed:
                self._report(pdu, answer.msg_id, destination, stat)

    def _report(self, pdu: Submit, msg_id: int, destination: str, stat: str) -> None:
        """A status report on a destination removed from a submit (REFUSED, NOCONST)."""
        now = datetime.now()
        self._write(
            removed_report(
                pdu, msg_id, destination, stat, self.version,
                sequence_id=self._next_sequence(),
                deliver_msg_id=self.relay.msg_ids.issue(now),
                now=now,
            )
        )  # fmt: skip

    def send_deliver(self, pdu: Deliver) -> bool:
        """Pass a DELIVER (status report or MO) to this client with our own Sequence_Id, in
        this session's version; False when it cannot be written in it."""
        pdu = in_layout(pdu, self.version)
        try:
            data = encode(dataclasses.replace(pdu, sequence_id=self._next_sequence()), self.version)
        except ValueError as exc:
            log.warning("deliver_unfit", sp_id=self.account and self.account.sp_id, error=str(exc))
            return False
        if self.writer.is_closing() or self._ended:
            return False
        self._send(data)
        return True

    async def _keepalive(self) -> None:
        """Send CMPP_ACTIVE_TEST after half the idle timeout without traffic."""
        period = self.relay.settings.limits.idle_timeout_s / 2
        while True:
            quiet = time.monotonic() - self._heard
            if quiet < period:
                await asyncio.sleep(period - quiet)
                continue
            if self.account is not None:
                self._write(ActiveTest(self._next_sequence()))
            self._heard = time.monotonic()

    async def close_gracefully(self) -> None:
        """Shutdown: answer the submits in flight (drain_s at most), then CMPP_TERMINATE (a
        session already ending finishes on its own)."""
        if not self.open:
            return
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks), self.relay.drain_s)
        if self.account is not None:
            self._write(Terminate(self._next_sequence()))
        self._flush()
        self.writer.close()

    def _next_sequence(self) -> int:
        return next(self._sequence) & 0xFFFFFFFF or next(self._sequence)

    def _write(self, pdu: Pdu) -> None:
        if not self.writer.is_closing() and not self._ended:
            self._send(encode(pdu, self.version))

    def _send(self, data: bytes) -> None:
        """Queue `data` for the client; what is queued in one turn of the event loop goes
        out in one write (answers completed together cost one system call)."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        """Write what is queued (nothing once the connection is closing)."""
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def _finish(self) -> None:
        """Let submits in flight get their answers, then close without losing them
        (`filterd.linger`)."""
        await finish(self.reader, self.writer, self._tasks, self.relay.drain_s, self._last_write)

    def _last_write(self) -> None:
        """Before the FIN: what is queued goes out, and nothing more after it."""
        self._flush()
        self._ended = True
