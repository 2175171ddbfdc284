"""The sans-IO SMPP 3.4 PDU codec (filterd/smpp/pdu.py): encoding, decoding, framing,
errors with the status to answer, responses and delivery receipts."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.errors import FilterdError
from filterd.smpp import pdu as smpp
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
    Framer,
    GenericNack,
    Pdu,
    Receipt,
    SmppProtocolError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
    decode,
    encode,
    is_receipt,
    parse_receipt,
    response_to,
    rewrite_receipt,
    with_receipt_id,
    with_tlv,
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


def error_of(data: bytes) -> SmppProtocolError:
    """The SmppProtocolError that decoding `data` raises."""
    with pytest.raises(SmppProtocolError) as caught:
        decode(data)
    return caught.value


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


def test_deliver_sm_receipt_bytes() -> None:
    """A delivery receipt deliver_sm decodes from the hand-written layout and encodes back."""
    pdu = decode(DELIVER_SM_RECEIPT)
    assert isinstance(pdu, DeliverSm)
    assert (pdu.sequence_number, pdu.esm_class, pdu.short_message) == (7, 0x04, RECEIPT_TEXT)
    assert (pdu.source_addr_ton, pdu.source_addr) == (1, "8613800138000")
    assert pdu.destination_addr == "10690001"
    assert pdu.receipted_message_id() == "abc123"
    assert pdu.message_state() == 2
    assert is_receipt(pdu)
    assert encode(pdu) == DELIVER_SM_RECEIPT
    receipt = parse_receipt(pdu.short_message)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == ("abc123", "DELIVRD")


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


def test_empty_response_body_decodes_to_defaults() -> None:
    """A response sent without a body (as SMSCs do on errors) decodes with empty fields."""
    assert decode(frame(0x80000004, b"", seq=4)) == SubmitSmResp(sequence_number=4)
    assert decode(frame(0x80000002, b"", seq=1, status=0x0E)) == BindTransmitterResp(
        command_status=0x0E, sequence_number=1
    )


# -- framing ---------------------------------------------------------------------------


@given(st.lists(ANY_PDU, max_size=6), st.data())
@settings(max_examples=150)
def test_framing_across_arbitrary_chunks(pdus: list[AnyPdu], data: st.DataObject) -> None:
    """Splitting the byte stream anywhere gives the same PDUs, in order, nothing left over."""
    stream = b"".join(encode(p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = Framer()
    out: list[AnyPdu] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framer.feed(stream[start:end])
        out.extend(framer)
    assert out == pdus
    assert framer.buffered == 0
    assert framer.next_pdu() is None


def test_framer_byte_by_byte() -> None:
    """Fed one byte at a time, the framer returns each PDU exactly when its last byte arrives."""
    wire = bytes.fromhex(BIND_TRANSMITTER_HEX) + encode(EnquireLink(sequence_number=2))
    framer = Framer()
    seen = []
    for i, byte in enumerate(wire):
        framer.feed(bytes([byte]))
        pdu = framer.next_pdu()
        if pdu is not None:
            seen.append((i, type(pdu)))
    assert seen == [(35, BindTransmitter), (51, EnquireLink)]


@pytest.mark.parametrize("length", [0, 1, 15])
def test_command_length_below_header(length: int) -> None:
    """command_length < 16: ESME_RINVCMDLEN, close the connection, answer generic_nack."""
    framer = Framer()
    framer.feed(struct.pack(">IIII", length, 0x00000004, 0, 77))
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    error = caught.value
    assert (error.status, error.close, error.sequence_number) == (smpp.ESME_RINVCMDLEN, True, 77)
    assert error.reply() == GenericNack(command_status=smpp.ESME_RINVCMDLEN, sequence_number=77)


def test_command_length_over_maximum() -> None:
    """command_length over the maximum (64 KiB by default) is refused before any body is read."""
    framer = Framer()
    framer.feed(struct.pack(">IIII", 64 * 1024 + 1, 0x00000004, 0, 3))
    with pytest.raises(SmppProtocolError, match="command_length 65537") as caught:
        framer.next_pdu()
    assert (caught.value.status, caught.value.close) == (smpp.ESME_RINVCMDLEN, True)
    small = Framer(max_length=32)
    small.feed(frame(0x00000015, bytes(17)))
    with pytest.raises(SmppProtocolError):
        small.next_pdu()


def test_command_length_at_maximum_is_accepted() -> None:
    """A PDU exactly at the maximum length is framed (and decoded)."""
    pdu = DataSm(sequence_number=1, tlvs=((0x0424, bytes(64 * 1024 - 16 - 10 - 4)),))
    wire = encode(pdu)
    assert len(wire) == 64 * 1024
    framer = Framer()
    framer.feed(wire)
    assert framer.next_pdu() == pdu


def test_broken_framer_stays_broken() -> None:
    """After a bad command_length every call raises again, even when more bytes arrive."""
    framer = Framer()
    framer.feed(b"\x00\x00\x00\x05" + bytes(12))
    for _ in range(3):
        with pytest.raises(SmppProtocolError) as caught:
            framer.next_pdu()
        assert caught.value.close
        framer.feed(encode(EnquireLink(sequence_number=1)))


def test_bad_length_waits_for_the_whole_header() -> None:
    """A bad command_length is reported once 16 bytes are buffered (so the error has the seq)."""
    framer = Framer()
    framer.feed(b"\x00\x00\x00\x02")
    assert framer.next_pdu() is None
    framer.feed(struct.pack(">III", 0x15, 0, 42))
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    assert (caught.value.sequence_number, caught.value.command_id) == (42, 0x15)


def test_framer_goes_on_after_a_malformed_body() -> None:
    """A malformed body (close=False) consumes that PDU; the next one is decoded normally."""
    bad = frame(0x00000004, b"\x00\x00\x00" + b"1" * 30, seq=10)
    good = encode(EnquireLink(sequence_number=11))
    framer = Framer()
    framer.feed(bad + good)
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    assert not caught.value.close
    assert framer.next_pdu() == EnquireLink(sequence_number=11)


def test_framer_rejects_a_tiny_maximum() -> None:
    """A maximum shorter than the 16-byte header is a programming error."""
    with pytest.raises(ValueError, match="shorter than a header"):
        Framer(max_length=15)


def test_decode_checks_the_frame_length() -> None:
    """decode() of one frame refuses a command_length that differs from the bytes given."""
    wire = encode(EnquireLink(sequence_number=1))
    assert error_of(wire + b"\x00").status == smpp.ESME_RINVCMDLEN
    assert error_of(wire[:10]).close


# -- the fuzz invariant ----------------------------------------------------------------


def drain(framer: Framer) -> list[AnyPdu | SmppProtocolError]:
    """Every outcome of a framer until it needs more bytes or must close."""
    outcomes: list[AnyPdu | SmppProtocolError] = []
    while True:
        try:
            pdu = framer.next_pdu()
        except SmppProtocolError as error:
            outcomes.append(error)
            if error.close:
                return outcomes
            continue
        if pdu is None:
            return outcomes
        outcomes.append(pdu)


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


@given(st.binary(max_size=300))
@settings(max_examples=600)
def test_fuzz_random_bytes(data: bytes) -> None:
    """Random bytes into a Framer: decoded PDUs, UnknownPdus or SmppProtocolError, nothing else."""
    framer = Framer(max_length=4096)
    framer.feed(data)
    check_outcomes(drain(framer))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(KNOWN_IDS), 0x0B, 0x03, 0x80000103]),
            U32,
            st.binary(max_size=80),
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=600)
def test_fuzz_valid_headers_random_bodies(pdus: list[tuple[int, int, bytes]]) -> None:
    """Well-framed PDUs with random bodies: each is decoded or raises an error naming its seq."""
    framer = Framer()
    framer.feed(b"".join(frame(cid, body, seq) for cid, seq, body in pdus))
    outcomes = drain(framer)
    check_outcomes(outcomes)
    assert len(outcomes) == len(pdus)
    for (cid, seq, _), outcome in zip(pdus, outcomes, strict=True):
        assert outcome.sequence_number == seq
        if isinstance(outcome, SmppProtocolError):
            assert (outcome.command_id, outcome.close) == (cid, False)


# -- malformed bodies ------------------------------------------------------------------

SM_HEAD = b"\x00" + b"\x00\x01" + b"123\x00" + b"\x01\x01" + b"456\x00"
SM_TAIL = b"\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("command_id", "body", "status"),
    [
        (0x04, b"toolong" + SM_HEAD[1:] + SM_TAIL + b"\x00", smpp.ESME_RINVSERTYP),
        (0x04, b"\x00\x00\x01" + b"1" * 21 + b"\x00", smpp.ESME_RINVSRCADR),
        (0x05, b"\x00\x00\x01" + b"1" * 21 + b"\x00", smpp.ESME_RINVSRCADR),
        (0x04, b"\x00\x00\x01123\x00\x01\x01" + b"4" * 25, smpp.ESME_RINVDSTADR),
        (0x04, SM_HEAD + b"\x00\x00\x00" + b"9" * 17 + b"\x00", smpp.ESME_RINVSCHED),
        (0x04, SM_HEAD + b"\x00\x00\x00\x00" + b"9" * 17, smpp.ESME_RINVEXPIRY),
        (0x04, SM_HEAD + SM_TAIL + b"\xff" + bytes(255), smpp.ESME_RINVMSGLEN),
        (0x04, SM_HEAD + SM_TAIL + b"\x05abc", smpp.ESME_RINVMSGLEN),
        (0x04, SM_HEAD + SM_TAIL, smpp.ESME_RINVCMDLEN),
        (0x04, SM_HEAD[:5], smpp.ESME_RINVCMDLEN),
        (0x04, SM_HEAD + SM_TAIL + b"\x00\x04\x24\x00", smpp.ESME_RINVOPTPARSTREAM),
        (0x04, SM_HEAD + SM_TAIL + b"\x00\x04\x24\x00\x05ab", smpp.ESME_RINVOPTPARSTREAM),
        (0x02, b"x" * 16 + b"\x00pw\x00\x00\x34\x00\x00\x00", smpp.ESME_RINVSYSID),
        (0x01, b"sys\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00", smpp.ESME_RINVPASWD),
        (0x09, b"sys\x00pw\x00" + b"t" * 13 + b"\x00\x34\x00\x00\x00", smpp.ESME_RINVSYSTYP),
        (0x09, b"sys\x00pw\x00\x00\x34\x00\x00" + b"a" * 41, smpp.ESME_RINVCMDLEN),
        (0x02, b"sys\x00pw\x00\x00\x34\x00\x00\x00extra", smpp.ESME_RINVCMDLEN),
        (0x15, b"\x00", smpp.ESME_RINVCMDLEN),
        (0x06, b"junk", smpp.ESME_RINVCMDLEN),
        (0x80000004, b"m" * 65, smpp.ESME_RINVMSGID),
        (0x80000004, b"m1\x00\x00", smpp.ESME_RINVOPTPARSTREAM),
        (0x103, b"\x00\x00\x01" + b"1" * 65 + b"\x00", smpp.ESME_RINVSRCADR),
    ],
)
def test_malformed_body_status(command_id: int, body: bytes, status: int) -> None:
    """Each body defect raises SmppProtocolError with its documented status and the PDU's seq."""
    error = error_of(frame(command_id, body, seq=31))
    assert (error.status, error.sequence_number, error.command_id) == (status, 31, command_id)
    assert not error.close


