"""A sans-IO SMPP 3.4 PDU codec (like h11): bytes in, frozen PDU values out.

Only the PDUs a relay needs are decoded into their own classes: generic_nack,
bind_receiver / bind_transmitter / bind_transceiver (+ _resp), unbind (+ _resp),
enquire_link (+ _resp), submit_sm, deliver_sm and data_sm (+ _resp). Every other
command id decodes to an `UnknownPdu` (header and raw body), so that a session
can answer generic_nack ESME_RINVCMDID and go on.

`Framer` cuts a byte stream into PDUs by command_length; `encode` is the inverse
of decoding. The fuzz invariant (tested): any bytes fed to a `Framer` give
decoded PDUs, `UnknownPdu`s or a `SmppProtocolError`, nothing else.

Error statuses chosen for malformed input (SMPP 3.4 §5.1.3 names them; it does
not say which one applies to which defect, so this is the table):

- command_length < 16 or > the framer's maximum: ESME_RINVCMDLEN, and the
  connection must close (framing is lost). Raised once the 16-byte header is
  buffered, so the error carries the command id and sequence number.
- the body ends inside the mandatory fields, or a PDU without optional
  parameters has bytes left over: ESME_RINVCMDLEN (framing is intact, the
  connection stays open).
- a C-Octet String with no NUL within its SMPP maximum: the field's own status
  where SMPP 3.4 has one (service_type ESME_RINVSERTYP, source_addr
  ESME_RINVSRCADR, destination_addr ESME_RINVDSTADR, system_id ESME_RINVSYSID,
  password ESME_RINVPASWD, system_type ESME_RINVSYSTYP, schedule_delivery_time
  ESME_RINVSCHED, validity_period ESME_RINVEXPIRY, message_id ESME_RINVMSGID),
  else ESME_RINVCMDLEN (address_range).
- sm_length over 254 or past the end of the body: ESME_RINVMSGLEN.
- a truncated optional parameter (TLV): ESME_RINVOPTPARSTREAM.

A TLV whose length is wrong for its type (a 3-byte sar_msg_ref_num) is kept and
forwarded unchanged; the helpers that read it treat it as absent.

C-Octet Strings are held as `str` decoded as Latin-1, so every byte value other
than NUL survives a decode/encode round trip. A response whose command_status
is not 0 and whose body is all defaults is encoded without a body (SMPP 3.4
§4.1.2, §4.4.2: "the body is not returned if command_status is non-zero");
an empty response body decodes to default (empty) fields.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from filterd.errors import FilterdError

HEADER = struct.Struct(">IIII")
HEADER_LENGTH = 16
MAX_PDU_LENGTH = 64 * 1024
"""The default largest command_length a `Framer` accepts (a data_sm with a long payload fits)."""
MAX_SHORT_MESSAGE = 254
RESPONSE_BIT = 0x80000000

# -- command ids (SMPP 3.4 §5.1.2.1) --------------------------------------------------
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103

# -- command_status values (SMPP 3.4 §5.1.3; 0x104 from SMPP 5.0) ----------------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RINVPRTFLG = 0x06
ESME_RINVREGDLVFLG = 0x07
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RINVSERTYP = 0x15
ESME_RINVESMCLASS = 0x43
ESME_RSUBMITFAIL = 0x45
ESME_RINVSRCTON = 0x48
ESME_RINVSRCNPI = 0x49
ESME_RINVDSTTON = 0x50
ESME_RINVDSTNPI = 0x51
ESME_RINVSYSTYP = 0x53
ESME_RTHROTTLED = 0x58
ESME_RINVSCHED = 0x61
ESME_RINVEXPIRY = 0x62
ESME_RINVOPTPARSTREAM = 0xC0
ESME_ROPTPARNOTALLWD = 0xC1
ESME_RINVPARLEN = 0xC2
ESME_RMISSINGOPTPARAM = 0xC3
ESME_RINVOPTPARAMVAL = 0xC4
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF
ESME_RINVDCS = 0x104
FILTERD_REFUSED = 0x00000400
"""SPEC §4: the recipient has refused commercial messages (SMPP vendor-specific range)."""
FILTERD_NO_CONSENT = 0x00000401
"""SPEC §4: no consent or request on record for the recipient."""

# -- optional parameter tags (SMPP 3.4 §5.3.2) -----------------------------------------
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_USER_MESSAGE_REFERENCE = 0x0204
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_SC_INTERFACE_VERSION = 0x0210
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

# -- esm_class bits (SMPP 3.4 §5.2.12) -------------------------------------------------
ESM_UDHI = 0x40
ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE_NOTIFICATION = 0x20

# -- message_state values (SMPP 3.4 §5.2.28) -------------------------------------------
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVERED",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIVERABLE",
    6: "ACCEPTED",
    7: "UNKNOWN",
    8: "REJECTED",
}

INTERFACE_VERSION = 0x34

Tlv = tuple[int, bytes]
"""One optional parameter: (tag, value). A PDU keeps them in wire order."""


class SmppProtocolError(FilterdError):
    """Bytes from the peer that are not a valid SMPP PDU.

    `status` is the command_status to answer with, `sequence_number` and
    `command_id` are those of the offending PDU when its header was read, and
    `close` says the connection must be closed after answering (framing lost).
    `reply()` builds the PDU to send back.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int,
        sequence_number: int | None = None,
        command_id: int | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.sequence_number = sequence_number
        self.command_id = command_id
        self.close = close

    def reply(self) -> Pdu | None:
        """The PDU that answers the bad one, or None when the bad one was itself a response.

        A bad command_length (close=True) gets generic_nack (SMPP 3.4 §4.3.1);
        a known request with a bad body gets its own response carrying `status`;
        a broken response is not answered (answering a broken generic_nack with
        generic_nack could loop).
        """
        sequence_number = self.sequence_number or 0
        if self.close:
            return GenericNack(command_status=self.status, sequence_number=sequence_number)
        if self.command_id is not None and self.command_id & RESPONSE_BIT:
            return None
        cls = _CLASSES.get(self.command_id) if self.command_id is not None else None
        response = _RESPONSES.get(cls) if cls is not None else None
        if response is None:
            return GenericNack(command_status=self.status, sequence_number=sequence_number)
        return response(command_status=self.status, sequence_number=sequence_number)


