"""A fake ISMG (a China Mobile SMS gateway) for the CMPP relay's tests and bench: a
real CMPP 2.0 / 3.0 server on loopback, built on filterd's own codec, in its own
thread and event loop.

It answers CMPP_CONNECT by checking the SP's Source_Addr and AuthenticatorSource
(Status 2 / 3 / 4 as an ISMG does, then closes), each link in the version its SP
asked for; records every CMPP_SUBMIT and answers it with `submit_result` and its
own Msg_Ids; answers CMPP_ACTIVE_TEST and CMPP_TERMINATE (both counted); and can
send status reports (`send_report`), consumers' replies (MO), its own CMPP_ACTIVE_TEST or a
CMPP_TERMINATE to a logged-in SP (the latest login, or the link chosen by index)
and wait for the answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
from concurrent.futures import Future
from datetime import datetime

from filterd.cmpp.auth import authenticator_ismg, connect_is_authentic
from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import V30
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
from filterd.cmpp.report import StatusReport, report_deliver

GATEWAY = 4321
"""The fake ISMG's gateway id in the Msg_Ids it issues."""


@dataclasses.dataclass(eq=False)
class Link:
    """One logged-in SP connection."""

    writer: asyncio.StreamWriter
    version: int
    sp_id: str


class FakeIsmg:
    """The ISMG: loopback, port chosen by the OS, stoppable and restartable."""

    def __init__(self, sp_id: str = "901234", secret: str = "secret") -> None:  # noqa: S107
        self.sp_id = sp_id
        self.secret = secret
        self.submits: list[Submit] = []
        self.submit_result = 0
        """The Result every CMPP_SUBMIT is answered with (its Msg_Id is 0 unless 0)."""
        self.answer_submits = True
        """False: CMPP_SUBMIT is recorded but never answered (an ISMG that hangs)."""
        self.msg_ids: list[int] = []
        """The Msg_Id given to each submit, in order."""
        self.logins = 0
        self.refused_logins: list[int] = []
        """The Status of each refused CMPP_CONNECT."""
        self.active_tests = 0
        self.terminates = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: list[Link] = []
        self._changed = threading.Condition()
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._sequence = itertools.count(1)
        self._ids = MsgIdGenerator(GATEWAY)

    # ---- control from the test thread -------------------------------------------

    def start(self) -> FakeIsmg:
        """Listen (again on the same port after a stop)."""

        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and drop the connections (an ISMG outage)."""
        server, self._server = self._server, None
        with self._changed:
            self._links.clear()
            self._changed.notify_all()

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

    def wait_logged_in(self, timeout: float = 30, links: int = 1, total: int = 0) -> None:
        """Block until `links` SP links are up (and `total` logins were made since the start)."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: len(self._links) >= links and self.logins >= total, timeout
            ):
                raise AssertionError(f"{len(self._links)} of {links} links to the fake ISMG")

    @property
    def links(self) -> int:
        """How many SP links are logged in now."""
        with self._changed:
            return len(self._links)

    def versions(self) -> list[int]:
        """The version of each link up, in login order."""
        with self._changed:
            return [link.version for link in self._links]

    def wait_submits(self, count: int, timeout: float = 30) -> list[Submit]:
        """Block until `count` CMPP_SUBMIT have arrived; return them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.submits) >= count, timeout):
                raise AssertionError(f"{len(self.submits)} of {count} CMPP_SUBMIT arrived")
            return list(self.submits)

    def wait_for(self, check: object, timeout: float = 30) -> None:
        """Block until `check()` (a callable on this ISMG's counters) is true."""
        assert callable(check)
        with self._changed:
            if not self._changed.wait_for(check, timeout):
                raise AssertionError("the fake ISMG did not see it in time")

    def deliver(self, pdu: Deliver, timeout: float = 30, link: int | None = None) -> int:
        """Send a CMPP_DELIVER to a logged-in SP (the latest login, or link number `link`
        of those up); the Result of its CMPP_DELIVER_RESP."""
        answer = self._ask(pdu, timeout, link)
        assert isinstance(answer, DeliverResp), answer
        assert answer.msg_id == pdu.msg_id
        return answer.result

    def active_test(self, timeout: float = 30, link: int | None = None) -> bool:
        """Send a CMPP_ACTIVE_TEST to a logged-in SP; True when it answered."""
        return isinstance(self._ask(ActiveTest(sequence_id=0), timeout, link), ActiveTestResp)

    def terminate(self, timeout: float = 30, link: int | None = None) -> bool:
        """Send a CMPP_TERMINATE to a logged-in SP; True when it answered."""
        return isinstance(self._ask(Terminate(sequence_id=0), timeout, link), TerminateResp)

    def send_raw(self, data: bytes, link: int | None = None) -> None:
        """Write raw bytes to a logged-in SP (for malformed or unknown messages)."""
        target = self._link(link)
        self.loop.call_soon_threadsafe(target.writer.write, data)

    def send_mo(self, source: str, destination: str, text: bytes, msg_fmt: int = 0,
                tp_udhi: int = 0, *, link: int | None = None) -> int:  # fmt: skip
        """A consumer's reply (MO) from `source` (international digits) to `destination`."""
        return self.deliver(
            Deliver(
                sequence_id=0, msg_id=self._issue(), dest_id=destination,
                service_id="MO", tp_udhi=tp_udhi, msg_fmt=msg_fmt, src_terminal_id=source,
                registered_delivery=0, msg_content=text,
            ),
            link=link,
        )  # fmt: skip

    def send_report(
        self, msg_id: int, destination: str, stat: str = "DELIVRD", *, link: int | None = None
    ) -> int:
        """A status report on the submit this ISMG accepted with `msg_id`, for `destination`,
        in the link's version; the Result of its CMPP_DELIVER_RESP."""
        version = self._link(link).version
        report = StatusReport(
            msg_id=msg_id, stat=stat, submit_time="2612071000", done_time="2612071001",
            dest_terminal_id=destination, smsc_sequence=1,
        )  # fmt: skip
        deliver = report_deliver(
            report, version, sequence_id=0, msg_id=self._issue(), dest_id="10690001"
        )
        return self.deliver(deliver, link=link)

    # ---- the server, in the loop thread --------------------------------------------

    def _issue(self) -> int:
        return self._ids.issue(datetime.now())

    def _link(self, index: int | None) -> Link:
        with self._changed:
            if not self._links:
                raise AssertionError("no SP is logged in")
            return self._links[-1 if index is None else index]

    def _ask(self, pdu: Pdu, timeout: float, index: int | None) -> Pdu:
        link = self._link(index)
        future: Future[Pdu] = asyncio.run_coroutine_threadsafe(self._request(pdu, link), self.loop)
        return future.result(timeout)

    async def _request(self, pdu: Pdu, link: Link) -> Pdu:
        sequence = next(self._sequence)
        future: asyncio.Future[Pdu] = self.loop.create_future()
        self._pending[sequence] = future
        try:
            link.writer.write(encode(dataclasses.replace(pdu, sequence_id=sequence), link.version))
            return await asyncio.wait_for(future, 30)
        finally:
            self._pending.pop(sequence, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        framer = Framer(V30)
        link: Link | None = None
        try:
            while data := await reader.read(65536):
                framer.feed(data)
                while (pdu := framer.next_pdu()) is not None:
                    if link is None:
                        link = self._login(pdu, writer)
                        if link is None:
                            return
                        framer.version = link.version
                    elif not self._handle(pdu, link):
                        return
        except (ConnectionError, CmppProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            with self._changed:
                if link in self._links:
                    self._links.remove(link)
                self._changed.notify_all()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _login(self, pdu: Pdu, writer: asyncio.StreamWriter) -> Link | None:
        """The first message must be a CMPP_CONNECT that passes; None closes the link."""
        if not isinstance(pdu, Connect):
            return None
        version = pdu.version if pdu.version in (0x20, 0x30) else V30
        if pdu.version > V30:
            status = 4
        elif pdu.source_addr != self.sp_id:
            status = 2
        elif not connect_is_authentic(pdu, self.secret):
            status = 3
        else:
            status = 0
        authenticator = authenticator_ismg(status, pdu.authenticator_source, self.secret, version)
        answer = encode(ConnectResp(pdu.sequence_id, status, authenticator, version), version)
        with self._changed:  # the link is up before the SP hears so
            if status != 0:
                self.refused_logins.append(status)
            else:
                link = Link(writer, version, pdu.source_addr)
                self.logins += 1
                self._links.append(link)
            self._changed.notify_all()
        writer.write(answer)
        return link if status == 0 else None

    def _handle(self, pdu: Pdu, link: Link) -> bool:
        writer, version = link.writer, link.version
        if isinstance(pdu, Submit):
            msg_id = self._issue() if self.submit_result == 0 else 0
            with self._changed:
                self.submits.append(pdu)
                self.msg_ids.append(msg_id)
                self._changed.notify_all()
            if self.answer_submits:
                answer = SubmitResp(pdu.sequence_id, msg_id=msg_id, result=self.submit_result)
                writer.write(encode(answer, version))
        elif isinstance(pdu, ActiveTest):
            with self._changed:
                self.active_tests += 1
                self._changed.notify_all()
            writer.write(encode(ActiveTestResp(pdu.sequence_id), version))
        elif isinstance(pdu, Terminate):
            with self._changed:
                self.terminates += 1
                self._changed.notify_all()
            writer.write(encode(TerminateResp(pdu.sequence_id), version))
            return False
        elif pdu.is_response:
            future = self._pending.pop(pdu.sequence_id, None)
            if future is not None and not future.done():
                future.set_result(pdu)
        return True
