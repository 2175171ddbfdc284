"""Framing: cutting a byte stream into PDUs by command_length (sans-IO).

`Framer` takes the bytes as they arrive and gives whole PDUs decoded by
`filterd.smpp.decode`. The fuzz invariant (tested): any bytes fed to a `Framer`
give decoded PDUs, `UnknownPdu`s or a `SmppProtocolError`, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.header import HEADER, HEADER_LENGTH
from filterd.smpp.pdu import AnyPdu
from filterd.smpp.status import ESME_RINVCMDLEN

MAX_PDU_LENGTH = 64 * 1024
"""The default largest command_length a `Framer` accepts (a data_sm with a long payload fits)."""


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
