"""The ESME client toward the carrier's SMSC (`[smpp.upstream]`).

One connection, bound as a transceiver: submits go out with a window (at most
`window` outstanding) and an optional rate limit; deliver_sm from the carrier
(mobile-originated replies and delivery receipts) are handed to a callback
whose status is sent back in deliver_sm_resp. The link is kept alive with
enquire_link; a lost link is re-established with exponential back-off, and
while it is down `submit()` raises CarrierUnavailable at once, so clients get
a temporary status and nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable

from filterd.errors import FilterdError
from filterd.logs import get_logger
from filterd.settings import SmppUpstream
from filterd.smpp.decode import SmppProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.header import RESPONSE_BIT
from filterd.smpp.pdu import (
    AnyPdu,
    BindTransceiver,
    BindTransceiverResp,
    DataSm,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    response_to,
)
from filterd.smpp.status import ESME_ROK

log = get_logger("smpp.carrier")

DeliverHandler = Callable[[DeliverSm | DataSm], Awaitable[int]]
_RESPONSE_TIMEOUT_S = 30.0
_BACKOFF_MAX_S = 30.0
DOWN_REPEAT = 10
"""A carrier link that stays down is logged at warning on the 1st, 11th, 21st ... failed
try, at debug in between."""


class CarrierUnavailable(FilterdError):
    """No bound link to the carrier (or it did not answer in time)."""


class CarrierClient:
    """A transceiver bind to the carrier, with reconnection."""

    def __init__(self, upstream: SmppUpstream, on_deliver: DeliverHandler) -> None:
        self.upstream = upstream
        self.on_deliver = on_deliver
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._sequence = itertools.count(1)
        self._window = asyncio.Semaphore(upstream.window)
        self._next_send = 0.0
        self._rate_lock = asyncio.Lock()
        self._bound = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def bound(self) -> bool:
        """True while a bound link is up."""
        return self._bound.is_set()

    async def wait_bound(self) -> None:
        """Return once the link is bound."""
        await self._bound.wait()

    async def submit(self, pdu: SubmitSm) -> SubmitSmResp | GenericNack:
        """Send one submit_sm; the carrier's response. CarrierUnavailable if the link is down."""
        if not self.bound:
            raise CarrierUnavailable("the carrier link is down")
        async with self._window:
            await self._pace()
            response = await self._request(pdu)
        if not isinstance(response, SubmitSmResp | GenericNack):
            raise CarrierUnavailable(f"unexpected answer to submit_sm: {type(response).__name__}")
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
        writer = self._writer
        if writer is None:
            raise CarrierUnavailable("the carrier link is down")
        sequence = next(self._sequence) & 0x7FFFFFFF or next(self._sequence)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[sequence] = future
        try:
            writer.write(encode(_with_sequence(pdu, sequence)))
            return await asyncio.wait_for(future, _RESPONSE_TIMEOUT_S)
        except TimeoutError:
            raise CarrierUnavailable("the carrier did not answer in time") from None
        finally:
            self._pending.pop(sequence, None)

    # ---- the link ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, bind and serve until `stop`; reconnect with back-off when the link drops."""
        backoff = 1.0
        failures = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff, failures = 1.0, 0
            except Exception as exc:
                failures += 1
                # a carrier that stays away is said once, then every DOWN_REPEAT-th try
                # (about every 5 minutes at the 30 s back-off), not at every retry
                report = log.warning if failures % DOWN_REPEAT == 1 else log.debug
                report(
                    "carrier_link_down",
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
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.upstream.host, self.upstream.port), 10
        )
        self._writer = writer
        reading = asyncio.create_task(self._read(reader))
        try:
            bind = BindTransceiver(
                sequence_number=0, system_id=self.upstream.system_id,
                password=self.upstream.password,
            )  # fmt: skip
            answer = await self._request_before_bind(bind, reading)
            if not isinstance(answer, BindTransceiverResp) or answer.command_status != ESME_ROK:
                status = answer.command_status
                raise CarrierUnavailable(f"the carrier refused the bind (status {status:#x})")
            self._bound.set()
            log.info("carrier_bound", host=self.upstream.host, port=self.upstream.port)
            keepalive = asyncio.create_task(self._keepalive())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                keepalive.cancel()
                stopping.cancel()
            if stop.is_set():
                await self._unbind()
            elif reading.done() and reading.exception() is not None:
                raise reading.exception()  # type: ignore[misc]
            else:
                raise CarrierUnavailable("the carrier closed the link")
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _request_before_bind(self, pdu: Pdu, reading: asyncio.Task[None]) -> Pdu:
        request = asyncio.create_task(self._request(pdu))
        await asyncio.wait([request, reading], return_when=asyncio.FIRST_COMPLETED)
        if not request.done():
            request.cancel()
            raise CarrierUnavailable("the carrier closed the link while binding")
        return request.result()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.upstream.enquire_link_s)
            try:
                await self._request(EnquireLink(sequence_number=0))
            except CarrierUnavailable:
                log.warning("carrier_enquire_link_unanswered")
                if self._writer is not None:
                    self._writer.close()
                return

    async def _unbind(self) -> None:
        with contextlib.suppress(CarrierUnavailable, OSError):
            await asyncio.wait_for(self._request(Unbind(sequence_number=0)), 5)
        log.info("carrier_unbound")

    def _down(self) -> None:
        self._bound.clear()
        self._writer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CarrierUnavailable("the carrier link went down"))
        self._pending.clear()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = Framer()
        while True:
            data = await reader.read(65536)
            if not data:
                return
            framer.feed(data)
            while True:
                try:
                    pdu = framer.next_pdu()
                except SmppProtocolError as exc:  # answer a bad PDU; drop the link only if told
                    reply = exc.reply()
                    if reply is not None:
                        self._send(reply)
                    if exc.close:
                        raise
                    continue
                if pdu is None:
                    break
                self._dispatch(pdu)

    def _dispatch(self, pdu: AnyPdu) -> None:
        if pdu.command_id & RESPONSE_BIT:  # a response (known or not): match it, never answer
            future = self._pending.get(pdu.sequence_number)
            if isinstance(pdu, Pdu) and future is not None and not future.done():
                future.set_result(pdu)
            return
        if isinstance(pdu, DeliverSm | DataSm):
            task = asyncio.get_running_loop().create_task(self._deliver(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(pdu, EnquireLink):
            self._send(EnquireLinkResp(sequence_number=pdu.sequence_number))
        elif isinstance(pdu, Unbind):
            self._send(UnbindResp(sequence_number=pdu.sequence_number))
            if self._writer is not None:
                self._writer.close()
        else:
            self._send(response_to(pdu))

    async def _deliver(self, pdu: DeliverSm | DataSm) -> None:
        try:
            status = await self.on_deliver(pdu)
        except Exception:
            log.exception("deliver_sm_failed")
            status = 0x08
        self._send(response_to(pdu, status))

    def _send(self, pdu: Pdu) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode(pdu))


def _with_sequence(pdu: Pdu, sequence: int) -> Pdu:
    """A copy of `pdu` with another sequence number."""
    return dataclasses.replace(pdu, sequence_number=sequence)
