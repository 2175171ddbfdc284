"""What the carrier delivers (filterd/smpp/deliveries.py), end to end: opt-out and
opt-in replies recorded and confirmed, MO and receipts passed to the client (also
before the receipt's route has reached the registry)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from filterd.config.load import load as load_config
from filterd.model import Kind
from filterd.smpp.fields import ESM_DELIVERY_RECEIPT
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import BindReceiver, DeliverSm
from filterd.smpp.status import ESME_ROK
from filterd.storage import keys
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess, wait_until
from tests.smpp_relay_helpers import (
    BOB,
    JANE,
    NUMBER,
    Relay,
    bound_peer,
    config,
    free_port,
    in_process_relay,
    next_pdu,
    running_relay,
)


@pytest.mark.parametrize(
    ("text", "coding"),
    [
        ("退订", 8),
        ("ＴＤ", 8),
        ("td。", 8),
        ("Stop", 0),
        ("STOP please", 0),
    ],
)
def test_opt_out_keyword_records_refusal_and_confirms(
    smpp_relay: Relay, text: str, coding: int
) -> None:
    """An opt-out reply records a refusal for the number's sender (channel sms) before the
    carrier gets its deliver_sm_resp, and a confirmation goes back to the consumer."""
    smpp_relay.record(JANE, Kind.CONSENT)
    payload = text.encode("utf-16-be") if coding == 8 else text.encode("ascii")
    assert smpp_relay.smsc.send_mo(JANE, NUMBER, payload, data_coding=coding) == 0
    assert ("refusal", "acme", "sms-keyword") in smpp_relay.facts(JANE)
    [confirmation] = smpp_relay.smsc.wait_submits(1)
    assert (confirmation.source_addr, confirmation.destination_addr) == (NUMBER, JANE)
    client = smpp_relay.client()
    assert client.submit(JANE) == ("error", 0x400)


def test_start_after_stop(smpp_relay: Relay) -> None:
    """START after STOP records a consent (the reply as evidence): sending resumes."""
    assert smpp_relay.smsc.send_mo(BOB, NUMBER, b"STOP") == 0
    client = smpp_relay.client()
    assert client.submit(BOB) == ("error", 0x400)
    assert smpp_relay.smsc.send_mo(BOB, NUMBER, b"START") == 0
    assert client.submit(BOB)[0] == "ok"


def test_mo_and_receipts_reach_the_client(smpp_relay: Relay) -> None:
    """A receipt comes back to the submitting client with the client's message id;
    an MO to the account's number is passed on to its receiver bind."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    _, client_id = client.submit(JANE)
    smpp_relay.smsc.wait_submits(1)
    assert smpp_relay.smsc.send_receipt("c1") == 0
    while not client.received:
        client.smpp.read_once()
    receipt = client.received.pop()
    assert f"id:{client_id.decode() if isinstance(client_id, bytes) else client_id}".encode() in (
        receipt.short_message
    )
    assert smpp_relay.smsc.send_mo(JANE, NUMBER, b"hello there") == 0
    while not client.received:
        client.smpp.read_once()
    assert client.received.pop().short_message == b"hello there"


def test_a_receipt_before_its_route_is_stored_reaches_the_client(
    private_server: RedisProcess,
) -> None:
    """The client is answered before the route of its message is written: a receipt
    arriving while that write has not landed (here the registry refuses SETs, so it is
    tried again) is mapped from the relay's memory and reaches the client with its id;
    once the registry takes writes again the route is stored."""
    with running_relay(private_server) as relay:
        assert relay.log is not None
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        assert private_server.command(b"ACL SETUSER default -set") == b"+OK"
        status, client_id = client.submit(JANE)
        assert status == "ok"
        relay.smsc.wait_submits(1)
        relay.log.wait_for("route_write_failed")
        route = keys.message_key("c1").encode()
        assert private_server.command(b"EXISTS " + route) == b":0"
        assert relay.smsc.send_receipt("c1") == 0
        while not client.received:
            client.smpp.read_once()
        text = client_id.decode() if isinstance(client_id, bytes) else client_id
        assert f"id:{text}".encode() in client.received.pop().short_message
        assert private_server.command(b"ACL SETUSER default +set") == b"+OK"
        wait_until("route stored", lambda: private_server.command(b"EXISTS " + route) == b":1")


def test_with_workers_a_receipt_waits_for_another_process_route(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """With workers, a receipt whose route is not yet in the registry (the submitting
    process writes it behind its answer) is looked up again a moment later and reaches
    the client's receiver bind with the client's id."""
    settings = load_config(config(tmp_path, valkey_server.url, free_port()))
    assert settings.smpp is not None
    smpp = dataclasses.replace(settings.smpp, workers=2)
    receipt = DeliverSm(
        sequence_number=1, esm_class=ESM_DELIVERY_RECEIPT,
        short_message=b"id:c9 sub:001 dlvrd:001 stat:DELIVRD err:000 text:hello",
    )  # fmt: skip

    async def scenario() -> bytes:
        async with in_process_relay(smpp, valkey_server.url) as (relay, port):
            peer = await bound_peer(port, BindReceiver)
            answer = asyncio.create_task(relay.from_carrier(receipt))
            await asyncio.sleep(0.3)
            assert not answer.done()
            registry = RedisRegistry.from_url(valkey_server.url)
            await registry.remember_message("c9", "promo", "5a5a5a5a5a5a5a5a", 60)
            await registry.close()
            assert await answer == ESME_ROK
            delivered = await next_pdu(peer, Framer())
            peer.close()
            assert isinstance(delivered, DeliverSm)
            return delivered.short_message

    assert b"id:5a5a5a5a5a5a5a5a " in asyncio.run(scenario())
