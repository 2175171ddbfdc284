"""The SMPP 3.4 PDU header and the command ids (SMPP 3.4 §3.2, §5.1.2.1).

Every PDU starts with four big-endian 32-bit words: command_length (the whole
PDU, header included), command_id, command_status and sequence_number. A
response's command id is its request's with `RESPONSE_BIT` set.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IIII")
HEADER_LENGTH = 16
RESPONSE_BIT = 0x80000000
INTERFACE_VERSION = 0x34
"""The interface_version of SMPP 3.4 (a bind's default)."""

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_RECEIVER_RESP = 0x80000001
BIND_TRANSMITTER = 0x00000002
BIND_TRANSMITTER_RESP = 0x80000002
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
BIND_TRANSCEIVER_RESP = 0x80000009
OUTBIND = 0x0000000B
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103
