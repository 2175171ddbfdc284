"""The SP client toward the carrier's ISMG (`[cmpp.upstream]`).

One connection, logged in with CMPP_CONNECT as the SP `sp_id` with its shared
secret, in the configured version (0x20 or 0x30). Submits go out with a window
(at most `window` outstanding) and an optional rate limit; CMPP_DELIVER from
the ISMG (consumers' replies and status reports) is handed to a callback whose
Result is sent back in CMPP_DELIVER_RESP. A link with no traffic for
`active_test_s` is probed with CMPP_ACTIVE_TEST (an unanswered probe drops it);
the ISMG's own probes are answered, and so is its CMPP_TERMINATE. A lost link
is re-established with exponential back-off, and while it is down `submit()`
raises IsmgUnavailable at once, so clients get a temporary Result and nothing
is dropped silently. At stop, filterd sends CMPP_TERMINATE.

What one turn of the event loop has to send (the submits of many clients at once,
the answers to a burst of DELIVERs) goes out in one write: a system call per
message is most of what the link costs under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from filterd.cmpp.auth import connect_for, ismg_is_authentic
from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.result import FLOW_CONTROL
from filterd.errors import FilterdError
from filterd.logs import get_logger
from filterd.settings import CmppUpstream

log = get_logger("cmpp.ismg")

DeliverHandler = Callable[[Deliver], Awaitable[int]]
"""Takes a CMPP_DELIVER from the ISMG; returns the CMPP_DELIVER_RESP Result."""
RESPONSE_TIMEOUT_S = 30.0
_BACKOFF_MAX_S = 30.0
DOWN_REPEAT = 10
"""An ISMG link that stays down is logged at warning on the 1st, 11th, 21st ... failed
try, at debug in between."""


class IsmgUnavailable(FilterdError):
    """No logged-in link to the ISMG (or it did not answer in time)."""


def route_id(msg_id: int) -> str:
    """The registry's message-route key of a Msg_Id the ISMG gave a submit (the map
    SMPP's carrier ids share, so CMPP's ids carry their own prefix)."""
    return f"cmpp:{msg_id}"


def with_sequence(data: bytes, sequence: int) -> bytes:
    """An encoded message with its header's Sequence_Id set to `sequence` (cheaper than
    a copy of the message: a CMPP_SUBMIT has two dozen fields)."""
    return data[:8] + sequence.to_bytes(4, "big") + data[12:]


class IsmgClient:
    """An SP's link to the ISMG, with reconnection."""

    def __init__(self, upstream: CmppUpstream, on_deliver: DeliverHandler) -> None:
        self.upstream = upstream
        self.on_deliver = on_deliver
        self.version = upstream.version
        """The CMPP version spoken on the link (0x20 or 0x30)."""
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[asyncio.Future[Pdu], float]] = {}
        """The requests waiting for their answers, oldest first: future and deadline."""
        self._expiry: asyncio.TimerHandle | None = None
        self._sequence = itertools.count(1)
        self._window = asyncio.Semaphore(upstream.window)
        self._next_send = 0.0
        self._rate_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._heard = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox: dict[asyncio.StreamWriter, list[bytes]] = {}

    @property
    def connected(self) -> bool:
        """True while a logged-in link is up."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once the link is logged in."""
        await self._connected.wait()

    async def submit(self, pdu: Submit) -> SubmitResp:
        """Send one CMPP_SUBMIT; the ISMG's answer. IsmgUnavailable if the link is down,
        ValueError if a field does not fit the link's version."""
        if not self.connected:
            raise IsmgUnavailable("the ISMG link is down")
        return await self.submit_frame(encode(pdu, self.version))

    async def submit_frame(self, frame: bytes) -> SubmitResp:
        """Send one CMPP_SUBMIT already encoded in the link's version (its Sequence_Id is
        set here); the ISMG's answer. IsmgUnavailable if the link is down."""
        if not self.connected:
            raise IsmgUnavailable("the ISMG link is down")
        async with self._window:
            await self._pace()
            response = await self._exchange(frame)
        if not isinstance(response, SubmitResp):
            raise IsmgUnavailable(f"unexpected answer to CMPP_SUBMIT: {type(response).__name__}")
        return response

    async def _pace(self) -> None:
        """Keep to `rate` submits per second (0: no limit)."""
        if self.upstream.rate <= 0:
            return
        async with self._rate_lock:
            now = time.monotonic()
            wait = self._next_send - now
            self._next_send = max(now, self._next_send) + 1.0 / self.upstream.rate
        if wait > 0:
            await asyncio.sleep(wait)

    async def _request(self, pdu: Pdu) -> Pdu:
        return await self._exchange(encode(pdu, self.version))

    async def _exchange(self, frame: bytes) -> Pdu:
        """Send an encoded request under a new Sequence_Id; its answer."""
        writer = self._writer
        if writer is None or writer.is_closing():
            raise IsmgUnavailable("the ISMG link is down")
        sequence = next(self._sequence) & 0xFFFFFFFF or next(self._sequence)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Pdu] = loop.create_future()
        deadline = loop.time() + RESPONSE_TIMEOUT_S
        self._pending[sequence] = (future, deadline)
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire)
        try:
            self._queue(writer, with_sequence(frame, sequence))
            return await future
        finally:
            self._pending.pop(sequence, None)

    def _expire(self) -> None:
        """Fail the requests past their deadline (IsmgUnavailable); wake again at the
        next one's (one timer for all: the requests are kept oldest first)."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        while self._pending:
            sequence, (future, deadline) = next(iter(self._pending.items()))
            if deadline > loop.time():
                self._expiry = loop.call_at(deadline, self._expire)
                return
            del self._pending[sequence]
            if not future.done():
                future.set_exception(IsmgUnavailable("the ISMG did not answer in time"))

    # ---- the link ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, log in and serve until `stop`; reconnect with back-off when the link drops."""
        backoff = 1.0
        failures = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff, failures = 1.0, 0
            except Exception as exc:
                failures += 1
                report = log.warning if failures % DOWN_REPEAT == 1 else log.debug
                report(
                    "ismg_link_down",
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=backoff,
                    failures=failures,
                )
            finally:
                self._down()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _session(self, stop: asyncio.Event) -> None:
        upstream = self.upstream
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(upstream.host, upstream.port), 10
        )
        self._writer = writer
        self._heard = time.monotonic()
        reading = asyncio.create_task(self._read(reader))
        try:
            await self._login(reading)
            self._connected.set()
            log.info("ismg_connected", host=upstream.host, port=upstream.port, version=self.version)
            keepalive = asyncio.create_task(self._keepalive())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                keepalive.cancel()
                stopping.cancel()
            if stop.is_set():
                await self._terminate()
            elif reading.done() and reading.exception() is not None:
                raise reading.exception()  # type: ignore[misc]
            else:
                raise IsmgUnavailable("the ISMG closed the link")
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _login(self, reading: asyncio.Task[None]) -> None:
        """CMPP_CONNECT; IsmgUnavailable unless the ISMG accepts (Status 0)."""
        upstream = self.upstream
        connect = connect_for(
            0, upstream.sp_id, upstream.shared_secret, datetime.now(), self.version
        )
        request = asyncio.create_task(self._request(connect))
        await asyncio.wait([request, reading], return_when=asyncio.FIRST_COMPLETED)
        if not request.done():
            request.cancel()
            raise IsmgUnavailable("the ISMG closed the link while logging in")
        answer = request.result()
        if not isinstance(answer, ConnectResp):
            raise IsmgUnavailable(f"unexpected answer to CMPP_CONNECT: {type(answer).__name__}")
        if answer.status != 0:
            raise IsmgUnavailable(f"the ISMG refused the login (Status {answer.status})")
        source, secret = connect.authenticator_source, upstream.shared_secret
        if not ismg_is_authentic(answer.authenticator_ismg, 0, source, secret, self.version):
            # the ISMG knows our secret or it would not accept us; a wrong AuthenticatorISMG
            # is its own bug (seen in the field), so it is noted, not fatal
            log.warning("ismg_authenticator_mismatch", host=upstream.host)

    async def _keepalive(self) -> None:
        """Probe a link that has been quiet for `active_test_s`; drop it if unanswered."""
        period = self.upstream.active_test_s
        while True:
            quiet = time.monotonic() - self._heard
            if quiet < period:
                await asyncio.sleep(period - quiet)
                continue
            try:
                await self._request(ActiveTest(sequence_id=0))
            except IsmgUnavailable:
                log.warning("ismg_active_test_unanswered")
                if self._writer is not None:
                    self._writer.close()
                return

    async def _terminate(self) -> None:
        with contextlib.suppress(IsmgUnavailable, OSError):
            await asyncio.wait_for(self._request(Terminate(sequence_id=0)), 5)
        log.info("ismg_terminated")

    def _down(self) -> None:
        self._connected.clear()
        self._writer = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(IsmgUnavailable("the ISMG link went down"))
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = Framer(self.version)
        while data := await reader.read(65536):
            self._heard = time.monotonic()
            framer.feed(data)
            while True:
                try:
                    pdu = framer.next_pdu()
                except CmppProtocolError as exc:  # answered; the link drops if framing is lost
                    reply = exc.reply(self.version)
                    if reply is not None:
                        self._send(reply)
                    if exc.close:
                        raise
                    log.warning("ismg_bad_message", reason=exc.reason)
                    continue
                if pdu is None:
                    break
                self._dispatch(pdu)

    def _dispatch(self, pdu: Pdu) -> None:
        if pdu.is_response:  # match it to its request, never answer
            waiting = self._pending.get(pdu.sequence_id)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(pdu)
        elif isinstance(pdu, Deliver):
            task = asyncio.get_running_loop().create_task(self._deliver(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(pdu, ActiveTest):
            self._send(ActiveTestResp(sequence_id=pdu.sequence_id))
        elif isinstance(pdu, Terminate):
            self._send(TerminateResp(sequence_id=pdu.sequence_id))
            if self._writer is not None:  # closed once the answer is written
                asyncio.get_running_loop().call_soon(self._writer.close)
        else:  # a CONNECT or SUBMIT from the ISMG: not an SP's to serve
            log.warning("ismg_unexpected_request", command=type(pdu).__name__)

    async def _deliver(self, pdu: Deliver) -> None:
        try:
            result = await self.on_deliver(pdu)
        except Exception:
            log.exception("cmpp_deliver_failed")
            result = FLOW_CONTROL
        self._send(DeliverResp(sequence_id=pdu.sequence_id, msg_id=pdu.msg_id, result=result))

    def _send(self, pdu: Pdu) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._queue(self._writer, encode(pdu, self.version))

    def _queue(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write `data` with whatever else this turn of the loop sends on `writer`."""
        pending = self._outbox.get(writer)
        if pending is None:
            pending = self._outbox[writer] = []
            asyncio.get_running_loop().call_soon(self._flush, writer)
        pending.append(data)

    def _flush(self, writer: asyncio.StreamWriter) -> None:
        """One write of everything queued for `writer` (dropped once it is closing)."""
        data = b"".join(self._outbox.pop(writer, ()))
        if not writer.is_closing():
            writer.write(data)
