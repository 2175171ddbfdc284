"""SMPP optional parameters (TLVs, SMPP 3.4 §5.3): the tags filterd reads, the
message_state values, and lookups on a PDU's parameters.

A PDU keeps its optional parameters in wire order as (tag, value) pairs, unknown
ones included, so they round-trip unchanged.
"""

from __future__ import annotations

Tlv = tuple[int, bytes]
"""One optional parameter: (tag, value). A PDU keeps them in wire order."""

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
