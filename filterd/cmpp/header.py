"""The CMPP message header, the command ids and the two protocol versions.

Every CMPP 2.0 / 3.0 message starts with three big-endian 32-bit words:
Total_Length (the whole message, header included), Command_Id and Sequence_Id.
A response's command id is its request's with `RESPONSE_BIT` set.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">III")
HEADER_LENGTH = 12
RESPONSE_BIT = 0x80000000

V20 = 0x20
"""CMPP 2.0: Result / Status in one octet, terminal ids of 21 octets, no LinkID."""
V30 = 0x30
"""CMPP 3.0: Result / Status in four octets, terminal ids of 32 octets, terminal types, LinkID."""
VERSIONS = (V20, V30)

MAX_DESTINATIONS = 100
"""The most Dest_terminal_Id a CMPP_SUBMIT may carry (DestUsr_tl)."""
MAX_CONTENT = 255
"""The most octets of Msg_Content (Msg_Length is one octet)."""
MAX_LENGTH = 4096
"""The default largest Total_Length a framer accepts: above the largest valid message
(a 3.0 CMPP_SUBMIT with 100 destinations and 255 octets of content, 3,618 octets)."""

CONNECT = 0x00000001
CONNECT_RESP = 0x80000001
TERMINATE = 0x00000002
TERMINATE_RESP = 0x80000002
SUBMIT = 0x00000004
SUBMIT_RESP = 0x80000004
DELIVER = 0x00000005
DELIVER_RESP = 0x80000005
ACTIVE_TEST = 0x00000008
ACTIVE_TEST_RESP = 0x80000008


def check_version(version: int) -> None:
    """Raise ValueError unless `version` is V20 or V30 (the layouts this codec knows)."""
    if version not in VERSIONS:
        raise ValueError(f"CMPP version {version:#04x}: only 0x20 and 0x30 have layouts")
