"""Encoding: a PDU value to its wire bytes (the inverse of `filterd.cmpp.decode`).

`encode(pdu, version)` writes the body in the layout of `version` (0x20 or
0x30); fields that version does not carry are left out, and Reserve is
written as NULs. A value the wire cannot carry raises ValueError naming the
field: a string that is too long, holds a NUL or is not Latin-1; an integer out
of its field's range (a Result over 255 in 2.0); an authenticator that is not
16 octets; no destinations or more than 100; more than 255 octets of content.
A string field that is not a `str` raises TypeError.

`resubmit(frame, version, msg_src)` is the cheap way to pass a CMPP_SUBMIT on as it
came: its own octets with Msg_Id 0 and another Msg_src, without decoding and
encoding its two dozen fields again.
"""

from __future__ import annotations

from filterd.cmpp.fields import Field, Raw, Reserved, Terminals, Text, Uint
from filterd.cmpp.header import HEADER, HEADER_LENGTH, MAX_CONTENT, MAX_DESTINATIONS, V20, V30
from filterd.cmpp.pdu import Pdu, Submit

_MSG_ID = slice(HEADER_LENGTH, HEADER_LENGTH + 8)
_NO_MSG_ID = bytes(8)


def _offset(version: int, name: str) -> int:
    """Where the fixed-width field `name` of a CMPP_SUBMIT starts in its frame (a field
    before the first of variable width)."""
    offset = HEADER_LENGTH
    for f in Submit.layout(version):
        if not isinstance(f, Text | Uint):
            break
        if f.name == name:
            return offset
        offset += f.size
    raise LookupError(f"no fixed field {name} before the variable ones")


_MSG_SRC = {version: _offset(version, "msg_src") for version in (V20, V30)}


def encode(pdu: Pdu, version: int) -> bytes:
    """The wire bytes of one message in `version`'s layout; ValueError for an unfit field."""
    if not 0 <= pdu.sequence_id <= 0xFFFFFFFF:
        raise ValueError(f"sequence_id {pdu.sequence_id} does not fit 4 octets")
    body = b"".join(_field(f, pdu, version) for f in pdu.layout(version))
    return HEADER.pack(HEADER_LENGTH + len(body), pdu.command_id, pdu.sequence_id) + body


def _field(f: Field, pdu: Pdu, version: int) -> bytes:
    """The wire octets of one field of `pdu`."""
    if isinstance(f, Reserved):
        return bytes(f.size)
    value = getattr(pdu, f.name)
    if isinstance(f, Uint):
        return fixed_uint(f.name, value, f.size, where=f" in CMPP {version >> 4}.0")
    if isinstance(f, Text):
        return fixed_text(f.name, value, f.size)
    if isinstance(f, Raw):
        if len(value) != f.size:
            raise ValueError(f"{f.name} is {len(value)} octets, not {f.size}")
        return bytes(value)
    if isinstance(f, Terminals):
        if not 1 <= len(value) <= MAX_DESTINATIONS:
            raise ValueError(f"{len(value)} {f.name}: 1 to {MAX_DESTINATIONS}")
        return bytes([len(value)]) + b"".join(fixed_text(f.name, t, f.size) for t in value)
    if len(value) > MAX_CONTENT:
        raise ValueError(f"{f.name} of {len(value)} octets (at most {MAX_CONTENT})")
    return bytes([len(value)]) + bytes(value)


def fixed_uint(name: str, value: int, size: int, *, where: str = "") -> bytes:
    """A big-endian unsigned integer of `size` octets; ValueError naming `name` (and
    `where`) when it does not fit."""
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{name} {value} does not fit {size} octet(s){where}")
    return value.to_bytes(size, "big")


def fixed_text(name: str, value: object, size: int) -> bytes:
    """A string NUL-padded to `size` octets; ValueError naming `name` when it is too long,
    holds a NUL or is not Latin-1, TypeError when it is not a `str`."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r} is not Latin-1") from None
    if b"\x00" in raw or len(raw) > size:
        raise ValueError(f"{name} {value!r}: at most {size} octets, no NUL")
    return raw.ljust(size, b"\x00")


def resubmit(frame: bytes, version: int, msg_src: bytes) -> bytes:
    """A CMPP_SUBMIT's whole frame (in `version`'s layout, as decoded) with Msg_Id 0 and
    Msg_src set to `msg_src` (6 octets, as `fixed_text` gives them)."""
    out = bytearray(frame)
    out[_MSG_ID] = _NO_MSG_ID
    start = _MSG_SRC[version]
    out[start : start + 6] = msg_src
    return bytes(out)
