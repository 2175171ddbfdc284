"""The delivery hub between a relay's processes: its frames (any bytes parse or raise
HubProtocolError), and the parent's Hub and a worker's HubClient over real unix socket
pairs, carrying SMPP deliveries (the CMPP wire: tests/test_cmpp_hub.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd import hub as hub_module
from filterd.hub import (
    Delivery,
    FrameReader,
    Hub,
    HubClient,
    HubProtocolError,
    Receivers,
    encode_deliver,
    encode_receivers,
)
from filterd.smpp.encode import encode
from filterd.smpp.hub import SMPP_WIRE, SmppDelivery
from filterd.smpp.pdu import DeliverSm, SubmitSm
from tests.helpers import until

MO = DeliverSm(
    sequence_number=9, source_addr_ton=1, source_addr="8613800138000",
    destination_addr="10690001", short_message=b"hello",
)  # fmt: skip


def frames(data: bytes) -> list[Receivers | Delivery[SmppDelivery]]:
    """Every whole frame in `data`."""
    reader = FrameReader(SMPP_WIRE)
    reader.feed(data)
    found = []
    while (frame := reader.next_frame()) is not None:
        found.append(frame)
    return found


def test_frames_round_trip_byte_by_byte() -> None:
    """RECEIVERS and DELIVER frames decode to what was encoded, also fed one octet at a time."""
    data = encode_receivers(["promo", "notify", "promo"]) + encode_deliver(SMPP_WIRE, "promo", MO)
    expected = [Receivers(frozenset({"promo", "notify"})), Delivery("promo", MO)]
    assert frames(data) == expected
    reader = FrameReader(SMPP_WIRE)
    found = []
    for octet in data:
        reader.feed(bytes([octet]))
        if (frame := reader.next_frame()) is not None:
            found.append(frame)
    assert found == expected
    assert frames(encode_receivers([])) == [Receivers(frozenset())]


def frame(body: bytes) -> bytes:
    """`body` with its length prefix."""
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(b""), "length 0"),
        (struct.pack(">I", FrameReader(SMPP_WIRE).max_frame + 1), "outside"),
        (frame(b"\x07abc"), "unknown frame type 0x07"),
        (frame(b"\x02"), "without an account name"),
        (frame(b"\x02\x05pro"), "bad account name"),
        (frame(b"\x02\x00" + encode(MO)), "bad account name"),
        (frame(b"\x02\x05promo" + encode(MO)[:-1]), "bad PDU"),
        (frame(b"\x02\x05promo" + encode(SubmitSm(sequence_number=1))), "SubmitSm"),
        (frame(b"\x01\x03ab"), "bad account name"),
        (frame(b"\x01\x02a\x00"), "bad account name"),
        (frame(b"\x01\x02\xff\xfe"), "bad account name"),
    ],
)
def test_malformed_frames_are_refused(data: bytes, reason: str) -> None:
    """A bad length, an unknown type, a bad account name, a broken PDU or a PDU other than
    deliver_sm/data_sm raise HubProtocolError with the reason."""
    with pytest.raises(HubProtocolError, match=reason):
        frames(data)


@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_the_protocol_error(data: bytes) -> None:
    """Fuzz: arbitrary bytes either yield frames (or wait for more) or raise
    HubProtocolError, never another exception."""
    with contextlib.suppress(HubProtocolError):
        frames(data)


@given(st.binary(max_size=300))
def test_any_deliver_body_parses_or_raises(body: bytes) -> None:
    """Fuzz a DELIVER frame's body behind a valid account name: a frame or HubProtocolError."""
    with contextlib.suppress(HubProtocolError):
        frames(frame(b"\x02\x05promo" + body))


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """An event loop for the hub's tasks."""
    with asyncio.Runner() as loop:
        yield loop