def test_fields_at_their_maximum_are_accepted() -> None:
    """A field exactly at its SMPP maximum (20 digits + NUL for source_addr) is valid."""
    pdu = SubmitSm(sequence_number=1, source_addr="1" * 20, validity_period="240101120000000+")
    assert decode(encode(pdu)) == pdu
    bind = BindTransceiver(sequence_number=1, system_id="s" * 15, password="p" * 8)
    assert decode(encode(bind)) == bind


def test_error_reply_is_the_commands_own_response() -> None:
    """A malformed submit_sm is answered with submit_sm_resp carrying the error status."""
    error = error_of(frame(0x04, b"\x00\x00\x01" + b"1" * 21 + b"\x00", seq=12))
    assert error.reply() == SubmitSmResp(command_status=smpp.ESME_RINVSRCADR, sequence_number=12)
    bind_error = error_of(frame(0x09, b"s" * 20, seq=1))
    assert bind_error.reply() == BindTransceiverResp(
        command_status=smpp.ESME_RINVSYSID, sequence_number=1
    )


def test_malformed_response_is_not_answered() -> None:
    """A broken response (or generic_nack) from the peer gets no reply: reply() is None."""
    assert error_of(frame(0x80000004, b"m" * 65, seq=3)).reply() is None
    assert error_of(frame(0x80000000, b"x", seq=3)).reply() is None


