"""A fake carrier SMSC for the SMPP relay tests: a real SMPP server on loopback,
built on filterd's own codec, in its own thread and event loop. It accepts
transceiver binds (one per filterd process with smpp.workers > 1), records every
submit_sm (answering with message ids c1, c2, ...), and can send
mobile-originated messages and delivery receipts to a bound relay (the latest
bind, or the link chosen by index) and wait for their deliver_sm_resp."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
from concurrent.futures import Future

from filterd.smpp.encode import encode
from filterd.smpp.fields import ESM_DELIVERY_RECEIPT
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import (
    BindTransceiver,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    Pdu,
    SubmitSm,
    Unbind,
    UnbindResp,
    response_to,
)
from filterd.smpp.status import ESME_RINVPASWD, ESME_ROK
from filterd.smpp.tlv import TAG_RECEIPTED_MESSAGE_ID


class FakeSmsc:
    """The carrier: loopback, port chosen by the OS, stoppable and restartable."""

    def __init__(self, system_id: str = "filterd", password: str = "secret1") -> None:  # noqa: S107
        self.system_id = system_id
        self.password = password
        self.submits: list[SubmitSm] = []
        self.submit_status = ESME_ROK
        self.binds = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._bound: asyncio.StreamWriter | None = None
        self._links: list[asyncio.StreamWriter] = []
        self._links_changed = threading.Condition()
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._sequence = itertools.count(1)
        self._ids = itertools.count(1)
        self._submitted = threading.Condition()

    # ---- control from the test thread -------------------------------------------

    def start(self) -> FakeSmsc:
        """Listen (again on the same port after a stop)."""

        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop the connections (a carrier outage)."""
        server, self._server = self._server, None
        with self._links_changed:
            self._links.clear()
            self._bound = None

        async def close() -> None:
            if server is not None:
                server.close()
            for writer in list(self._writers):
                writer.close()
            if server is not None:
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def shutdown(self) -> None:
        """Stop and end the thread."""
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def wait_bound(self, timeout: float = 30, links: int = 1, total: int = 0) -> None:
        """Block until `links` binds are up (and `total` binds were made since the start)."""
        with self._links_changed:
            if not self._links_changed.wait_for(
                lambda: len(self._links) >= links and self.binds >= total, timeout
            ):
                raise AssertionError(f"{len(self._links)} of {links} binds to the fake SMSC")

    @property
    def links(self) -> int:
        """How many binds are up now."""
        with self._links_changed:
            return len(self._links)

    def wait_submits(self, count: int, timeout: float = 30) -> list[SubmitSm]:
        """Block until `count` submit_sm have arrived; return them."""
        with self._submitted:
            if not self._submitted.wait_for(lambda: len(self.submits) >= count, timeout):
                raise AssertionError(f"{len(self.submits)} of {count} submit_sm arrived")
            return list(self.submits)

    def deliver(self, pdu: DeliverSm, timeout: float = 30, link: int | None = None) -> int:
        """Send a deliver_sm to the bound relay (the latest bind, or bind number `link` of
        those up, in bind order); the status of its deliver_sm_resp."""
        with self._links_changed:
            writer = self._bound if link is None else self._links[link]
        coroutine = self._deliver(pdu, writer)
        future: Future[Pdu] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout).command_status

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the bound relay (for malformed or unknown PDUs)."""

        def write() -> None:
            if self._bound is not None:
                self._bound.write(data)

        self.loop.call_soon_threadsafe(write)

    def send_mo(self, source: str, destination: str, text: bytes, data_coding: int = 0,
                esm_class: int = 0, *, link: int | None = None) -> int:  # fmt: skip
        """A consumer's reply (MO) from `source` (international digits) to `destination`."""
        return self.deliver(
            DeliverSm(
                sequence_number=0, source_addr_ton=1, source_addr_npi=1, source_addr=source,
                dest_addr_ton=0, dest_addr_npi=1, destination_addr=destination,
                esm_class=esm_class, data_coding=data_coding, short_message=text,
            ),
            link=link,
        )  # fmt: skip

    def send_receipt(
        self, message_id: str, stat: str = "DELIVRD", *, link: int | None = None
    ) -> int:
        """A delivery receipt for a message this SMSC accepted."""
        text = (
            f"id:{message_id} sub:001 dlvrd:001 submit date:2611291000 "
            f"done date:2611291001 stat:{stat} err:000 text:hello"
        ).encode()
        return self.deliver(
            DeliverSm(
                sequence_number=0, esm_class=ESM_DELIVERY_RECEIPT, short_message=text,
                tlvs=((TAG_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),),
            ),
            link=link,
        )  # fmt: skip

    # ---- the server, in the loop thread --------------------------------------------

    async def _deliver(self, pdu: DeliverSm, writer: asyncio.StreamWriter | None) -> Pdu:
        if writer is None:
            raise AssertionError("nobody is bound")
        sequence = next(self._sequence)
        future: asyncio.Future[Pdu] = self.loop.create_future()
        self._pending[sequence] = future
        writer.write(encode(dataclasses.replace(pdu, sequence_number=sequence)))
        return await asyncio.wait_for(future, 30)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        framer = Framer()
        try:
            while data := await reader.read(65536):
                framer.feed(data)
                while (pdu := framer.next_pdu()) is not None:
                    if not self._handle(pdu, writer):
                        return
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            with self._links_changed:
                if writer in self._links:
                    self._links.remove(writer)
                if self._bound is writer:
                    self._bound = self._links[-1] if self._links else None
                self._links_changed.notify_all()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, pdu: object, writer: asyncio.StreamWriter) -> bool:
        if isinstance(pdu, BindTransceiver):
            ok = (pdu.system_id, pdu.password) == (self.system_id, self.password)
            writer.write(encode(response_to(pdu, ESME_ROK if ok else ESME_RINVPASWD,
                                            system_id="smsc")))  # fmt: skip
            if ok:
                with self._links_changed:
                    self.binds += 1
                    self._bound = writer
                    self._links.append(writer)
                    self._links_changed.notify_all()
            return ok
        if isinstance(pdu, SubmitSm):
            with self._submitted:
                self.submits.append(pdu)
                self._submitted.notify_all()
            if self.submit_status == ESME_ROK:
                answer = response_to(pdu, ESME_ROK, message_id=f"c{next(self._ids)}")
            else:
                answer = response_to(pdu, self.submit_status)
            writer.write(encode(answer))
        elif isinstance(pdu, EnquireLink):
            writer.write(encode(response_to(pdu)))
        elif isinstance(pdu, Unbind):
            writer.write(encode(UnbindResp(sequence_number=pdu.sequence_number)))
            return False
        elif isinstance(pdu, DeliverSmResp):
            future = self._pending.pop(pdu.sequence_number, None)
            if future is not None and not future.done():
                future.set_result(pdu)
        return True