async def worker_end(
    hub: Hub[SmppDelivery], name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A socket pair with one end attached to `hub`; the other end as streams."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    hub.attach(ours, name)
    return await asyncio.open_unix_connection(sock=theirs)


async def next_frame(reader: asyncio.StreamReader) -> Receivers | Delivery[SmppDelivery]:
    """Read one frame from a stream."""
    head = await asyncio.wait_for(reader.readexactly(4), 30)
    body = await asyncio.wait_for(reader.readexactly(struct.unpack(">I", head)[0]), 30)
    [found] = frames(head + body)
    return found


def test_hub_routes_to_the_holder_and_survives_garbage(runner: asyncio.Runner) -> None:
    """The hub passes a DELIVER to its own relay first, else to the worker that announced a
    receiver bind of that system_id; a worker sending garbage has its link closed while
    the hub goes on routing for the others; once the holder's bind is gone, nothing is
    routed to it."""
    local: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

    def deliver_local(system_id: str, pdu: object) -> bool:
        if system_id != "parent-id":
            return False
        local.put_nowait((system_id, pdu))
        return True

    async def scenario() -> None:
        hub = Hub(SMPP_WIRE)
        hub.local = deliver_local
        a_reader, a_writer = await worker_end(hub, "a")
        b_reader, b_writer = await worker_end(hub, "b")
        _, c_writer = await worker_end(hub, "c")
        a_writer.write(encode_receivers(["promo"]) + encode_deliver(SMPP_WIRE, "parent-id", MO))
        assert await asyncio.wait_for(local.get(), 30) == ("parent-id", MO)  # a's set is in
        b_writer.write(b"\x00\x00\x00\x03\x09xx")  # unknown type: b's link is closed
        assert await asyncio.wait_for(b_reader.read(), 30) == b""
        c_writer.write(
            encode_deliver(SMPP_WIRE, "parent-id", MO) + encode_deliver(SMPP_WIRE, "promo", MO)
        )
        assert await next_frame(a_reader) == Delivery("promo", MO)
        assert await asyncio.wait_for(local.get(), 30) == ("parent-id", MO)
        assert hub.forward("promo", MO)  # the parent's relay: to worker a
        assert await next_frame(a_reader) == Delivery("promo", MO)
        assert not hub.forward("nobody", MO)
        a_writer.write(
            encode_receivers([]) + encode_deliver(SMPP_WIRE, "parent-id", MO)
        )  # a's client left
        assert await asyncio.wait_for(local.get(), 30) == ("parent-id", MO)
        assert sorted(hub.holders()) == ["a", "c"]
        assert not hub.forward("promo", MO)
        await hub.close()
        assert await asyncio.wait_for(a_reader.read(), 30) == b""
        for writer in (a_writer, b_writer, c_writer):
            writer.close()

    runner.run(scenario())


def test_client_sends_frames_and_delivers_what_the_hub_sends(runner: asyncio.Runner) -> None:
    """A worker's HubClient writes RECEIVERS and DELIVER frames, hands a DELIVER from the
    hub to its relay, and ends (run() returns) when the hub sends garbage; after that
    forward() reports the link down."""
    delivered: list[str] = []

    def deliver_local(system_id: str, pdu: object) -> bool:
        delivered.append(system_id)
        return True

    async def scenario() -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        client = await HubClient.open(SMPP_WIRE, theirs.detach(), deliver_local)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        running = asyncio.create_task(client.run())
        client.receivers(frozenset({"promo"}))
        assert client.forward("notify", MO)
        assert await next_frame(reader) == Receivers(frozenset({"promo"}))
        assert await next_frame(reader) == Delivery("notify", MO)
        writer.write(encode_deliver(SMPP_WIRE, "promo", MO) + b"\xff" * 8)
        await asyncio.wait_for(running, 30)
        assert delivered == ["promo"]
        assert not client.forward("promo", MO)
        await client.close()
        writer.close()

    runner.run(scenario())


def test_a_peer_that_does_not_read_gets_no_more_than_the_backlog(
    runner: asyncio.Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deliveries for a worker that stops reading (stuck, SIGSTOPped) are queued up to
    MAX_BACKLOG bytes; past it forward() reports them undeliverable instead of
    growing the parent's memory; a worker's HubClient does the same toward the
    parent."""
    monkeypatch.setattr(hub_module, "MAX_BACKLOG", 256 * 1024)

    async def scenario() -> None:
        hub = Hub(SMPP_WIRE)
        _, writer = await worker_end(hub, "stuck")  # its reader is never read
        writer.write(encode_receivers(["promo"]))
        await until("the receivers set", lambda: hub.holders().get("stuck") == {"promo"})
        sent = 0
        while hub.forward("promo", MO):
            sent += 1
            assert sent < 100_000, "the backlog is not bounded"
        assert sent * len(encode_deliver(SMPP_WIRE, "promo", MO)) >= 256 * 1024 - 65536
        await hub.close()
        writer.close()

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        client = await HubClient.open(SMPP_WIRE, theirs.detach(), lambda _s, _p: True)
        _, parent_writer = await asyncio.open_unix_connection(sock=ours)  # never read
        sent = 0
        while client.forward("promo", MO):
            sent += 1
            assert sent < 100_000, "the backlog is not bounded"
        assert client.up
        await client.close()
        parent_writer.close()

    runner.run(scenario())
