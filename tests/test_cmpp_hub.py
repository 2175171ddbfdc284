"""The CMPP relay's deliveries on the hub (filterd/cmpp/hub.py): a CMPP_DELIVER travels
as a 3.0 message whatever version it came in; anything else is a HubProtocolError; and
the generic hub routes them between processes over a real socket pair."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.cmpp.encode import encode
from filterd.cmpp.header import V20, V30
from filterd.cmpp.hub import CMPP_WIRE
from filterd.cmpp.pdu import ActiveTest, Deliver
from filterd.cmpp.report import StatusReport, encode_report
from filterd.hub import (
    Delivery,
    FrameReader,
    Hub,
    HubProtocolError,
    encode_deliver,
    encode_receivers,
)

REPORT_20 = Deliver(
    7, msg_id=1 << 63, dest_id="10690001", src_terminal_id="8613800138000",
    registered_delivery=1,
    msg_content=encode_report(StatusReport(5, "DELIVRD", "2612071000", "2612071001",
                                           "8613800138000", 1), V20),
)  # fmt: skip
MO_30 = Deliver(
    8, msg_id=3, dest_id="106900011234", service_id="MO", msg_fmt=8,
    src_terminal_id="8613800138000", src_terminal_type=1, msg_content="退订".encode("utf-16-be"),
    link_id="link-1",
)  # fmt: skip


def test_deliveries_round_trip_in_the_3_0_layout() -> None:
    """A status report (its 2.0 content carried as it is) and a 3.0 MO with LinkID and a
    terminal type come back from their bytes as they were."""
    for deliver in (REPORT_20, MO_30):
        data = CMPP_WIRE.encode(deliver)
        assert data == encode(deliver, V30)
        assert CMPP_WIRE.decode(data) == deliver


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode(MO_30, V30)[:-1], "bad message"),
        (encode(MO_30, V20), "bad message"),
        (encode(ActiveTest(1), V30), "ActiveTest"),
        (b"", "bad message"),
    ],
)
def test_other_bytes_are_refused(data: bytes, reason: str) -> None:
    """A cut message, a 2.0 layout, or a message other than CMPP_DELIVER raises
    HubProtocolError."""
    with pytest.raises(HubProtocolError, match=reason):
        CMPP_WIRE.decode(data)


def test_status_reports_are_told_from_replies() -> None:
    """Registered_Delivery = 1 is a status report; an MO is not."""
    assert CMPP_WIRE.is_receipt(REPORT_20)
    assert not CMPP_WIRE.is_receipt(MO_30)


@given(st.binary(max_size=400))
def test_any_deliver_body_parses_or_raises(body: bytes) -> None:
    """Fuzz a DELIVER frame's body behind a valid account name: a frame or HubProtocolError."""
    data = b"\x02\x06900001" + body
    reader = FrameReader(CMPP_WIRE)
    reader.feed(len(data).to_bytes(4, "big") + data)
    with contextlib.suppress(HubProtocolError):
        reader.next_frame()


def test_hub_passes_a_report_to_the_worker_holding_the_sp() -> None:
    """A worker that announced a connection of SP 900001 gets the parent's report for it,
    intact, as a DELIVER frame in the CMPP wire."""

    async def scenario() -> object:
        hub = Hub(CMPP_WIRE)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        hub.attach(ours, "w")
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        writer.write(encode_receivers(["900001"]))
        for _ in range(300):
            if hub.holders().get("w") == {"900001"}:
                break
            await asyncio.sleep(0.01)
        assert hub.forward("900001", REPORT_20)
        assert not hub.forward("900002", REPORT_20)
        frames = FrameReader(CMPP_WIRE)
        while (frame := frames.next_frame()) is None:
            frames.feed(await asyncio.wait_for(reader.read(65536), 30))
        await hub.close()
        writer.close()
        return frame

    frame = asyncio.run(scenario())
    assert frame == Delivery("900001", REPORT_20)
    assert encode_deliver(CMPP_WIRE, "900001", REPORT_20)[5:12] == b"\x06900001"