# -- body layouts ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CString:
    """A C-Octet String field; `size` is its SMPP maximum including the NUL."""

    name: str
    size: int
    status: int


@dataclass(frozen=True, slots=True)
class _Int8:
    """A one-octet Integer field."""

    name: str


@dataclass(frozen=True, slots=True)
class _ShortMessage:
    """sm_length followed by that many octets of short_message."""

    name: str = "short_message"


_Field = _CString | _Int8 | _ShortMessage

_BIND_LAYOUT: tuple[_Field, ...] = (
    _CString("system_id", 16, ESME_RINVSYSID),
    _CString("password", 9, ESME_RINVPASWD),
    _CString("system_type", 13, ESME_RINVSYSTYP),
    _Int8("interface_version"),
    _Int8("addr_ton"),
    _Int8("addr_npi"),
    _CString("address_range", 41, ESME_RINVCMDLEN),
)
_BIND_RESP_LAYOUT: tuple[_Field, ...] = (_CString("system_id", 16, ESME_RINVSYSID),)
_SM_LAYOUT: tuple[_Field, ...] = (
    _CString("service_type", 6, ESME_RINVSERTYP),
    _Int8("source_addr_ton"),
    _Int8("source_addr_npi"),
    _CString("source_addr", 21, ESME_RINVSRCADR),
    _Int8("dest_addr_ton"),
    _Int8("dest_addr_npi"),
    _CString("destination_addr", 21, ESME_RINVDSTADR),
    _Int8("esm_class"),
    _Int8("protocol_id"),
    _Int8("priority_flag"),
    _CString("schedule_delivery_time", 17, ESME_RINVSCHED),
    _CString("validity_period", 17, ESME_RINVEXPIRY),
    _Int8("registered_delivery"),
    _Int8("replace_if_present_flag"),
    _Int8("data_coding"),
    _Int8("sm_default_msg_id"),
    _ShortMessage(),
)
_DATA_SM_LAYOUT: tuple[_Field, ...] = (
    _CString("service_type", 6, ESME_RINVSERTYP),
    _Int8("source_addr_ton"),
    _Int8("source_addr_npi"),
    _CString("source_addr", 65, ESME_RINVSRCADR),
    _Int8("dest_addr_ton"),
    _Int8("dest_addr_npi"),
    _CString("destination_addr", 65, ESME_RINVDSTADR),
    _Int8("esm_class"),
    _Int8("registered_delivery"),
    _Int8("data_coding"),
)
_MESSAGE_ID_LAYOUT: tuple[_Field, ...] = (_CString("message_id", 65, ESME_RINVMSGID),)


