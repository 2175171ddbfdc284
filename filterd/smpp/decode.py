"""Decoding: one whole PDU's bytes to a PDU value, or the `SmppProtocolError` that
says how to answer them (cutting a stream into PDUs is `filterd.smpp.framer`'s).

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

An unknown command id is not an error: it decodes to an `UnknownPdu`. An empty
response body decodes to default (empty) fields.
"""

from __future__ import annotations

import struct
from typing import Any

from filterd.errors import FilterdError
from filterd.smpp.fields import MAX_SHORT_MESSAGE, CString, Int8
from filterd.smpp.header import HEADER, HEADER_LENGTH, RESPONSE_BIT
from filterd.smpp.pdu import AnyPdu, GenericNack, Pdu, UnknownPdu, pdu_class, response_class
from filterd.smpp.status import (
    ESME_RINVCMDLEN,
    ESME_RINVMSGLEN,
    ESME_RINVOPTPARSTREAM,
)
from filterd.smpp.tlv import Tlv


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
        cls = pdu_class(self.command_id) if self.command_id is not None else None
        response = response_class(cls) if cls is not None else None
        if response is None:
            return GenericNack(command_status=self.status, sequence_number=sequence_number)
        return response(command_status=self.status, sequence_number=sequence_number)


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

    def cstring(self, f: CString) -> str:
        """A NUL-terminated field of at most f.size octets."""
        window = self.body[self.pos : self.pos + f.size]
        end = window.find(b"\x00")
        if end < 0:
            if len(window) < f.size:
                raise self.error(f"body ends inside {f.name}", ESME_RINVCMDLEN)
            raise self.error(f"{f.name} longer than {f.size - 1} octets", f.status)
        self.pos += end + 1
        return window[:end].decode("latin-1")

    def int8(self, f: Int8) -> int:
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
    cls = pdu_class(command_id)
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
    cls = pdu_class(command_id)
    if cls is None:
        return UnknownPdu(
            command_id=command_id,
            command_status=status,
            sequence_number=sequence_number,
            body=body,
        )
    if not body and cls.body_optional:
        return cls(command_status=status, sequence_number=sequence_number)
    reader = _Reader(body, command_id, sequence_number)
    values: dict[str, Any] = {}
    for f in cls.layout:
        if isinstance(f, CString):
            values[f.name] = reader.cstring(f)
        elif isinstance(f, Int8):
            values[f.name] = reader.int8(f)
        else:
            values[f.name] = reader.short_message()
    tlvs: tuple[Tlv, ...] = ()
    if cls.tlvs_allowed:
        tlvs = reader.tlvs()
    elif reader.pos != len(body):
        raise reader.error(f"{len(body) - reader.pos} octets after the body", ESME_RINVCMDLEN)
    return cls(command_status=status, sequence_number=sequence_number, tlvs=tlvs, **values)
