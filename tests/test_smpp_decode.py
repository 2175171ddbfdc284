"""Decoding SMPP PDUs (filterd/smpp/decode.py): hand-written layouts, malformed bodies
with the status to answer, unknown commands, and the fuzz invariant on whole frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import (
    AnyPdu,
    BindTransceiverResp,
    BindTransmitterResp,
    DeliverSm,
    EnquireLink,
    GenericNack,
    SubmitSmResp,
    UnknownPdu,
    response_to,
)
from filterd.smpp.receipt import is_receipt, parse_receipt
from filterd.smpp.status import (
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVDSTADR,
    ESME_RINVEXPIRY,
    ESME_RINVMSGID,
    ESME_RINVMSGLEN,
    ESME_RINVOPTPARSTREAM,
    ESME_RINVPASWD,
    ESME_RINVSCHED,
    ESME_RINVSERTYP,
    ESME_RINVSRCADR,
    ESME_RINVSYSID,
    ESME_RINVSYSTYP,
)
from tests.smpp_codec_helpers import (
    DELIVER_SM_RECEIPT,
    RECEIPT_TEXT,
    check_outcomes,
    frame,
    fuzz_frames,
)


def error_of(data: bytes) -> SmppProtocolError:
    """The SmppProtocolError that decoding `data` raises."""
    with pytest.raises(SmppProtocolError) as caught:
        decode(data)
    return caught.value


# -- hand-written layouts --------------------------------------------------------------


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


def test_empty_response_body_decodes_to_defaults() -> None:
    """A response sent without a body (as SMSCs do on errors) decodes with empty fields."""
    assert decode(frame(0x80000004, b"", seq=4)) == SubmitSmResp(sequence_number=4)
    assert decode(frame(0x80000002, b"", seq=1, status=0x0E)) == BindTransmitterResp(
        command_status=0x0E, sequence_number=1
    )


def test_decode_checks_the_frame_length() -> None:
    """decode() of one frame refuses a command_length that differs from the bytes given."""
    wire = encode(EnquireLink(sequence_number=1))
    assert error_of(wire + b"\x00").status == ESME_RINVCMDLEN
    assert error_of(wire[:10]).close


# -- malformed bodies ------------------------------------------------------------------


SM_HEAD = b"\x00" + b"\x00\x01" + b"123\x00" + b"\x01\x01" + b"456\x00"
SM_TAIL = b"\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("command_id", "body", "status"),
    [
        (0x04, b"toolong" + SM_HEAD[1:] + SM_TAIL + b"\x00", ESME_RINVSERTYP),
        (0x04, b"\x00\x00\x01" + b"1" * 21 + b"\x00", ESME_RINVSRCADR),
        (0x05, b"\x00\x00\x01" + b"1" * 21 + b"\x00", ESME_RINVSRCADR),
        (0x04, b"\x00\x00\x01123\x00\x01\x01" + b"4" * 25, ESME_RINVDSTADR),
        (0x04, SM_HEAD + b"\x00\x00\x00" + b"9" * 17 + b"\x00", ESME_RINVSCHED),
        (0x04, SM_HEAD + b"\x00\x00\x00\x00" + b"9" * 17, ESME_RINVEXPIRY),
        (0x04, SM_HEAD + SM_TAIL + b"\xff" + bytes(255), ESME_RINVMSGLEN),
        (0x04, SM_HEAD + SM_TAIL + b"\x05abc", ESME_RINVMSGLEN),
        (0x04, SM_HEAD + SM_TAIL, ESME_RINVCMDLEN),
        (0x04, SM_HEAD[:5], ESME_RINVCMDLEN),
        (0x04, SM_HEAD + SM_TAIL + b"\x00\x04\x24\x00", ESME_RINVOPTPARSTREAM),
        (0x04, SM_HEAD + SM_TAIL + b"\x00\x04\x24\x00\x05ab", ESME_RINVOPTPARSTREAM),
        (0x02, b"x" * 16 + b"\x00pw\x00\x00\x34\x00\x00\x00", ESME_RINVSYSID),
        (0x01, b"sys\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00", ESME_RINVPASWD),
        (0x09, b"sys\x00pw\x00" + b"t" * 13 + b"\x00\x34\x00\x00\x00", ESME_RINVSYSTYP),
        (0x09, b"sys\x00pw\x00\x00\x34\x00\x00" + b"a" * 41, ESME_RINVCMDLEN),
        (0x02, b"sys\x00pw\x00\x00\x34\x00\x00\x00extra", ESME_RINVCMDLEN),
        (0x15, b"\x00", ESME_RINVCMDLEN),
        (0x06, b"junk", ESME_RINVCMDLEN),
        (0x80000004, b"m" * 65, ESME_RINVMSGID),
        (0x80000004, b"m1\x00\x00", ESME_RINVOPTPARSTREAM),
        (0x103, b"\x00\x00\x01" + b"1" * 65 + b"\x00", ESME_RINVSRCADR),
    ],
)
def test_malformed_body_status(command_id: int, body: bytes, status: int) -> None:
    """Each body defect raises SmppProtocolError with its documented status and the PDU's seq."""
    error = error_of(frame(command_id, body, seq=31))
    assert (error.status, error.sequence_number, error.command_id) == (status, 31, command_id)
    assert not error.close


def test_error_reply_is_the_commands_own_response() -> None:
    """A malformed submit_sm is answered with submit_sm_resp carrying the error status."""
    error = error_of(frame(0x04, b"\x00\x00\x01" + b"1" * 21 + b"\x00", seq=12))
    assert error.reply() == SubmitSmResp(command_status=ESME_RINVSRCADR, sequence_number=12)
    bind_error = error_of(frame(0x09, b"s" * 20, seq=1))
    assert bind_error.reply() == BindTransceiverResp(
        command_status=ESME_RINVSYSID, sequence_number=1
    )


def test_malformed_response_is_not_answered() -> None:
    """A broken response (or generic_nack) from the peer gets no reply: reply() is None."""
    assert error_of(frame(0x80000004, b"m" * 65, seq=3)).reply() is None
    assert error_of(frame(0x80000000, b"x", seq=3)).reply() is None


# -- unknown commands ------------------------------------------------------------------


@pytest.mark.parametrize("command_id", [0x0B, 0x03, 0x21, 0x102, 0x12345678])
def test_unknown_command_is_a_value_not_an_error(command_id: int) -> None:
    """outbind, query_sm, submit_multi, alert_notification, nonsense: UnknownPdu, not a raise."""
    pdu = decode(frame(command_id, b"\x01\x02", seq=9))
    assert pdu == UnknownPdu(command_id=command_id, sequence_number=9, body=b"\x01\x02")
    assert response_to(pdu) == GenericNack(command_status=ESME_RINVCMDID, sequence_number=9)


# -- fuzzing the decoder on whole frames (issue 6; the long run is bench/fuzz.py) ------------


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
