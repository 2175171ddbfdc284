"""CMPP Msg_Id: the 64-bit message id, packed and unpacked, and a generator (pure).

From the most significant bit: month (4 bits, 1-12), day (5), hour (5),
minute (6), second (6), the gateway's id (22 bits) and a sequence number (16
bits). On the wire it is 8 octets, big-endian. Ids from a peer are unpacked as
they come (no field is range-checked beyond its width); `pack_msg_id` refuses a
field wider than its bits.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

GATEWAY_BITS = 22
SEQUENCE_BITS = 16
_WIDTHS = (4, 5, 5, 6, 6, GATEWAY_BITS, SEQUENCE_BITS)
_NAMES = ("month", "day", "hour", "minute", "second", "gateway", "sequence")


class MsgId(NamedTuple):
    """The fields of a Msg_Id."""

    month: int
    day: int
    hour: int
    minute: int
    second: int
    gateway: int
    sequence: int


def pack_msg_id(fields: MsgId) -> int:
    """The 64-bit Msg_Id of `fields`; ValueError naming a field that does not fit its bits."""
    value = 0
    for name, width, field in zip(_NAMES, _WIDTHS, fields, strict=True):
        if not 0 <= field < 1 << width:
            raise ValueError(f"Msg_Id {name} {field} does not fit {width} bits")
        value = (value << width) | field
    return value


def unpack_msg_id(value: int) -> MsgId:
    """The fields of a 64-bit Msg_Id; ValueError when `value` does not fit 64 bits."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"Msg_Id {value} does not fit 64 bits")
    fields = []
    for width in reversed(_WIDTHS):
        fields.append(value & ((1 << width) - 1))
        value >>= width
    return MsgId(*reversed(fields))


class MsgIdGenerator:
    """Issues Msg_Ids for one gateway id: the time given, then a 16-bit sequence.

    The sequence counts up across seconds and wraps at 65,536, so ids repeat
    only when one gateway id issues more than 65,536 within one second. Each
    process that issues ids needs its own gateway id (a 6-digit SP code fits
    its 22 bits).
    """

    def __init__(self, gateway: int, start: int = 0) -> None:
        if not 0 <= gateway < 1 << GATEWAY_BITS:
            raise ValueError(f"gateway id {gateway} does not fit {GATEWAY_BITS} bits")
        self._gateway = gateway
        self._sequence = start % (1 << SEQUENCE_BITS)
        self._stamp: tuple[int, int, int, int, int] | None = None
        self._prefix = 0
        """The Msg_Id of `_stamp` (month to second) with sequence 0."""

    @property
    def gateway(self) -> int:
        """The gateway id in every Msg_Id issued."""
        return self._gateway

    def issue(self, now: datetime) -> int:
        """The next Msg_Id, stamped with `now` (the caller's clock and time zone)."""
        stamp = (now.month, now.day, now.hour, now.minute, now.second)
        if stamp != self._stamp:  # packed once a second
            self._prefix = pack_msg_id(MsgId(*stamp, self._gateway, 0))
            self._stamp = stamp
        sequence = self._sequence
        self._sequence = (sequence + 1) % (1 << SEQUENCE_BITS)
        return self._prefix | sequence
