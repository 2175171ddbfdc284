"""Encoding: a PDU value to its wire bytes (the inverse of `filterd.smpp.decode`).

A response whose command_status is not 0 and whose body is all defaults is
encoded without a body (SMPP 3.4 §4.1.2, §4.4.2: "the body is not returned if
command_status is non-zero"). A field the wire cannot carry (too long, a NUL, not
Latin-1, out of range) raises ValueError; a C-Octet String field that is not a
`str` raises TypeError.
"""

from __future__ import annotations

import struct

from filterd.smpp.fields import MAX_SHORT_MESSAGE, CString, Int8
from filterd.smpp.header import HEADER, HEADER_LENGTH
from filterd.smpp.pdu import AnyPdu, Pdu, UnknownPdu
from filterd.smpp.status import ESME_ROK


def encode(pdu: AnyPdu) -> bytes:
    """The wire bytes of one PDU. A field the PDU cannot carry raises ValueError."""
    if isinstance(pdu, UnknownPdu):
        body = pdu.body
    elif pdu.command_status != ESME_ROK and pdu.body_optional and _is_empty(pdu):
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
    return not pdu.tlvs and all(getattr(pdu, f.name) in ("", 0, b"") for f in pdu.layout)


def _encode_body(pdu: Pdu) -> bytes:
    """The mandatory fields in layout order, then the optional parameters."""
    out = bytearray()
    for f in pdu.layout:
        value = getattr(pdu, f.name)
        if isinstance(f, CString):
            if not isinstance(value, str):
                raise TypeError(f"{f.name} must be str, not {type(value).__name__}")
            raw = value.encode("latin-1")
            if b"\x00" in raw or len(raw) + 1 > f.size:
                raise ValueError(f"{f.name} {value!r}: at most {f.size - 1} octets, no NUL")
            out += raw + b"\x00"
        elif isinstance(f, Int8):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{f.name} {value} does not fit one octet")
            out.append(value)
        else:
            if len(value) > MAX_SHORT_MESSAGE:
                raise ValueError(f"short_message of {len(value)} octets (at most 254)")
            out.append(len(value))
            out += value
    if pdu.tlvs and not pdu.tlvs_allowed:
        raise ValueError(f"{type(pdu).__name__} carries no optional parameters")
    for tag, value in pdu.tlvs:
        if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"optional parameter {tag:#06x} does not fit")
        out += struct.pack(">HH", tag, len(value)) + value
    return bytes(out)
