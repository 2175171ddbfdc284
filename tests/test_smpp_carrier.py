"""The carrier link (ESME client) against a fake SMSC on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from collections.abc import Iterator

import pytest

from filterd import logs
from filterd.settings import SmppUpstream
from filterd.smpp.carrier import CarrierClient, CarrierUnavailable
from filterd.smpp.encode import encode
from filterd.smpp.pdu import DeliverSm, SubmitSm, SubmitSmResp
from tests.smsc import FakeSmsc


@pytest.fixture
def smsc() -> Iterator[FakeSmsc]:
    """A fake carrier SMSC."""
    server = FakeSmsc().start()
    yield server
    server.shutdown()


def upstream(port: int, password: str = "secret1") -> SmppUpstream:  # noqa: S107
    """Link settings for the fake SMSC."""
    return SmppUpstream("127.0.0.1", port, "filterd", password, window=4)


def test_binds_submits_and_answers_deliveries(smsc: FakeSmsc) -> None:
    """The client binds as a transceiver, submits (many at once, within its window),
    and answers the carrier's deliver_sm with the handler's status."""
    delivered: list[DeliverSm] = []

    async def on_deliver(pdu: DeliverSm) -> int:
        delivered.append(pdu)
        return 0x58

    async def run() -> tuple[list[SubmitSmResp | object], int]:
        stop = asyncio.Event()
        client = CarrierClient(upstream(smsc.port), on_deliver)
        task = asyncio.create_task(client.run(stop))
        await asyncio.wait_for(client.wait_bound(), 30)
        answers = await asyncio.gather(
            *(
                client.submit(SubmitSm(sequence_number=0, destination_addr=str(i)))
                for i in range(10)
            )
        )
        status = await asyncio.to_thread(smsc.send_mo, "8613800138000", "10690001", b"hi")
        stop.set()
        await asyncio.wait_for(task, 30)
        return list(answers), status

    answers, status = asyncio.run(run())
    assert sorted(a.message_id for a in answers) == sorted(f"c{i}" for i in range(1, 11))  # type: ignore[attr-defined]
    assert status == 0x58
    assert [p.short_message for p in delivered] == [b"hi"]
    assert sorted(p.destination_addr for p in smsc.submits) == sorted(str(i) for i in range(10))


def test_unavailable_while_down_and_reconnects(smsc: FakeSmsc) -> None:
    """With the carrier gone, submit() fails at once with CarrierUnavailable; the client
    rebinds by itself when the carrier is back."""

    async def no_deliveries(pdu: DeliverSm) -> int:
        return 0

    async def run() -> str:
        stop = asyncio.Event()
        client = CarrierClient(upstream(smsc.port), no_deliveries)
        task = asyncio.create_task(client.run(stop))
        await asyncio.wait_for(client.wait_bound(), 30)
        await asyncio.to_thread(smsc.stop)
        with pytest.raises(CarrierUnavailable):  # the link is gone: failed at once or in flight
            await client.submit(SubmitSm(sequence_number=0, destination_addr="1"))
        await asyncio.to_thread(smsc.start)
        await asyncio.wait_for(client.wait_bound(), 60)
        answer = await client.submit(SubmitSm(sequence_number=0, destination_addr="2"))
        stop.set()
        await asyncio.wait_for(task, 30)
        assert isinstance(answer, SubmitSmResp)
        return answer.message_id

    assert asyncio.run(run()).startswith("c")
    assert smsc.binds == 2


def test_wrong_password_never_binds(smsc: FakeSmsc) -> None:
    """A refused bind leaves the link down (submits fail) and is retried, not fatal."""

    async def no_deliveries(pdu: DeliverSm) -> int:
        return 0

    async def run() -> None:
        stop = asyncio.Event()
        client = CarrierClient(upstream(smsc.port, password="wrong"), no_deliveries)  # noqa: S106
        task = asyncio.create_task(client.run(stop))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.wait_bound(), 1.5)
        with pytest.raises(CarrierUnavailable):
            await client.submit(SubmitSm(sequence_number=0, destination_addr="1"))
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(run())
    assert smsc.binds == 0


def test_unknown_response_and_bad_body_keep_the_link(smsc: FakeSmsc) -> None:
    """An unknown response PDU from the carrier is ignored and a request with a malformed
    body is answered with an error: the link stays bound and submits keep working."""

    async def no_deliveries(pdu: DeliverSm) -> int:
        return 0

    async def run() -> SubmitSmResp | object:
        stop = asyncio.Event()
        client = CarrierClient(upstream(smsc.port), no_deliveries)
        task = asyncio.create_task(client.run(stop))
        await asyncio.wait_for(client.wait_bound(), 30)
        unknown_response = (16).to_bytes(4, "big") + (0x80000021).to_bytes(4, "big") + bytes(8)
        # a deliver_sm whose body ends inside its TLV
        body = encode(DeliverSm(sequence_number=9, short_message=b"x"))[16:] + b"\x04\x24\x00"
        truncated = (16 + len(body)).to_bytes(4, "big") + (5).to_bytes(4, "big") + bytes(4)
        truncated += (9).to_bytes(4, "big") + body
        await asyncio.to_thread(smsc.send_raw, unknown_response + truncated)
        answer = await client.submit(SubmitSm(sequence_number=0, destination_addr="1"))
        bound = client.bound
        stop.set()
        await asyncio.wait_for(task, 30)
        assert bound
        return answer

    assert isinstance(asyncio.run(run()), SubmitSmResp)
    assert smsc.binds == 1


class _Watched(io.StringIO):
    """A log stream that sets `seen` once `needle` has been written."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()

    def write(self, text: str) -> int:
        """Keep the text; note the needle."""
        written = super().write(text)
        if self.needle in self.getvalue():
            self.seen.set()
        return written


def test_a_carrier_that_stays_down_is_logged_once_not_at_every_retry() -> None:
    """The first failed connect is a warning; the retries after it (1 s, 2 s, ...) are
    logged at debug only, so a carrier that stays away does not fill the log."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def no_deliveries(pdu: DeliverSm) -> int:
        return 0

    async def run(stream: _Watched) -> None:
        stop = asyncio.Event()
        client = CarrierClient(upstream(port), no_deliveries)
        task = asyncio.create_task(client.run(stop))
        await asyncio.wait_for(stream.seen.wait(), 30)  # the second failure's line
        stop.set()
        await asyncio.wait_for(task, 30)

    async def main() -> str:
        stream = _Watched('"failures":2')
        logs.configure(stream, "DEBUG")
        try:
            await run(stream)
        finally:
            logs.configure(sys.stderr, "WARNING")
        return stream.getvalue()

    lines = [json.loads(line) for line in asyncio.run(main()).splitlines()]
    downs = [line for line in lines if line["event"] == "carrier_link_down"]
    assert [(d["failures"], d["level"]) for d in downs[:2]] == [(1, "warning"), (2, "debug")]
