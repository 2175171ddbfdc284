"""Framing: cutting a byte stream into CMPP messages by Total_Length (sans-IO).

`Framer` takes the bytes as they arrive and gives whole messages decoded by
`filterd.cmpp.decode` in the framer's version, which a server sets once the
CONNECT is read (`version` is writable; CONNECT reads the same in both). The
fuzz invariant (tested): any bytes fed to a `Framer` give PDUs or a
`CmppProtocolError`, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

from filterd.cmpp.decode import CmppProtocolError, decode
from filterd.cmpp.header import HEADER, HEADER_LENGTH, MAX_LENGTH, V30, check_version
from filterd.cmpp.pdu import Pdu


class Framer:
    """Cuts a byte stream into messages by Total_Length (sans-IO).

    `feed(data)` adds received bytes; `next_pdu()` returns the next message, or
    None when more bytes are needed; iterating yields messages until more bytes
    are needed; `frame` is then the octets of the message last returned (a relay
    may pass them on as they came). A malformed body or an unknown command raises
    CmppProtocolError with close=False: the message is consumed and the caller
    answers it (`reply()`) and calls next_pdu() again. A Total_Length under 12
    or over `max_length` raises with close=True, and every later call raises
    again.
    """

    def __init__(self, version: int = V30, max_length: int = MAX_LENGTH) -> None:
        check_version(version)
        if max_length < HEADER_LENGTH:
            raise ValueError(f"max_length {max_length} is shorter than a header")
        self._version = version
        self._buffer = bytearray()
        self._max_length = max_length
        self._broken: CmppProtocolError | None = None
        self.frame = b""
        """The whole message (header included) `next_pdu` returned last."""

    @property
    def version(self) -> int:
        """The layout the next messages are decoded in (0x20 or 0x30)."""
        return self._version

    @version.setter
    def version(self, version: int) -> None:
        check_version(version)
        self._version = version

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as a message (non-zero at EOF: a cut-off one)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buffer += data

    def next_pdu(self) -> Pdu | None:
        """The next whole message, or None until more bytes arrive; raises CmppProtocolError."""
        if self._broken is not None:
            raise _again(self._broken)
        if len(self._buffer) < HEADER_LENGTH:
            return None
        length, command_id, sequence_id = HEADER.unpack_from(self._buffer)
        if not HEADER_LENGTH <= length <= self._max_length:
            self._broken = CmppProtocolError(
                f"Total_Length {length} outside {HEADER_LENGTH}..{self._max_length}",
                sequence_id=sequence_id,
                command_id=command_id,
                close=True,
            )
            raise _again(self._broken)
        if len(self._buffer) < length:
            return None
        frame = self.frame = bytes(self._buffer[:length])
        del self._buffer[:length]
        return decode(frame, self._version)

    def __iter__(self) -> Iterator[Pdu]:
        """Yield messages until more bytes are needed (errors propagate as in next_pdu)."""
        while (pdu := self.next_pdu()) is not None:
            yield pdu


def _again(error: CmppProtocolError) -> CmppProtocolError:
    """A fresh copy of a stored error (so tracebacks do not pile up)."""
    return CmppProtocolError(
        error.reason,
        result=error.result,
        sequence_id=error.sequence_id,
        command_id=error.command_id,
        close=True,
    )
