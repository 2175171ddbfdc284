"""Encoding SMPP PDUs (filterd/smpp/encode.py): round trips through the decoder for every
PDU type, byte-exact layouts, and refusing what the wire cannot carry."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import (
    PDU_CLASSES,
    AnyPdu,
    BindTransceiverResp,
    BindTransmitter,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
)
from tests.smpp_codec_helpers import BIND_TRANSMITTER_HEX, STRATEGIES, UNKNOWN_PDUS, frame

# -- round trips -----------------------------------------------------------------------


def test_every_pdu_class_has_a_strategy() -> None:
    """The round-trip properties below cover every PDU class the codec decodes."""
    assert set(STRATEGIES) == set(PDU_CLASSES)
    assert len(PDU_CLASSES) == 17


@pytest.mark.parametrize("cls", PDU_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
@settings(max_examples=60)
def test_round_trip_every_pdu_type(cls: type[Pdu], data: st.DataObject) -> None:
    """decode(encode(p)) == p for every PDU type, optional parameters included."""
    pdu = data.draw(STRATEGIES[cls])
    wire = encode(pdu)
    assert struct.unpack_from(">II", wire) == (len(wire), cls.command_id)
    assert decode(wire) == pdu


@given(UNKNOWN_PDUS)
@settings(max_examples=100)
def test_unknown_pdu_round_trip(pdu: UnknownPdu) -> None:
    """An unknown command id decodes to UnknownPdu with its raw body, and encodes back."""
    wire = encode(pdu)
    assert decode(wire) == pdu
    assert wire == frame(pdu.command_id, pdu.body, pdu.sequence_number, pdu.command_status)


def test_unknown_tlvs_round_trip_in_order() -> None:
    """Unknown, repeated and empty optional parameters keep their order and bytes."""
    tlvs = ((0x1403, b"vendor"), (0x020C, b"\x00\x07"), (0x1403, b""), (0x0005, b"\x01"))
    pdu = SubmitSm(sequence_number=9, destination_addr="8613800138000", tlvs=tlvs)
    assert decode(encode(pdu)).tlvs == tlvs  # type: ignore[union-attr]


# -- byte-exact encodings (hex from the SMPP 3.4 layouts, §4.1.1 / §4.4.1 / §4.6.1) ----


def test_bind_transmitter_bytes() -> None:
    """A bind_transmitter encodes to the SMPP 3.4 layout byte for byte, and decodes back."""
    pdu = BindTransmitter(sequence_number=1, system_id="promo", password="chg-me-1")  # noqa: S106
    assert encode(pdu) == bytes.fromhex(BIND_TRANSMITTER_HEX)
    assert decode(bytes.fromhex(BIND_TRANSMITTER_HEX)) == pdu


SUBMIT_SM_HEX = (
    "00000040"  # command_length 64
    "00000004"  # submit_sm
    "00000000"  # command_status
    "00000002"  # sequence_number
    "00"  # service_type ""
    "00 01 313036393030303100"  # source ton 0, npi 1, "10690001"
    "01 01 3836313338303031333830303000"  # dest ton 1, npi 1, "8613800138000"
    "00 00 00"  # esm_class, protocol_id, priority_flag
    "00 00"  # schedule_delivery_time "", validity_period ""
    "01 00 08 00"  # registered_delivery, replace_if_present, data_coding UCS2, default id
    "04 90008ba2"  # sm_length 4, "退订" in UTF-16BE
    "0204 0002 0001"  # user_message_reference = 1
)


def test_submit_sm_bytes() -> None:
    """A UCS2 submit_sm with one optional parameter matches the hand-written layout."""
    pdu = SubmitSm(
        sequence_number=2,
        source_addr_npi=1,
        source_addr="10690001",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="8613800138000",
        registered_delivery=1,
        data_coding=8,
        short_message="退订".encode("utf-16-be"),
        tlvs=((0x0204, b"\x00\x01"),),
    )
    assert encode(pdu) == bytes.fromhex(SUBMIT_SM_HEX)
    assert decode(bytes.fromhex(SUBMIT_SM_HEX)) == pdu


@pytest.mark.parametrize(
    ("pdu", "wire"),
    [
        (EnquireLink(sequence_number=5), "00000010 00000015 00000000 00000005"),
        (EnquireLinkResp(sequence_number=5), "00000010 80000015 00000000 00000005"),
        (Unbind(sequence_number=6), "00000010 00000006 00000000 00000006"),
        (UnbindResp(sequence_number=6), "00000010 80000006 00000000 00000006"),
        (
            GenericNack(command_status=3, sequence_number=8),
            "00000010 80000000 00000003 00000008",
        ),
        (
            SubmitSmResp(sequence_number=2, message_id="m1"),
            "00000013 80000004 00000000 00000002 6d3100",
        ),
        (
            SubmitSmResp(command_status=0x400, sequence_number=2),
            "00000010 80000004 00000400 00000002",
        ),
        (
            SubmitSmResp(command_status=0x401, sequence_number=3),
            "00000010 80000004 00000401 00000003",
        ),
        (
            BindTransceiverResp(sequence_number=1, system_id="filterd", tlvs=((0x0210, b"\x34"),)),
            "0000001d 80000009 00000000 00000001 66696c7465726400 0210 0001 34",
        ),
        (
            BindTransceiverResp(command_status=0x0E, sequence_number=1),
            "00000010 80000009 0000000e 00000001",
        ),
        (DeliverSmResp(sequence_number=7), "00000011 80000005 00000000 00000007 00"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Pdu) else "",
)
def test_small_pdu_bytes(pdu: Pdu, wire: str) -> None:
    """Header-only PDUs and responses have their SMPP 3.4 bytes; an error response has no body."""
    assert encode(pdu) == bytes.fromhex(wire)
    assert decode(bytes.fromhex(wire)) == pdu


# -- encoding refuses what the wire cannot carry ---------------------------------------


@pytest.mark.parametrize(
    "pdu",
    [
        SubmitSm(sequence_number=1, source_addr="1" * 21),
        SubmitSm(sequence_number=1, source_addr="a\x00b"),
        SubmitSm(sequence_number=1, source_addr="退订"),
        SubmitSm(sequence_number=1, short_message=bytes(255)),
        SubmitSm(sequence_number=1, esm_class=256),
        SubmitSm(sequence_number=1, tlvs=((0x10000, b""),)),
        SubmitSm(sequence_number=2**32),
        SubmitSm(sequence_number=1, command_status=-1),
        BindTransmitter(sequence_number=1, password="123456789"),  # noqa: S106
        EnquireLink(sequence_number=1, tlvs=((0x0210, b"\x34"),)),
        UnknownPdu(command_id=2**32, sequence_number=1),
    ],
)
def test_encode_refuses_fields_the_wire_cannot_carry(pdu: AnyPdu) -> None:
    """Over-long strings, NUL, non-Latin-1, >254-octet messages, out-of-range ints: ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        encode(pdu)


def test_encode_refuses_a_non_string_field() -> None:
    """A C-Octet String field holding bytes is a programming error (TypeError)."""
    with pytest.raises(TypeError, match="source_addr must be str"):
        encode(SubmitSm(sequence_number=1, source_addr=b"123"))  # type: ignore[arg-type]
