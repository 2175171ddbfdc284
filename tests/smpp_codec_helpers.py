"""Shared by the tests of the SMPP codec (tests/test_smpp_{pdu,encode,decode,framer,
receipt}.py): Hypothesis strategies for every PDU, hand-built frames, hand-written
wire bytes, and the fuzz invariant's check."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from filterd.errors import FilterdError
from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import (
    PDU_CLASSES,
    AnyPdu,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DataSm,
    DataSmResp,
    DeliverSm,
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

U8 = st.integers(min_value=0, max_value=0xFF)
U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
TLVS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=40)), max_size=4
).map(tuple)


def cstr(size: int) -> st.SearchStrategy[str]:
    """Any C-Octet String value that fits a field of `size` octets (NUL included)."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=0xFF), max_size=size - 1)


def header_only(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """A PDU without a body."""
    return st.builds(cls, sequence_number=U32, command_status=U32)


def binds(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any bind request of class `cls`."""
    return st.builds(
        cls,
        sequence_number=U32,
        command_status=U32,
        system_id=cstr(16),
        password=cstr(9),
        system_type=cstr(13),
        interface_version=U8,
        addr_ton=U8,
        addr_npi=U8,
        address_range=cstr(41),
    )


def bind_resps(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any bind response of class `cls`, optional parameters included."""
    return st.builds(cls, sequence_number=U32, command_status=U32, system_id=cstr(16), tlvs=TLVS)


def id_resps(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any submit_sm_resp / deliver_sm_resp / data_sm_resp of class `cls`."""
    return st.builds(cls, sequence_number=U32, command_status=U32, message_id=cstr(65), tlvs=TLVS)


def short_messages(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any submit_sm / deliver_sm of class `cls` with every mandatory field drawn."""
    return st.builds(
        cls,
        sequence_number=U32,
        command_status=U32,
        service_type=cstr(6),
        source_addr_ton=U8,
        source_addr_npi=U8,
        source_addr=cstr(21),
        dest_addr_ton=U8,
        dest_addr_npi=U8,
        destination_addr=cstr(21),
        esm_class=U8,
        protocol_id=U8,
        priority_flag=U8,
        schedule_delivery_time=cstr(17),
        validity_period=cstr(17),
        registered_delivery=U8,
        replace_if_present_flag=U8,
        data_coding=U8,
        sm_default_msg_id=U8,
        short_message=st.binary(max_size=254),
        tlvs=TLVS,
    )


DATA_SMS = st.builds(
    DataSm,
    sequence_number=U32,
    command_status=U32,
    service_type=cstr(6),
    source_addr_ton=U8,
    source_addr_npi=U8,
    source_addr=cstr(65),
    dest_addr_ton=U8,
    dest_addr_npi=U8,
    destination_addr=cstr(65),
    esm_class=U8,
    registered_delivery=U8,
    data_coding=U8,
    tlvs=TLVS,
)
KNOWN_IDS = {cls.command_id for cls in PDU_CLASSES}
UNKNOWN_PDUS = st.builds(
    UnknownPdu,
    command_id=U32.filter(lambda c: c not in KNOWN_IDS),
    sequence_number=U32,
    command_status=U32,
    body=st.binary(max_size=64),
)
STRATEGIES: dict[type[Pdu], st.SearchStrategy[Pdu]] = {
    GenericNack: header_only(GenericNack),
    BindReceiver: binds(BindReceiver),
    BindTransmitter: binds(BindTransmitter),
    BindTransceiver: binds(BindTransceiver),
    BindReceiverResp: bind_resps(BindReceiverResp),
    BindTransmitterResp: bind_resps(BindTransmitterResp),
    BindTransceiverResp: bind_resps(BindTransceiverResp),
    Unbind: header_only(Unbind),
    UnbindResp: header_only(UnbindResp),
    EnquireLink: header_only(EnquireLink),
    EnquireLinkResp: header_only(EnquireLinkResp),
    SubmitSm: short_messages(SubmitSm),
    DeliverSm: short_messages(DeliverSm),
    DataSm: DATA_SMS,
    SubmitSmResp: id_resps(SubmitSmResp),
    DeliverSmResp: id_resps(DeliverSmResp),
    DataSmResp: id_resps(DataSmResp),
}
ANY_PDU: st.SearchStrategy[AnyPdu] = st.one_of(*STRATEGIES.values(), UNKNOWN_PDUS)


def frame(command_id: int, body: bytes, seq: int = 1, status: int = 0) -> bytes:
    """A PDU built by hand: the SMPP header then `body`."""
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


# -- hand-written wire bytes (SMPP 3.4 layouts, §4.1.1 / §4.6.1) -----------------------


BIND_TRANSMITTER_HEX = (
    "00000024"  # command_length 36
    "00000002"  # bind_transmitter
    "00000000"  # command_status
    "00000001"  # sequence_number
    "70726f6d6f00"  # system_id "promo"
    "6368672d6d652d3100"  # password "chg-me-1"
    "00"  # system_type ""
    "34"  # interface_version 3.4
    "00"  # addr_ton
    "00"  # addr_npi
    "00"  # address_range ""
)
RECEIPT_TEXT = (
    b"id:abc123 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201"
    b" stat:DELIVRD err:000 text:Hello"
)
DELIVER_SM_RECEIPT = (
    bytes.fromhex(
        "000000ad"  # command_length 173
        "00000005"  # deliver_sm
        "00000000"  # command_status
        "00000007"  # sequence_number
        "00"  # service_type ""
        "01 01 3836313338303031333830303000"  # source: the handset, international
        "00 01 313036393030303100"  # destination: the service number
        "04 00 00"  # esm_class SMSC delivery receipt, protocol_id, priority_flag
        "00 00"  # schedule_delivery_time, validity_period (NULL in deliver_sm)
        "00 00 00 00"  # registered_delivery, replace_if_present, data_coding, default id
        "67"  # sm_length 103
    )
    + RECEIPT_TEXT
    + bytes.fromhex(
        "001e 0007 61626331323300"  # receipted_message_id "abc123"
        "0427 0001 02"  # message_state DELIVERED
    )
)


# -- the fuzz invariant ----------------------------------------------------------------


def check_outcomes(outcomes: list[AnyPdu | SmppProtocolError]) -> None:
    """Each outcome is a PDU (that re-encodes to itself) or a protocol error with a reply."""
    for outcome in outcomes:
        if isinstance(outcome, SmppProtocolError):
            assert isinstance(outcome, FilterdError)
            assert 0 < outcome.status <= 0xFFFFFFFF
            reply = outcome.reply()
            assert reply is None or decode(encode(reply)) == reply
        else:
            assert isinstance(outcome, Pdu | UnknownPdu)
            assert decode(encode(outcome)) == outcome


FUZZ_IDS = st.one_of(st.sampled_from(sorted(KNOWN_IDS)), U32)


@st.composite
def fuzz_frames(draw: st.DrawFn) -> bytes:
    """A frame with a plausible header and a random body; its command_length is usually
    right, sometimes random."""
    body = draw(st.binary(max_size=300))
    length = draw(st.one_of(st.just(16 + len(body)), U32))
    return struct.pack(">IIII", length, draw(FUZZ_IDS), draw(U32), draw(U32)) + body
