"""SMSC delivery receipts (filterd/smpp/receipt.py): reading the receipt text, rewriting
the message id in the text and the optional parameters, telling a receipt by esm_class."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import DataSm, DeliverSm
from filterd.smpp.receipt import (
    Receipt,
    is_receipt,
    parse_receipt,
    rewrite_receipt,
    with_receipt_id,
)
from filterd.smpp.tlv import TAG_MESSAGE_PAYLOAD, TAG_RECEIPTED_MESSAGE_ID
from tests.smpp_codec_helpers import DELIVER_SM_RECEIPT, RECEIPT_TEXT


def test_parse_receipt_fields() -> None:
    """Every field of the SMPP 3.4 Appendix B receipt format is read."""
    assert parse_receipt(RECEIPT_TEXT) == Receipt(
        message_id="abc123",
        stat="DELIVRD",
        err="000",
        sub="001",
        dlvrd="001",
        submit_date="2401011200",
        done_date="2401011201",
        text="Hello",
    )


@pytest.mark.parametrize(
    ("text", "message_id", "stat"),
    [
        (b"id:7F3A sub:001 dlvrd:000 stat:UNDELIV err:001 Text:x", "7F3A", "UNDELIV"),
        (b"ID:42 SUB:001 STAT:EXPIRED", "42", "EXPIRED"),
        (b"id:1 submit_date:2401011200 done_date:2401011201 stat:REJECTD err:0", "1", "REJECTD"),
        (b"id:99 stat:DELIVRD text:stat:FAKE id:evil", "99", "DELIVRD"),
        (b"id:  55   stat:ENROUTE", "55", "ENROUTE"),
        (b"id:abc", "abc", None),
    ],
)
def test_parse_receipt_variants(text: bytes, message_id: str, stat: str | None) -> None:
    """Keys in any case, _ for the date spaces, and text: swallowing the rest of the message."""
    receipt = parse_receipt(text)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == (message_id, stat)


@pytest.mark.parametrize("text", [b"", b"hello", b"STOP", b"valid:1 stat:DELIVRD", b"sid:1"])
def test_parse_receipt_without_id(text: bytes) -> None:
    """Text with no id: field is not a receipt."""
    assert parse_receipt(text) is None


def test_with_receipt_id_changes_only_the_id() -> None:
    """The id is replaced (even by one of another length); every other byte is kept."""
    out = with_receipt_id(RECEIPT_TEXT, "client-000042")
    assert out == RECEIPT_TEXT.replace(b"id:abc123", b"id:client-000042")
    with pytest.raises(ValueError, match="no id"):
        with_receipt_id(b"stat:DELIVRD", "x")


def test_with_receipt_id_fills_an_empty_id() -> None:
    """An empty id value is filled in right after 'id:', keeping the space before the next key."""
    assert with_receipt_id(b"id: sub:001 stat:DELIVRD", "C9") == b"id:C9 sub:001 stat:DELIVRD"
    assert with_receipt_id(b"id:", "C9") == b"id:C9"
    receipt = parse_receipt(b"id: stat:DELIVRD")
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == ("", "DELIVRD")


@given(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
    st.sampled_from(["DELIVRD", "EXPIRED", "UNDELIV", "REJECTD"]),
)
@settings(max_examples=100)
def test_rewritten_receipt_parses_with_the_new_id(new_id: str, stat: str) -> None:
    """After with_receipt_id the receipt parses with the new id and its other fields unchanged."""
    text = RECEIPT_TEXT.replace(b"DELIVRD", stat.encode())
    before = parse_receipt(text)
    after = parse_receipt(with_receipt_id(text, new_id))
    assert before is not None
    assert after == replace(before, message_id=new_id)


def test_rewrite_receipt_pdu() -> None:
    """rewrite_receipt swaps the carrier's id for the client's in the text and the TLV."""
    pdu = decode(DELIVER_SM_RECEIPT)
    assert isinstance(pdu, DeliverSm)
    out = rewrite_receipt(pdu, "C77")
    assert out.receipted_message_id() == "C77"
    assert out.tlv(TAG_RECEIPTED_MESSAGE_ID) == b"C77\x00"
    receipt = parse_receipt(out.short_message)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == ("C77", "DELIVRD")
    assert out.tlvs[1] == pdu.tlvs[1]
    assert replace(out, short_message=pdu.short_message, tlvs=pdu.tlvs) == pdu
    assert decode(encode(out)) == out


def test_rewrite_receipt_in_message_payload_and_data_sm() -> None:
    """A receipt carried in message_payload (deliver_sm or data_sm) is rewritten there."""
    tlvs = ((TAG_MESSAGE_PAYLOAD, b"id:X1 stat:DELIVRD"),)
    deliver = rewrite_receipt(DeliverSm(sequence_number=1, esm_class=4, tlvs=tlvs), "C1")
    data = rewrite_receipt(DataSm(sequence_number=1, esm_class=4, tlvs=tlvs), "C1")
    for pdu in (deliver, data):
        assert pdu.message_payload() == b"id:C1 stat:DELIVRD"
        assert pdu.receipted_message_id() is None
    assert deliver.short_message == b""


def test_rewrite_receipt_leaves_a_plain_message_alone() -> None:
    """A deliver_sm that holds no receipt comes back unchanged."""
    mo = DeliverSm(sequence_number=1, short_message=b"STOP")
    assert rewrite_receipt(mo, "C1") == mo


@pytest.mark.parametrize(
    ("esm_class", "expected"),
    [(0x00, False), (0x04, True), (0x44, True), (0x08, False), (0x20, True), (0x40, False)],
)
def test_is_receipt(esm_class: int, expected: bool) -> None:
    """esm_class message type 0x04 (receipt) or 0x20 (intermediate notification) is a receipt."""
    assert is_receipt(DeliverSm(sequence_number=1, esm_class=esm_class)) is expected


@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
@settings(max_examples=300)
def test_fuzz_receipt_parser(data: bytes) -> None:
    """parse_receipt() of any bytes returns a Receipt or None, never raises."""
    receipt = parse_receipt(data)
    assert receipt is None or isinstance(receipt, Receipt)
