"""The SMPP 3.4 PDUs a relay needs, as frozen values (sans-IO, like h11).

Only these PDUs have their own classes: generic_nack, bind_receiver /
bind_transmitter / bind_transceiver (+ _resp), unbind (+ _resp), enquire_link
(+ _resp), submit_sm, deliver_sm and data_sm (+ _resp). Every other command id
is an `UnknownPdu` (header and raw body), so that a session can answer
generic_nack ESME_RINVCMDID and go on. `response_to` builds the answer to a
request. Bytes are made and read elsewhere: `filterd.smpp.encode`,
`filterd.smpp.decode` and `filterd.smpp.framer`.

The helpers that read typed optional parameters (`Pdu.sar`, `Pdu.message_state`)
treat one whose length is wrong for its type as absent; the PDU keeps it and
forwards it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from filterd.smpp.fields import (
    BIND_LAYOUT,
    BIND_RESP_LAYOUT,
    DATA_SM_LAYOUT,
    MESSAGE_ID_LAYOUT,
    SM_LAYOUT,
    Field,
)
from filterd.smpp.header import (
    BIND_RECEIVER,
    BIND_RECEIVER_RESP,
    BIND_TRANSCEIVER,
    BIND_TRANSCEIVER_RESP,
    BIND_TRANSMITTER,
    BIND_TRANSMITTER_RESP,
    DATA_SM,
    DATA_SM_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    GENERIC_NACK,
    INTERFACE_VERSION,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    UNBIND,
    UNBIND_RESP,
)
from filterd.smpp.status import ESME_RINVCMDID, ESME_ROK
from filterd.smpp.tlv import (
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    Tlv,
    tlv_value,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """Base of the decoded PDUs: the header fields and the optional parameters.

    `command_id` is a class constant. `tlvs` holds the optional parameters in
    wire order, unknown ones included, so they round-trip unchanged; only the
    PDUs whose body may carry optional parameters accept any.
    """

    command_id: ClassVar[int]
    layout: ClassVar[tuple[Field, ...]] = ()
    tlvs_allowed: ClassVar[bool] = False
    body_optional: ClassVar[bool] = False

    sequence_number: int
    command_status: int = ESME_ROK
    tlvs: tuple[Tlv, ...] = ()

    @property
    def is_response(self) -> bool:
        """True for a *_resp or generic_nack."""
        return bool(self.command_id & RESPONSE_BIT)

    def tlv(self, tag: int) -> bytes | None:
        """The value of the first optional parameter with this tag, or None."""
        return tlv_value(self.tlvs, tag)

    def sar(self) -> tuple[int, int, int] | None:
        """(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum), or None.

        None unless all three are present with their SMPP sizes (2, 1, 1 octets).
        """
        ref = self.tlv(TAG_SAR_MSG_REF_NUM)
        total = self.tlv(TAG_SAR_TOTAL_SEGMENTS)
        seq = self.tlv(TAG_SAR_SEGMENT_SEQNUM)
        if ref is None or total is None or seq is None:
            return None
        if (len(ref), len(total), len(seq)) != (2, 1, 1):
            return None
        return int.from_bytes(ref, "big"), total[0], seq[0]

    def message_payload(self) -> bytes | None:
        """The message_payload optional parameter (0x0424), or None."""
        return self.tlv(TAG_MESSAGE_PAYLOAD)

    def receipted_message_id(self) -> str | None:
        """The receipted_message_id optional parameter (0x001E) without its NUL, or None."""
        value = self.tlv(TAG_RECEIPTED_MESSAGE_ID)
        if value is None:
            return None
        return value.split(b"\x00", 1)[0].decode("latin-1")

    def message_state(self) -> int | None:
        """The message_state optional parameter (0x0427, one octet), or None."""
        value = self.tlv(TAG_MESSAGE_STATE)
        return value[0] if value is not None and len(value) == 1 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenericNack(Pdu):
    """generic_nack: the answer to a PDU with a bad header or an unknown command id."""

    command_id: ClassVar[int] = GENERIC_NACK


@dataclass(frozen=True, slots=True, kw_only=True)
class _Bind(Pdu):
    """The body shared by the three bind requests."""

    layout: ClassVar[tuple[Field, ...]] = BIND_LAYOUT

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiver(_Bind):
    """bind_receiver: an ESME binds to receive deliver_sm."""

    command_id: ClassVar[int] = BIND_RECEIVER


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitter(_Bind):
    """bind_transmitter: an ESME binds to send submit_sm."""

    command_id: ClassVar[int] = BIND_TRANSMITTER


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiver(_Bind):
    """bind_transceiver: an ESME binds to send and receive."""

    command_id: ClassVar[int] = BIND_TRANSCEIVER


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindResp(Pdu):
    """The body shared by the three bind responses (sc_interface_version as a TLV)."""

    layout: ClassVar[tuple[Field, ...]] = BIND_RESP_LAYOUT
    tlvs_allowed: ClassVar[bool] = True
    body_optional: ClassVar[bool] = True

    system_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindReceiverResp(_BindResp):
    """bind_receiver_resp."""

    command_id: ClassVar[int] = BIND_RECEIVER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransmitterResp(_BindResp):
    """bind_transmitter_resp."""

    command_id: ClassVar[int] = BIND_TRANSMITTER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class BindTransceiverResp(_BindResp):
    """bind_transceiver_resp."""

    command_id: ClassVar[int] = BIND_TRANSCEIVER_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class Unbind(Pdu):
    """unbind: either side ends the session."""

    command_id: ClassVar[int] = UNBIND


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindResp(Pdu):
    """unbind_resp."""

    command_id: ClassVar[int] = UNBIND_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLink(Pdu):
    """enquire_link: a keep-alive."""

    command_id: ClassVar[int] = ENQUIRE_LINK


@dataclass(frozen=True, slots=True, kw_only=True)
class EnquireLinkResp(Pdu):
    """enquire_link_resp."""

    command_id: ClassVar[int] = ENQUIRE_LINK_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class _ShortMessagePdu(Pdu):
    """The body shared by submit_sm and deliver_sm (SMPP 3.4 §4.4.1, §4.6.1)."""

    layout: ClassVar[tuple[Field, ...]] = SM_LAYOUT
    tlvs_allowed: ClassVar[bool] = True

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    @property
    def payload(self) -> bytes:
        """The user data: message_payload when present, else short_message."""
        payload = self.message_payload()
        return self.short_message if payload is None else payload


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSm(_ShortMessagePdu):
    """submit_sm: an ESME submits a message for one destination."""

    command_id: ClassVar[int] = SUBMIT_SM


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSm(_ShortMessagePdu):
    """deliver_sm: the SMSC delivers a mobile-originated message or a delivery receipt."""

    command_id: ClassVar[int] = DELIVER_SM


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSm(Pdu):
    """data_sm: a message whose user data travels in message_payload (SMPP 3.4 §4.7.1)."""

    command_id: ClassVar[int] = DATA_SM
    layout: ClassVar[tuple[Field, ...]] = DATA_SM_LAYOUT
    tlvs_allowed: ClassVar[bool] = True

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0

    @property
    def payload(self) -> bytes:
        """The user data: message_payload, or empty."""
        return self.message_payload() or b""


@dataclass(frozen=True, slots=True, kw_only=True)
class _MessageIdResp(Pdu):
    """A response carrying a message_id (optional parameters allowed, as in SMPP 5.0)."""

    layout: ClassVar[tuple[Field, ...]] = MESSAGE_ID_LAYOUT
    tlvs_allowed: ClassVar[bool] = True
    body_optional: ClassVar[bool] = True

    message_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitSmResp(_MessageIdResp):
    """submit_sm_resp: the SMSC's message id for an accepted submit_sm."""

    command_id: ClassVar[int] = SUBMIT_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverSmResp(_MessageIdResp):
    """deliver_sm_resp (message_id unused, empty)."""

    command_id: ClassVar[int] = DELIVER_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSmResp(_MessageIdResp):
    """data_sm_resp."""

    command_id: ClassVar[int] = DATA_SM_RESP


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownPdu:
    """A PDU with a command id this codec does not decode (its body kept raw).

    Answer a request with `response_to(pdu)`: generic_nack ESME_RINVCMDID.
    """

    command_id: int
    sequence_number: int
    command_status: int = ESME_ROK
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        """True when the command id has the response bit set."""
        return bool(self.command_id & RESPONSE_BIT)


