"""The SMPP PDU values (filterd/smpp/pdu.py): the response to each request, and the
helpers that read optional parameters."""

from __future__ import annotations

import pytest

from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import (
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
    response_to,
)
from filterd.smpp.status import FILTERD_REFUSED
from filterd.smpp.tlv import (
    MESSAGE_STATES,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
)
from tests.smpp_codec_helpers import frame

# -- responses ---------------------------------------------------------------------------


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
    refused = response_to(submit, FILTERD_REFUSED)
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


# -- optional parameter helpers --------------------------------------------------------


def test_tlv_helpers() -> None:
    """The helpers read SAR, message_payload, receipted_message_id and message_state."""
    pdu = DeliverSm(
        sequence_number=1,
        short_message=b"ignored",
        tlvs=(
            (TAG_SAR_MSG_REF_NUM, b"\x12\x34"),
            (TAG_SAR_TOTAL_SEGMENTS, b"\x03"),
            (TAG_SAR_SEGMENT_SEQNUM, b"\x02"),
            (TAG_MESSAGE_PAYLOAD, b"long text"),
            (TAG_RECEIPTED_MESSAGE_ID, b"A1B2\x00"),
            (TAG_MESSAGE_STATE, b"\x05"),
        ),
    )
    assert pdu.sar() == (0x1234, 3, 2)
    assert pdu.message_payload() == b"long text"
    assert pdu.payload == b"long text"
    assert pdu.receipted_message_id() == "A1B2"
    assert pdu.message_state() == 5
    assert MESSAGE_STATES[5] == "UNDELIVERABLE"
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