# -- unknown commands and responses ----------------------------------------------------


@pytest.mark.parametrize("command_id", [0x0B, 0x03, 0x21, 0x102, 0x12345678])
def test_unknown_command_is_a_value_not_an_error(command_id: int) -> None:
    """outbind, query_sm, submit_multi, alert_notification, nonsense: UnknownPdu, not a raise."""
    pdu = decode(frame(command_id, b"\x01\x02", seq=9))
    assert pdu == UnknownPdu(command_id=command_id, sequence_number=9, body=b"\x01\x02")
    assert response_to(pdu) == GenericNack(command_status=smpp.ESME_RINVCMDID, sequence_number=9)


def test_unknown_response_has_no_response() -> None:
    """An unknown command id with the response bit is a response: response_to refuses it."""
    pdu = decode(frame(0x80000021, b""))
    assert isinstance(pdu, UnknownPdu)
    assert pdu.is_response
    with pytest.raises(ValueError, match="is a response"):
        response_to(pdu)


@pytest.mark.parametrize(
    ("command", "response"),
    [
        (BindReceiver, BindReceiverResp),
        (BindTransmitter, BindTransmitterResp),
        (BindTransceiver, BindTransceiverResp),
        (Unbind, UnbindResp),
        (EnquireLink, EnquireLinkResp),
        (SubmitSm, SubmitSmResp),
        (DeliverSm, DeliverSmResp),
        (DataSm, DataSmResp),
    ],
    ids=lambda cls: cls.__name__,
)
def test_response_to_each_request(command: type[Pdu], response: type[Pdu]) -> None:
    """response_to gives the matching *_resp with the request's sequence number and ESME_ROK."""
    answer = response_to(command(sequence_number=0x7FFFFFFF))
    assert answer == response(sequence_number=0x7FFFFFFF)
    assert answer.command_id == command.command_id | 0x80000000
    assert answer.is_response
    assert not command(sequence_number=1).is_response