# -- PDU classes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Pdu:
    """Base of the decoded PDUs: the header fields and the optional parameters.

    `command_id` is a class constant. `tlvs` holds the optional parameters in
    wire order, unknown ones included, so they round-trip unchanged; only the
    PDUs whose body may carry optional parameters accept any.
    """

    command_id: ClassVar[int]
    _layout: ClassVar[tuple[_Field, ...]] = ()
    _tlvs_allowed: ClassVar[bool] = False
    _body_optional: ClassVar[bool] = False

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

    _layout: ClassVar[tuple[_Field, ...]] = _BIND_LAYOUT

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

    _layout: ClassVar[tuple[_Field, ...]] = _BIND_RESP_LAYOUT
    _tlvs_allowed: ClassVar[bool] = True
    _body_optional: ClassVar[bool] = True

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

    _layout: ClassVar[tuple[_Field, ...]] = _SM_LAYOUT
    _tlvs_allowed: ClassVar[bool] = True

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
    _layout: ClassVar[tuple[_Field, ...]] = _DATA_SM_LAYOUT
    _tlvs_allowed: ClassVar[bool] = True

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

    _layout: ClassVar[tuple[_Field, ...]] = _MESSAGE_ID_LAYOUT
    _tlvs_allowed: ClassVar[bool] = True
    _body_optional: ClassVar[bool] = True

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

_PDU_CLASSES: tuple[type[Pdu], ...] = (
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
_CLASSES: dict[int | None, type[Pdu]] = {cls.command_id: cls for cls in _PDU_CLASSES}
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
PDU_CLASSES = _PDU_CLASSES
"""Every decoded PDU class, for tests and dispatch tables."""


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


# -- optional parameters ---------------------------------------------------------------


def tlv_value(tlvs: tuple[Tlv, ...], tag: int) -> bytes | None:
    """The value of the first optional parameter with `tag`, or None."""
    for t, value in tlvs:
        if t == tag:
            return value
    return None


def with_tlv(tlvs: tuple[Tlv, ...], tag: int, value: bytes) -> tuple[Tlv, ...]:
    """`tlvs` with the first `tag` given `value` in place, or appended when absent."""
    out = list(tlvs)
    for i, (t, _) in enumerate(out):
        if t == tag:
            out[i] = (tag, value)
            return tuple(out)
    return (*out, (tag, value))


# -- encoding --------------------------------------------------------------------------


def encode(pdu: AnyPdu) -> bytes:
    """The wire bytes of one PDU. A field the PDU cannot carry raises ValueError."""
    if isinstance(pdu, UnknownPdu):
        body = pdu.body
    elif pdu.command_status != ESME_ROK and pdu._body_optional and _is_empty(pdu):
        body = b""
    else:
        body = _encode_body(pdu)
    for name, value in (("command_status", pdu.command_status), ("sequence", pdu.sequence_number)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{name} {value} does not fit 4 octets")
    if not 0 <= pdu.command_id <= 0xFFFFFFFF:
        raise ValueError(f"command id {pdu.command_id} does not fit 4 octets")
    length = HEADER_LENGTH + len(body)
    if length > 0xFFFFFFFF:
        raise ValueError("PDU too long")
    return HEADER.pack(length, pdu.command_id, pdu.command_status, pdu.sequence_number) + body


def _is_empty(pdu: Pdu) -> bool:
    """True when every body field of a response is empty and there are no TLVs."""
    return not pdu.tlvs and all(getattr(pdu, f.name) in ("", 0, b"") for f in pdu._layout)


def _encode_body(pdu: Pdu) -> bytes:
    """The mandatory fields in layout order, then the optional parameters."""
    out = bytearray()
    for f in pdu._layout:
        value = getattr(pdu, f.name)
        if isinstance(f, _CString):
            if not isinstance(value, str):
                raise TypeError(f"{f.name} must be str, not {type(value).__name__}")
            raw = value.encode("latin-1")
            if b"\x00" in raw or len(raw) + 1 > f.size:
                raise ValueError(f"{f.name} {value!r}: at most {f.size - 1} octets, no NUL")
            out += raw + b"\x00"
        elif isinstance(f, _Int8):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{f.name} {value} does not fit one octet")
            out.append(value)
        else:
            if len(value) > MAX_SHORT_MESSAGE:
                raise ValueError(f"short_message of {len(value)} octets (at most 254)")
            out.append(len(value))
            out += value
    if pdu.tlvs and not pdu._tlvs_allowed:
        raise ValueError(f"{type(pdu).__name__} carries no optional parameters")
    for tag, value in pdu.tlvs:
        if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"optional parameter {tag:#06x} does not fit")
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)


