"""The CMPP relay's deliveries on the hub (filterd/cmpp/hub.py): a CMPP_DELIVER travels
as a 3.0 message whatever version it came in; anything else is a HubProtocolError; the
generic hub routes them between processes over a real socket pair; and with
cmpp.workers = 2 a status report or MO that reaches either process's ISMG link gets to
the SP's connection in the other."""

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
from filterd.cmpp.report import StatusReport, decode_report, encode_report
from filterd.hub import (
    Delivery,
    FrameReader,
    Hub,
    HubProtocolError,
    encode_deliver,
    encode_receivers,
)
from filterd.identity import ConsumerHasher
from filterd.model import Channel, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.storage.redis import RedisRegistry
from tests.cmpp_relay_helpers import JANE, NUMBER, SECRET, CmppClient
from tests.cmpp_serve import serving
from tests.helpers import RedisProcess

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


async def consent(url: str, number: str) -> None:
    """Record acme's sms consent for the national number `number` (region CN)."""
    registry = RedisRegistry.from_url(url)
    service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
    address = normalize("+86" + number)
    await service.record(FactRequest(address, Kind.CONSENT, "acme", Channel.SMS, "test"),
                         origin="test")  # fmt: skip
    await service.close()
    await registry.close()


def test_two_processes_pass_reports_and_mo_to_the_sp(valkey_server: RedisProcess) -> None:
    """With cmpp.workers = 2 (two ISMG links), a status report on the SP's submit and a
    consumer's reply reach the SP's one connection whichever link they arrive on: the
    process without the connection hands them to the other through the hub."""
    asyncio.run(consent(valkey_server.url, JANE))
    with serving(valkey_server, workers=2) as served:
        ismg = served.ismg

        async def scenario() -> list[Deliver]:
            client = await CmppClient.open(served.port)
            assert (await client.connect()).status == 0
            await asyncio.sleep(0.5)  # the login reaches the hub before the deliveries
            answer = await client.submit(JANE)
            assert answer.result == 0
            [ismg_id] = ismg.msg_ids
            for link in (0, 1):
                assert await asyncio.to_thread(ismg.send_report, ismg_id, "86" + JANE,
                                               link=link) == 0  # fmt: skip
                assert await asyncio.to_thread(ismg.send_mo, "86" + JANE, NUMBER + "7",
                                               b"hi", link=link) == 0  # fmt: skip
            while len(client.received) < 4:
                pdu = await client.read()
                assert pdu is not None, "filterd closed the connection"
                client.received.append(pdu)
            await client.close()
            return [pdu for pdu in client.received if isinstance(pdu, Deliver)]

        delivered = asyncio.run(scenario())
        answer_id = None
        reports = [d for d in delivered if d.registered_delivery == 1]
        replies = [d for d in delivered if d.registered_delivery == 0]
        assert len(reports) == 2
        assert len(replies) == 2
        for report in reports:
            found = decode_report(report.msg_content, V30)
            answer_id = answer_id or found.msg_id
            assert found.msg_id == answer_id
            assert found.msg_id not in ismg.msg_ids  # filterd's own Msg_Id, not the ISMG's
        assert all(r.msg_content == b"hi" for r in replies)
