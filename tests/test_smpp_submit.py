"""The submit_sm path (filterd/smpp/submit.py) end to end: decisions and their statuses,
one decision for the parts of a concatenated message, carrier and registry outages."""

from __future__ import annotations

import pytest

from filterd.model import ALL_SENDERS, Kind
from tests.conftest import ServerPool
from tests.smpp_relay_helpers import BOB, CAROL, JANE, Relay


def test_decisions(smpp_relay: Relay) -> None:
    """Consented → forwarded with a message id; refused → 0x400; no consent → 0x401;
    nothing undecided reaches the carrier."""
    smpp_relay.record(JANE, Kind.CONSENT)
    smpp_relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    client = smpp_relay.client()
    kind, message_id = client.submit(JANE)
    assert kind == "ok"
    assert message_id
    assert client.submit(BOB) == ("error", 0x400)
    assert client.submit(CAROL) == ("error", 0x401)
    [forwarded] = smpp_relay.smsc.wait_submits(1)
    assert (forwarded.destination_addr, forwarded.short_message) == (JANE, b"hello")


def test_transactional_and_invalid_destination(smpp_relay: Relay) -> None:
    """A transactional account is forwarded without consent; an invalid number → 0x0B."""
    client = smpp_relay.client("notify", "notify-1")
    assert client.submit(CAROL)[0] == "ok"
    assert client.submit("12345") == ("error", 0x0B)


def ucs2_parts(text: str, reference: bytes, sixteen_bit: bool = False) -> list[bytes]:
    """A 3-part UCS2 message with a concatenation UDH (8- or 16-bit reference)."""
    data = text.encode("utf-16-be")
    size = -(-len(data) // 3) + (-(-len(data) // 3)) % 2
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        if sixteen_bit:
            udh = b"\x06\x08\x04" + reference + bytes([len(chunks), seq])
        else:
            udh = b"\x05\x00\x03" + reference + bytes([len(chunks), seq])
        parts.append(udh + chunk)
    return parts


LONG = "尊敬的客户，您好！本店春季大促销活动现已开始，全场商品八折优惠，欢迎光临选购。" * 3


@pytest.mark.parametrize("sixteen_bit", [False, True])
def test_concatenated_ucs2_one_decision(smpp_relay: Relay, sixteen_bit: bool) -> None:
    """All parts of a 3-part UCS2 Chinese message get one decision: all rejected for a
    refused number; for a consented one all forwarded byte for byte (UDH intact), even
    when a refusal lands between the parts."""
    smpp_relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    reference = b"\x12\x34" if sixteen_bit else b"\x42"
    refused = [
        client.submit(BOB, part, esm_class=0x40, data_coding=8)
        for part in ucs2_parts(LONG, reference, sixteen_bit)
    ]
    assert refused == [("error", 0x400)] * 3
    parts = ucs2_parts(LONG, reference, sixteen_bit)
    assert client.submit(JANE, parts[0], esm_class=0x40, data_coding=8)[0] == "ok"
    smpp_relay.record(
        JANE, Kind.REFUSAL, "acme"
    )  # after the first part: same message, same decision
    for part in parts[1:]:
        assert client.submit(JANE, part, esm_class=0x40, data_coding=8)[0] == "ok"
    forwarded = smpp_relay.smsc.wait_submits(3)
    assert [p.short_message for p in forwarded] == parts
    assert {(p.esm_class, p.data_coding) for p in forwarded} == {(0x40, 8)}
    assert client.submit(JANE, b"a new message") == ("error", 0x400)


def test_parts_sent_together_share_one_decision(smpp_relay: Relay) -> None:
    """Parts of one message submitted back to back (all in flight at once) get one
    decision: all forwarded, or all refused."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    parts = ucs2_parts(LONG, b"\x77")
    for part in parts:
        client.send(JANE, part, esm_class=0x40, data_coding=8)
    answers = [client.answer() for _ in parts]
    assert [kind for kind, _ in answers] == ["ok"] * 3
    assert len(smpp_relay.smsc.wait_submits(3)) == 3


def test_carrier_down_then_up(smpp_relay: Relay) -> None:
    """Carrier down: submits get ESME_RMSGQFUL (0x14), never dropped silently; the relay
    rebinds by itself when the carrier is back."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    smpp_relay.smsc.stop()
    assert client.submit(JANE) == ("error", 0x14)
    smpp_relay.smsc.start()
    smpp_relay.smsc.wait_bound(60)
    assert client.submit(JANE)[0] == "ok"


def test_registry_down_throttles(smpp_relay: Relay, server_pool: ServerPool) -> None:
    """Registry down: ESME_RTHROTTLED (0x58) so the client retries; back: decided again."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    smpp_relay.registry_server.kill()
    assert client.submit(JANE) == ("error", 0x58)
    server_pool.get("valkey")
    assert client.submit(JANE)[0] == "ok"
