"""Decoding: one whole message's bytes to a PDU value, or the `CmppProtocolError`
that says what was wrong (cutting a stream into messages is `filterd.cmpp.framer`'s).

`decode(frame, version)` reads the body in the layout of `version` (0x20 or
0x30; CONNECT, TERMINATE and ACTIVE_TEST read the same in both). Malformed
input raises CmppProtocolError with a reason and the Result to answer:

- fewer than 12 octets, or Total_Length not the frame's length: the framing is
  lost, `close` is True.
- an unknown Command_Id: Result 2 (bad command id); the frame is consumed.
- the body ends inside a field, octets are left over, or DestUsr_tl is 0 or
  over 100: Result 1 (bad structure).
- Msg_Length runs past the body: Result 4 (bad message length).

Nothing else is raised, whatever the bytes (a tested property).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from filterd.cmpp.fields import Content, Raw, Reserved, Terminals, Text, Uint
from filterd.cmpp.header import (
    ACTIVE_TEST,
    CONNECT,
    DELIVER,
    HEADER,
    HEADER_LENGTH,
    MAX_DESTINATIONS,
    RESPONSE_BIT,
    SUBMIT,
    TERMINATE,
    V30,
    check_version,
)
from filterd.cmpp.pdu import (
    ActiveTestResp,
    ConnectResp,
    DeliverResp,
    Pdu,
    SubmitResp,
    TerminateResp,
    pdu_class,
)
from filterd.cmpp.result import BAD_COMMAND_ID, BAD_MSG_LENGTH, BAD_STRUCTURE, CONNECT_BAD_STRUCTURE
from filterd.errors import FilterdError


class CmppProtocolError(FilterdError):
    """Bytes from the peer that are not a valid CMPP message.

    `result` is the Result (or CONNECT Status) to answer with, `sequence_id`
    and `command_id` those of the offending message when its header was read,
    `msg_id` its first eight body octets as a Msg_Id (0 when the body is
    shorter), and `close` says the connection must close (framing is lost).
    `reply()` builds the answer.
    """

    def __init__(
        self,
        reason: str,
        *,
        result: int = BAD_STRUCTURE,
        sequence_id: int | None = None,
        command_id: int | None = None,
        msg_id: int = 0,
        close: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result
        self.sequence_id = sequence_id
        self.command_id = command_id
        self.msg_id = msg_id
        self.close = close

    def reply(self, version: int = V30) -> Pdu | None:
        """The response to the bad message, or None when there is none to send.

        A known request with a bad body gets its response: SUBMIT_RESP with
        `result` and Msg_Id 0, DELIVER_RESP with `result` and the DELIVER's
        `msg_id`, CONNECT_RESP with Status 1 announcing `version`, and
        ACTIVE_TEST_RESP / TERMINATE_RESP. A response, an unknown command or
        lost framing gets nothing (CMPP has no generic negative answer).
        """
        seq = self.sequence_id
        if self.close or seq is None:
            return None
        answers: dict[int | None, Callable[[int], Pdu]] = {
            CONNECT: lambda s: ConnectResp(s, status=CONNECT_BAD_STRUCTURE, version=version),
            SUBMIT: lambda s: SubmitResp(s, result=self.result),
            DELIVER: lambda s: DeliverResp(s, msg_id=self.msg_id, result=self.result),
            ACTIVE_TEST: ActiveTestResp,
            TERMINATE: TerminateResp,
        }
        answer = answers.get(self.command_id)
        return answer(seq) if answer is not None else None


class _Reader:
    """Reads the body of one message, raising CmppProtocolError with its header attached."""

    def __init__(self, body: bytes, command_id: int, sequence_id: int) -> None:
        self.body = body
        self.pos = 0
        self.command_id = command_id
        self.sequence_id = sequence_id

    def error(self, reason: str, result: int = BAD_STRUCTURE) -> CmppProtocolError:
        """An error about this message."""
        return CmppProtocolError(
            f"{_name(self.command_id)} seq {self.sequence_id}: {reason}",
            result=result,
            sequence_id=self.sequence_id,
            command_id=self.command_id,
            msg_id=int.from_bytes(self.body[:8], "big") if len(self.body) >= 8 else 0,
        )

    def take(self, size: int, name: str) -> bytes:
        """The next `size` octets."""
        end = self.pos + size
        if end > len(self.body):
            raise self.error(f"body ends inside {name}")
        out = self.body[self.pos : end]
        self.pos = end
        return out

    def text(self, size: int, name: str) -> str:
        """A NUL-padded string, up to its first NUL."""
        return self.take(size, name).split(b"\x00", 1)[0].decode("latin-1")

    def terminals(self, f: Terminals) -> tuple[str, ...]:
        """DestUsr_tl then that many terminal ids."""
        count = self.take(1, "DestUsr_tl")[0]
        if not 1 <= count <= MAX_DESTINATIONS:
            raise self.error(f"DestUsr_tl {count} outside 1..{MAX_DESTINATIONS}")
        return tuple(self.text(f.size, f.name) for _ in range(count))

    def content(self) -> bytes:
        """Msg_Length then Msg_Content."""
        length = self.take(1, "Msg_Length")[0]
        if self.pos + length > len(self.body):
            raise self.error(f"Msg_Length {length} runs past the body", BAD_MSG_LENGTH)
        return self.take(length, "Msg_Content")


def _name(command_id: int) -> str:
    """A readable name for a command id."""
    cls = pdu_class(command_id)
    return cls.__name__ if cls is not None else f"command {command_id:#010x}"


def decode(frame: bytes, version: int) -> Pdu:
    """One whole message (header included) → a PDU value; raises CmppProtocolError.

    `version` (0x20 or 0x30) chooses the layout; another value is the caller's
    mistake: ValueError. Total_Length in the header must equal len(frame).
    """
    check_version(version)
    if len(frame) < HEADER_LENGTH:
        raise CmppProtocolError(f"{len(frame)} octets is shorter than a header", close=True)
    length, command_id, sequence_id = HEADER.unpack_from(frame)
    if length != len(frame):
        raise CmppProtocolError(
            f"Total_Length {length} but {len(frame)} octets",
            sequence_id=sequence_id,
            command_id=command_id,
            close=True,
        )
    cls = pdu_class(command_id)
    if cls is None:
        kind = "response" if command_id & RESPONSE_BIT else "command"
        raise CmppProtocolError(
            f"unknown {kind} id {command_id:#010x} seq {sequence_id}",
            result=BAD_COMMAND_ID,
            sequence_id=sequence_id,
            command_id=command_id,
        )
    body = frame[HEADER_LENGTH:]
    if cls is ActiveTestResp and not body:
        return ActiveTestResp(sequence_id)
    reader = _Reader(body, command_id, sequence_id)
    values: dict[str, Any] = {}
    for f in cls.layout(version):
        if isinstance(f, Uint):
            values[f.name] = int.from_bytes(reader.take(f.size, f.name), "big")
        elif isinstance(f, Text):
            values[f.name] = reader.text(f.size, f.name)
        elif isinstance(f, Raw):
            values[f.name] = reader.take(f.size, f.name)
        elif isinstance(f, Terminals):
            values[f.name] = reader.terminals(f)
        elif isinstance(f, Content):
            values[f.name] = reader.content()
        elif isinstance(f, Reserved):
            reader.take(f.size, "Reserve")
    if reader.pos != len(body):
        raise reader.error(f"{len(body) - reader.pos} octets after the body")
    return cls(sequence_id, **values)
