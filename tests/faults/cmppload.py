"""A CMPP load client for the fault tests: one thread with a raw CMPP 3.0 connection to
filterd (logged in as CMPP_SP_ID), keeping `window` CMPP_SUBMIT outstanding, each
submit's Msg_Content its ident; it answers filterd's ACTIVE_TEST, DELIVER and
TERMINATE, and reconnects to the current Target whenever the connection breaks."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from datetime import datetime

from filterd.cmpp.auth import connect_for
from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import V30
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
from tests.faults.conftest import (
    CMPP_SECRET,
    CMPP_SP_ID,
    JANE_SMS,
    NUMBER,
    RETRY_PACE_S,
    Attempt,
    Ledger,
    Target,
)

_IDS = itertools.count(1)


class CmppLoad:
    """The load: `ledger` holds every submit and its outcome ("delivered" for Result 0,
    "result N" for another Result, "cut" when the connection broke first)."""

    def __init__(self, target: Target, destination: str = JANE_SMS, window: int = 8) -> None:
        self.target = target
        self.destination = destination
        self.window = window
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.connect_failures = 0
        self._sequence = itertools.count(1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CmppLoad:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending, collect the answers in flight, join."""
        self.stopping.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the CMPP load thread did not stop"

    def _run(self) -> None:
        while not self.stopping.is_set():
            port, generation = self.target.current()
            if port is None:
                self.target.wait_change(generation, 0.5)
                continue
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            except OSError:
                self.connect_failures += 1
                self.target.wait_change(generation, 0.1)
                continue
            with sock:
                self._session(sock)

    def _session(self, sock: socket.socket) -> None:
        framer = Framer(V30)
        outstanding: dict[int, tuple[str, float]] = {}
        ending = False
        try:
            connect = connect_for(next(self._sequence), CMPP_SP_ID, CMPP_SECRET,
                                  datetime.now(), V30)  # fmt: skip
            sock.sendall(encode(connect, V30))
            answer = self._read_one(sock, framer)
            if not isinstance(answer, ConnectResp) or answer.status != 0:
                self.connect_failures += 1
                return
            while True:
                while not (self.stopping.is_set() or ending) and len(outstanding) < self.window:
                    sequence = next(self._sequence)
                    ident = f"c{next(_IDS)}"
                    outstanding[sequence] = (ident, time.monotonic())
                    sock.sendall(encode(self._submit(sequence, ident), V30))
                if not outstanding:
                    if not ending:
                        with contextlib.suppress(OSError):
                            sock.sendall(encode(Terminate(next(self._sequence)), V30))
                    return
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by filterd")
                framer.feed(data)
                for pdu in framer:
                    ending = self._handle(sock, pdu, outstanding) or ending
        except (OSError, CmppProtocolError) as exc:
            for ident, started in outstanding.values():
                self.ledger.add(
                    Attempt(ident, started, time.monotonic(), "cut", type(exc).__name__)
                )

    def _handle(
        self, sock: socket.socket, pdu: Pdu, outstanding: dict[int, tuple[str, float]]
    ) -> bool:
        """Record an answer or answer a request; True when filterd ends the session."""
        if isinstance(pdu, SubmitResp) and pdu.sequence_id in outstanding:
            ident, started = outstanding.pop(pdu.sequence_id)
            outcome = "delivered" if pdu.result == 0 else f"result {pdu.result}"
            self.ledger.add(Attempt(ident, started, time.monotonic(), outcome, str(pdu.result)))
            if pdu.result != 0:
                self.stopping.wait(RETRY_PACE_S)  # an SP backs off on errors
        elif isinstance(pdu, ActiveTest):
            sock.sendall(encode(ActiveTestResp(pdu.sequence_id), V30))
        elif isinstance(pdu, Deliver):
            sock.sendall(encode(DeliverResp(pdu.sequence_id, msg_id=pdu.msg_id), V30))
        elif isinstance(pdu, Terminate):
            sock.sendall(encode(TerminateResp(pdu.sequence_id), V30))
            return True
        return False

    def _read_one(self, sock: socket.socket, framer: Framer) -> Pdu | None:
        while (pdu := framer.next_pdu()) is None:
            data = sock.recv(65536)
            if not data:
                return None
            framer.feed(data)
        return pdu

    def _submit(self, sequence: int, ident: str) -> Submit:
        return Submit(
            sequence, msg_src=CMPP_SP_ID, src_id=NUMBER, service_id="MKT",
            dest_terminal_ids=(self.destination,), msg_content=ident.encode(),
        )  # fmt: skip