def test_response_to_with_status_and_fields() -> None:
    """Status and body fields are passed through: message id on success, SPEC statuses on drops."""
    submit = SubmitSm(sequence_number=5, destination_addr="8613800138000")
    assert response_to(submit, message_id="F1") == SubmitSmResp(sequence_number=5, message_id="F1")
    refused = response_to(submit, smpp.FILTERD_REFUSED)
    assert encode(refused) == bytes.fromhex("00000010 80000004 00000400 00000005")
    bind = BindTransceiver(sequence_number=1, system_id="promo", password="x")  # noqa: S106
    assert response_to(bind, system_id="filterd").system_id == "filterd"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "pdu",
    [
        SubmitSmResp(sequence_number=1),
        GenericNack(sequence_number=1),
        UnbindResp(sequence_number=1),
    ],
)
def test_responses_have_no_response(pdu: Pdu) -> None:
    """Responses and generic_nack are never answered."""
    with pytest.raises(ValueError, match="has no response"):
        response_to(pdu)


def test_status_constants() -> None:
    """The statuses have their SMPP 3.4 values, and SPEC §4's refused / no consent values."""
    assert (smpp.ESME_ROK, smpp.ESME_RINVMSGLEN, smpp.ESME_RINVCMDLEN, smpp.ESME_RINVCMDID) == (
        0,
        1,
        2,
        3,
    )
    assert (smpp.ESME_RINVBNDSTS, smpp.ESME_RALYBND, smpp.ESME_RSYSERR) == (4, 5, 8)
    assert (smpp.ESME_RINVSRCADR, smpp.ESME_RINVDSTADR, smpp.ESME_RBINDFAIL) == (0x0A, 0x0B, 0x0D)
    assert (smpp.ESME_RINVPASWD, smpp.ESME_RINVSYSID, smpp.ESME_RMSGQFUL) == (0x0E, 0x0F, 0x14)
    assert (smpp.ESME_RTHROTTLED, smpp.ESME_RINVDCS) == (0x58, 0x104)
    assert (smpp.FILTERD_REFUSED, smpp.FILTERD_NO_CONSENT) == (0x400, 0x401)


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


# -- optional parameter helpers --------------------------------------------------------


def test_tlv_helpers() -> None:
    """The helpers read SAR, message_payload, receipted_message_id and message_state."""
    pdu = DeliverSm(
        sequence_number=1,
        short_message=b"ignored",
        tlvs=(
            (smpp.TAG_SAR_MSG_REF_NUM, b"\x12\x34"),
            (smpp.TAG_SAR_TOTAL_SEGMENTS, b"\x03"),
            (smpp.TAG_SAR_SEGMENT_SEQNUM, b"\x02"),
            (smpp.TAG_MESSAGE_PAYLOAD, b"long text"),
            (smpp.TAG_RECEIPTED_MESSAGE_ID, b"A1B2\x00"),
            (smpp.TAG_MESSAGE_STATE, b"\x05"),
        ),
    )
    assert pdu.sar() == (0x1234, 3, 2)
    assert pdu.message_payload() == b"long text"
    assert pdu.payload == b"long text"
    assert pdu.receipted_message_id() == "A1B2"
    assert pdu.message_state() == 5
    assert smpp.MESSAGE_STATES[5] == "UNDELIVERABLE"
    assert pdu.tlv(0x9999) is None