# -- decoding --------------------------------------------------------------------------


class _Reader:
    """Reads the body of one PDU, raising SmppProtocolError with its header attached."""

    def __init__(self, body: bytes, command_id: int, sequence_number: int) -> None:
        self.body = body
        self.pos = 0
        self.command_id = command_id
        self.sequence_number = sequence_number

    def error(self, reason: str, status: int) -> SmppProtocolError:
        """An error about this PDU."""
        return SmppProtocolError(
            f"{_name(self.command_id)} seq {self.sequence_number}: {reason}",
            status=status,
            sequence_number=self.sequence_number,
            command_id=self.command_id,
        )

    def cstring(self, f: _CString) -> str:
        """A NUL-terminated field of at most f.size octets."""
        window = self.body[self.pos : self.pos + f.size]
        end = window.find(b"\x00")
        if end < 0:
            if len(window) < f.size:
                raise self.error(f"body ends inside {f.name}", ESME_RINVCMDLEN)
            raise self.error(f"{f.name} longer than {f.size - 1} octets", f.status)
        self.pos += end + 1
        return window[:end].decode("latin-1")

    def int8(self, f: _Int8) -> int:
        """One octet."""
        if self.pos >= len(self.body):
            raise self.error(f"body ends before {f.name}", ESME_RINVCMDLEN)
        self.pos += 1
        return self.body[self.pos - 1]

    def short_message(self) -> bytes:
        """sm_length and short_message."""
        if self.pos >= len(self.body):
            raise self.error("body ends before sm_length", ESME_RINVCMDLEN)
        length = self.body[self.pos]
        if length > MAX_SHORT_MESSAGE:
            raise self.error(f"sm_length {length} over 254", ESME_RINVMSGLEN)
        start = self.pos + 1
        if start + length > len(self.body):
            raise self.error(f"sm_length {length} runs past the body", ESME_RINVMSGLEN)
        self.pos = start + length
        return self.body[start : self.pos]

    def tlvs(self) -> tuple[Tlv, ...]:
        """Optional parameters up to the end of the body."""
        out = []
        body, pos = self.body, self.pos
        while pos < len(body):
            if pos + 4 > len(body):
                raise self.error("truncated optional parameter header", ESME_RINVOPTPARSTREAM)
            tag, length = struct.unpack_from(">HH", body, pos)
            if pos + 4 + length > len(body):
                raise self.error(f"optional parameter {tag:#06x} truncated", ESME_RINVOPTPARSTREAM)
            out.append((tag, body[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        self.pos = pos
        return tuple(out)


def _name(command_id: int) -> str:
    """A readable name for a command id."""
    cls = _CLASSES.get(command_id)
    return cls.__name__ if cls is not None else f"command {command_id:#010x}"


def decode(frame: bytes) -> AnyPdu:
    """One whole PDU (header included) → a PDU value; raises SmppProtocolError.

    The command_length in the header must equal len(frame).
    """
    if len(frame) < HEADER_LENGTH:
        raise SmppProtocolError(
            f"{len(frame)} octets is shorter than a PDU header", status=ESME_RINVCMDLEN, close=True
        )
    length, command_id, status, sequence_number = HEADER.unpack_from(frame)
    if length != len(frame):
        raise SmppProtocolError(
            f"command_length {length} but {len(frame)} octets",
            status=ESME_RINVCMDLEN,
            sequence_number=sequence_number,
            command_id=command_id,
            close=True,
        )
    body = frame[HEADER_LENGTH:]
    cls = _CLASSES.get(command_id)
    if cls is None:
        return UnknownPdu(
            command_id=command_id,
            command_status=status,
            sequence_number=sequence_number,
            body=body,
        )
    if not body and cls._body_optional:
        return cls(command_status=status, sequence_number=sequence_number)
    reader = _Reader(body, command_id, sequence_number)
    values: dict[str, Any] = {}
    for f in cls._layout:
        if isinstance(f, _CString):
            values[f.name] = reader.cstring(f)
        elif isinstance(f, _Int8):
            values[f.name] = reader.int8(f)
        else:
            values[f.name] = reader.short_message()
    tlvs: tuple[Tlv, ...] = ()
    if cls._tlvs_allowed:
        tlvs = reader.tlvs()
    elif reader.pos != len(body):
        raise reader.error(f"{len(body) - reader.pos} octets after the body", ESME_RINVCMDLEN)
    return cls(command_status=status, sequence_number=sequence_number, tlvs=tlvs, **values)


class Framer:
    """Cuts a byte stream into PDUs by command_length (sans-IO).

    `feed(data)` adds received bytes; `next_pdu()` returns the next PDU, or None
    when more bytes are needed; iterating yields PDUs until more bytes are
    needed. A malformed body raises SmppProtocolError with close=False: the PDU
    is consumed and the caller answers it and calls next_pdu() again. A bad
    command_length raises with close=True, and every later call raises again.
    """

    def __init__(self, max_length: int = MAX_PDU_LENGTH) -> None:
        if max_length < HEADER_LENGTH:
            raise ValueError(f"max_length {max_length} is shorter than a header")
        self._buffer = bytearray()
        self._max_length = max_length
        self._broken: SmppProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as a PDU (non-zero at EOF: a cut-off PDU)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    def next_pdu(self) -> AnyPdu | None:
        """The next whole PDU, or None until more bytes arrive; raises SmppProtocolError."""
        if self._broken is not None:
            raise _again(self._broken)
        if len(self._buffer) < HEADER_LENGTH:
            return None
        length, command_id, _, sequence_number = HEADER.unpack_from(self._buffer)
        if not HEADER_LENGTH <= length <= self._max_length:
            self._broken = SmppProtocolError(
                f"command_length {length} outside {HEADER_LENGTH}..{self._max_length}",
                status=ESME_RINVCMDLEN,
                sequence_number=sequence_number,
                command_id=command_id,
                close=True,
            )
            raise _again(self._broken)
        if len(self._buffer) < length:
            return None
        frame = bytes(self._buffer[:length])
        del self._buffer[:length]
        return decode(frame)

    def __iter__(self) -> Iterator[AnyPdu]:
        """Yield PDUs until more bytes are needed (errors propagate as in next_pdu)."""
        while (pdu := self.next_pdu()) is not None:
            yield pdu


def _again(error: SmppProtocolError) -> SmppProtocolError:
    """A fresh copy of a stored error (so tracebacks do not pile up)."""
    return SmppProtocolError(
        error.reason,
        status=error.status,
        sequence_number=error.sequence_number,
        command_id=error.command_id,
        close=error.close,
    )


# -- delivery receipts -----------------------------------------------------------------

_RECEIPT_KEY = re.compile(
    rb"(?<![^\s])(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text):", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The fields of an SMSC delivery receipt text (SMPP 3.4 Appendix B).

    Absent fields are None. `message_id` is the id the SMSC returned in
    submit_sm_resp; `stat` is e.g. DELIVRD, EXPIRED, UNDELIV, REJECTD.
    """

    message_id: str
    stat: str | None = None
    err: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    text: str | None = None


def _receipt_spans(data: bytes) -> dict[str, tuple[int, int]]:
    """Where each receipt field's value lies in `data`, trimmed of spaces; text: the rest."""
    matches = list(_RECEIPT_KEY.finditer(data))
    spans: dict[str, tuple[int, int]] = {}
    for i, match in enumerate(matches):
        key = match.group(1).lower().replace(b" ", b"_").decode()
        start = match.end()
        end = len(data) if key == "text" or i + 1 == len(matches) else matches[i + 1].start()
        if key != "text":
            while start < end and data[start] in b" \t\r\n":
                start += 1
            while end > start and data[end - 1] in b" \t\r\n":
                end -= 1
            if start == end:  # an empty value sits right after the colon
                start = end = match.end()
        spans.setdefault(key, (start, end))
        if key == "text":
            break
    return spans


def parse_receipt(data: bytes) -> Receipt | None:
    """The receipt in a deliver_sm's text, or None when there is no `id:` field.

    The format is "id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done
    date:YYMMDDhhmm stat:DDDDDDD err:E text:...", keys case-insensitive; values
    are read as Latin-1 (receipts are ASCII). Everything after text: is the text.
    """
    spans = _receipt_spans(data)
    if "id" not in spans:
        return None
    values = {key: data[a:b].decode("latin-1") for key, (a, b) in spans.items()}
    return Receipt(
        message_id=values["id"],
        stat=values.get("stat"),
        err=values.get("err"),
        sub=values.get("sub"),
        dlvrd=values.get("dlvrd"),
        submit_date=values.get("submit_date"),
        done_date=values.get("done_date"),
        text=values.get("text"),
    )


def with_receipt_id(data: bytes, message_id: str) -> bytes:
    """The receipt text with its id replaced; every other byte is kept. ValueError if none."""
    span = _receipt_spans(data).get("id")
    if span is None:
        raise ValueError("not a delivery receipt: no id: field")
    return data[: span[0]] + message_id.encode("latin-1") + data[span[1] :]


def is_receipt(pdu: DeliverSm | DataSm) -> bool:
    """True when esm_class marks a delivery receipt or an intermediate notification."""
    kind = pdu.esm_class & ESM_TYPE_MASK
    return kind in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE_NOTIFICATION)


_M = TypeVar("_M", bound=DeliverSm | DataSm)


def rewrite_receipt(pdu: _M, message_id: str) -> _M:
    """The receipt with the carrier's message id replaced by `message_id` everywhere.

    Rewrites the receipted_message_id optional parameter (kept NUL-terminated),
    and the id: field of the receipt text in short_message and in
    message_payload. Parts that are absent or hold no receipt are left alone.
    """
    tlvs = pdu.tlvs
    if tlv_value(tlvs, TAG_RECEIPTED_MESSAGE_ID) is not None:
        tlvs = with_tlv(tlvs, TAG_RECEIPTED_MESSAGE_ID, message_id.encode("latin-1") + b"\x00")
    payload = tlv_value(tlvs, TAG_MESSAGE_PAYLOAD)
    if payload is not None and parse_receipt(payload) is not None:
        tlvs = with_tlv(tlvs, TAG_MESSAGE_PAYLOAD, with_receipt_id(payload, message_id))
    if isinstance(pdu, DeliverSm) and parse_receipt(pdu.short_message) is not None:
        short_message = with_receipt_id(pdu.short_message, message_id)
        return replace(pdu, tlvs=tlvs, short_message=short_message)
    return replace(pdu, tlvs=tlvs)
