"""The SMPP relay's deliveries on the hub (filterd/smpp/hub.py): deliver_sm and data_sm
travel as whole PDUs; anything else, or a broken PDU, is a HubProtocolError."""

from __future__ import annotations

import pytest

from filterd.hub import HubProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.fields import ESM_DELIVERY_RECEIPT
from filterd.smpp.hub import SMPP_WIRE
from filterd.smpp.pdu import DataSm, DeliverSm, SubmitSm

MO = DeliverSm(
    sequence_number=9, source_addr_ton=1, source_addr="8613800138000",
    destination_addr="10690001", short_message=b"hello",
)  # fmt: skip


def test_deliveries_round_trip() -> None:
    """A deliver_sm and a data_sm come back from their bytes as they were."""
    data_sm = DataSm(sequence_number=3, source_addr="8613800138000", destination_addr="1069")
    for pdu in (MO, data_sm):
        assert SMPP_WIRE.decode(SMPP_WIRE.encode(pdu)) == pdu


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode(MO)[:-1], "bad PDU"),
        (encode(SubmitSm(sequence_number=1)), "SubmitSm"),
        (b"", "bad PDU"),
    ],
)
def test_other_bytes_are_refused(data: bytes, reason: str) -> None:
    """A cut PDU, or a PDU other than deliver_sm / data_sm, raises HubProtocolError."""
    with pytest.raises(HubProtocolError, match=reason):
        SMPP_WIRE.decode(data)


def test_receipts_are_told_from_replies() -> None:
    """A deliver_sm flagged as a delivery receipt is a receipt; a consumer's reply is not."""
    receipt = DeliverSm(sequence_number=1, esm_class=ESM_DELIVERY_RECEIPT, short_message=b"id:1")
    assert SMPP_WIRE.is_receipt(receipt)
    assert not SMPP_WIRE.is_receipt(MO)