AnyPdu = Pdu | UnknownPdu
"""What decoding yields."""

PDU_CLASSES: tuple[type[Pdu], ...] = (
    GenericNack,
    BindReceiver,
    BindReceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    BindTransceiver,
    BindTransceiverResp,
    Unbind,
    UnbindResp,
    EnquireLink,
    EnquireLinkResp,
    SubmitSm,
    SubmitSmResp,
    DeliverSm,
    DeliverSmResp,
    DataSm,
    DataSmResp,
)
"""Every decoded PDU class, for tests and dispatch tables."""
_CLASSES: dict[int, type[Pdu]] = {cls.command_id: cls for cls in PDU_CLASSES}
_RESPONSES: dict[type[Pdu], type[Pdu]] = {
    BindReceiver: BindReceiverResp,
    BindTransmitter: BindTransmitterResp,
    BindTransceiver: BindTransceiverResp,
    Unbind: UnbindResp,
    EnquireLink: EnquireLinkResp,
    SubmitSm: SubmitSmResp,
    DeliverSm: DeliverSmResp,
    DataSm: DataSmResp,
}


def pdu_class(command_id: int) -> type[Pdu] | None:
    """The class that decodes `command_id`, or None (an `UnknownPdu`)."""
    return _CLASSES.get(command_id)


def response_class(cls: type[Pdu]) -> type[Pdu] | None:
    """The class of the response to a request of class `cls`, or None (it has none)."""
    return _RESPONSES.get(cls)


def response_to(pdu: AnyPdu, status: int | None = None, **fields: Any) -> Pdu:
    """The response to a request: same sequence number, `status`, and body `fields`.

    `status` defaults to ESME_ROK, or ESME_RINVCMDID for an `UnknownPdu` (which
    is answered with generic_nack). A response or generic_nack has no response:
    ValueError.
    """
    if isinstance(pdu, UnknownPdu):
        if pdu.is_response:
            raise ValueError(f"command id {pdu.command_id:#010x} is a response")
        code = ESME_RINVCMDID if status is None else status
        return GenericNack(command_status=code, sequence_number=pdu.sequence_number, **fields)
    cls = _RESPONSES.get(type(pdu))
    if cls is None:
        raise ValueError(f"{type(pdu).__name__} has no response")
    code = ESME_ROK if status is None else status
    return cls(command_status=code, sequence_number=pdu.sequence_number, **fields)
