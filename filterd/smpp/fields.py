"""The mandatory body fields of the decoded PDUs: their kinds, sizes and layouts,
and the esm_class bits (SMPP 3.4 §4, §5.2.12).

C-Octet Strings are held as `str` decoded as Latin-1, so every byte value other
than NUL survives a decode/encode round trip. Each C-Octet String field carries
the command_status a decoder answers when it has no NUL within its SMPP maximum
(the field's own status where SMPP 3.4 has one, else ESME_RINVCMDLEN).
"""

from __future__ import annotations

from dataclasses import dataclass

from filterd.smpp.status import (
    ESME_RINVCMDLEN,
    ESME_RINVDSTADR,
    ESME_RINVEXPIRY,
    ESME_RINVMSGID,
    ESME_RINVPASWD,
    ESME_RINVSCHED,
    ESME_RINVSERTYP,
    ESME_RINVSRCADR,
    ESME_RINVSYSID,
    ESME_RINVSYSTYP,
)

MAX_SHORT_MESSAGE = 254

# -- esm_class bits (SMPP 3.4 §5.2.12) -------------------------------------------------
ESM_UDHI = 0x40
ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE_NOTIFICATION = 0x20


@dataclass(frozen=True, slots=True)
class CString:
    """A C-Octet String field; `size` is its SMPP maximum including the NUL."""

    name: str
    size: int
    status: int


@dataclass(frozen=True, slots=True)
class Int8:
    """A one-octet Integer field."""

    name: str


@dataclass(frozen=True, slots=True)
class ShortMessage:
    """sm_length followed by that many octets of short_message."""

    name: str = "short_message"


Field = CString | Int8 | ShortMessage

BIND_LAYOUT: tuple[Field, ...] = (
    CString("system_id", 16, ESME_RINVSYSID),
    CString("password", 9, ESME_RINVPASWD),
    CString("system_type", 13, ESME_RINVSYSTYP),
    Int8("interface_version"),
    Int8("addr_ton"),
    Int8("addr_npi"),
    CString("address_range", 41, ESME_RINVCMDLEN),
)
BIND_RESP_LAYOUT: tuple[Field, ...] = (CString("system_id", 16, ESME_RINVSYSID),)
SM_LAYOUT: tuple[Field, ...] = (
    CString("service_type", 6, ESME_RINVSERTYP),
    Int8("source_addr_ton"),
    Int8("source_addr_npi"),
    CString("source_addr", 21, ESME_RINVSRCADR),
    Int8("dest_addr_ton"),
    Int8("dest_addr_npi"),
    CString("destination_addr", 21, ESME_RINVDSTADR),
    Int8("esm_class"),
    Int8("protocol_id"),
    Int8("priority_flag"),
    CString("schedule_delivery_time", 17, ESME_RINVSCHED),
    CString("validity_period", 17, ESME_RINVEXPIRY),
    Int8("registered_delivery"),
    Int8("replace_if_present_flag"),
    Int8("data_coding"),
    Int8("sm_default_msg_id"),
    ShortMessage(),
)
DATA_SM_LAYOUT: tuple[Field, ...] = (
    CString("service_type", 6, ESME_RINVSERTYP),
    Int8("source_addr_ton"),
    Int8("source_addr_npi"),
    CString("source_addr", 65, ESME_RINVSRCADR),
    Int8("dest_addr_ton"),
    Int8("dest_addr_npi"),
    CString("destination_addr", 65, ESME_RINVDSTADR),
    Int8("esm_class"),
    Int8("registered_delivery"),
    Int8("data_coding"),
)
MESSAGE_ID_LAYOUT: tuple[Field, ...] = (CString("message_id", 65, ESME_RINVMSGID),)