def test_tlv_helpers_when_absent_or_malformed() -> None:
    """Absent parameters read as None; a SAR set with a wrong size or a part missing is None."""
    plain = SubmitSm(sequence_number=1, short_message=b"hi")
    assert (plain.sar(), plain.message_payload(), plain.receipted_message_id()) == (None,) * 3
    assert plain.message_state() is None
    assert plain.payload == b"hi"
    wrong = SubmitSm(
        sequence_number=1,
        tlvs=((0x020C, b"\x00\x00\x01"), (0x020E, b"\x02"), (0x020F, b"\x01"), (0x0427, b"")),
    )
    assert wrong.sar() is None
    assert wrong.message_state() is None
    partial = SubmitSm(sequence_number=1, tlvs=((0x020C, b"\x00\x01"), (0x020E, b"\x02")))
    assert partial.sar() is None
    assert DataSm(sequence_number=1).payload == b""


def test_with_tlv_replaces_in_place_or_appends() -> None:
    """with_tlv keeps the order: the first matching tag is replaced, a new tag goes last."""
    tlvs = ((1, b"a"), (2, b"b"), (1, b"c"))
    assert with_tlv(tlvs, 1, b"z") == ((1, b"z"), (2, b"b"), (1, b"c"))
    assert with_tlv(tlvs, 3, b"n") == (*tlvs, (3, b"n"))


# -- delivery receipts -----------------------------------------------------------------


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
    assert out.tlv(smpp.TAG_RECEIPTED_MESSAGE_ID) == b"C77\x00"
    receipt = parse_receipt(out.short_message)
    assert receipt is not None
    assert (receipt.message_id, receipt.stat) == ("C77", "DELIVRD")
    assert out.tlvs[1] == pdu.tlvs[1]
    assert replace(out, short_message=pdu.short_message, tlvs=pdu.tlvs) == pdu
    assert decode(encode(out)) == out


def test_rewrite_receipt_in_message_payload_and_data_sm() -> None:
    """A receipt carried in message_payload (deliver_sm or data_sm) is rewritten there."""
    tlvs = ((smpp.TAG_MESSAGE_PAYLOAD, b"id:X1 stat:DELIVRD"),)
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


# -- fuzzing the decoder on whole frames (issue 6; the long run is bench/fuzz.py) ------------

FUZZ_IDS = st.one_of(st.sampled_from(sorted(KNOWN_IDS)), U32)


@st.composite
def fuzz_frames(draw: st.DrawFn) -> bytes:
    """A frame with a plausible header and a random body; its command_length is usually
    right, sometimes random."""
    body = draw(st.binary(max_size=300))
    length = draw(st.one_of(st.just(16 + len(body)), U32))
    return struct.pack(">IIII", length, draw(FUZZ_IDS), draw(U32), draw(U32)) + body


@given(st.one_of(st.binary(max_size=400), fuzz_frames()))
@settings(max_examples=1000)
def test_fuzz_decode_any_frame(data: bytes) -> None:
    """decode() of any bytes returns a PDU that re-encodes to the same value, or raises
    SmppProtocolError (with a status and a valid reply); never any other exception."""
    try:
        outcome: AnyPdu | SmppProtocolError = decode(data)
    except SmppProtocolError as exc:
        outcome = exc
    check_outcomes([outcome])


@given(st.lists(st.one_of(st.binary(max_size=60), fuzz_frames()), max_size=6))
@settings(max_examples=300)
def test_fuzz_framer_stream_of_frames(chunks: list[bytes]) -> None:
    """A stream of random and plausible frames fed in pieces: PDUs or SmppProtocolError
    only, and once the framing is lost (close=True) every later call raises again."""
    framer = Framer(max_length=4096)
    outcomes: list[AnyPdu | SmppProtocolError] = []
    for chunk in chunks:
        framer.feed(chunk)
        outcomes += drain(framer)
    check_outcomes(outcomes)
    if any(isinstance(o, SmppProtocolError) and o.close for o in outcomes):
        with pytest.raises(SmppProtocolError):
            framer.next_pdu()


@given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
@settings(max_examples=300)
def test_fuzz_receipt_parser(data: bytes) -> None:
    """parse_receipt() of any bytes returns a Receipt or None, never raises."""
    receipt = smpp.parse_receipt(data)
    assert receipt is None or isinstance(receipt, Receipt)
