"""CMPP Status and Result values: the protocol's and filterd's own (pure).

CONNECT_RESP carries a Status; SUBMIT_RESP and DELIVER_RESP a Result. Both are
one octet in CMPP 2.0 and four in 3.0, so every value here fits one octet.
filterd's refusals use values above the protocol's (64 to 67); a registry
outage and quiet hours answer 8 (flow control), which a client or ISMG treats as
"send it again later".
"""

from __future__ import annotations

# -- CONNECT_RESP Status ------------------------------------------------------------------
CONNECT_OK = 0
CONNECT_BAD_STRUCTURE = 1
CONNECT_BAD_SOURCE_ADDR = 2
"""Source_Addr is not a known SP (filterd: no [[cmpp.accounts]] with that sp_id)."""
CONNECT_BAD_AUTHENTICATOR = 3
CONNECT_VERSION_TOO_HIGH = 4
CONNECT_OTHER_ERROR = 5

# -- SUBMIT_RESP / DELIVER_RESP Result (the protocol's) -------------------------------------
OK = 0
BAD_STRUCTURE = 1
"""The body does not match the layout (too short, octets left over, a bad count)."""
BAD_COMMAND_ID = 2
DUPLICATE_SEQUENCE = 3
BAD_MSG_LENGTH = 4
"""Msg_Length runs past the body."""
BAD_FEE_CODE = 5
MSG_TOO_LONG = 6
BAD_SERVICE_ID = 7
FLOW_CONTROL = 8
FEE_TERMINAL_NOT_SERVED = 9
"""3.0: this gateway does not serve the charged number (2.0: 9 and above are "other errors")."""
BAD_SRC_ID = 10
BAD_MSG_SRC = 11
BAD_FEE_TERMINAL_ID = 12
BAD_DEST_TERMINAL_ID = 13

# -- filterd's Result values ------------------------------------------------------------------
REGISTRY_UNAVAILABLE = FLOW_CONTROL
"""The registry could not be asked (or quiet hours defer the message): send it again later."""
ALL_REFUSED = 64
"""Every destination has refused commercial messages."""
NONE_PERMITTED = 65
"""No destination may receive the message (no consent on record, or refusals mixed with that)."""
CANCEL_TEXT_MISSING = 66
"""A commercial message without the sender's cancel instruction, and none appended."""
SIGNATURE_MISSING = 67
"""A commercial message whose text neither starts nor ends with the sender's signature."""

_NAMES = {
    OK: "accepted",
    BAD_STRUCTURE: "bad message structure",
    BAD_COMMAND_ID: "bad command id",
    DUPLICATE_SEQUENCE: "duplicate sequence id",
    BAD_MSG_LENGTH: "bad message length",
    BAD_FEE_CODE: "bad fee code",
    MSG_TOO_LONG: "message too long",
    BAD_SERVICE_ID: "bad service id",
    FLOW_CONTROL: "flow control (registry unavailable or quiet hours: send again later)",
    FEE_TERMINAL_NOT_SERVED: "charged number not served here",
    BAD_SRC_ID: "bad Src_Id",
    BAD_MSG_SRC: "bad Msg_src",
    BAD_FEE_TERMINAL_ID: "bad Fee_terminal_Id",
    BAD_DEST_TERMINAL_ID: "bad Dest_terminal_Id",
    ALL_REFUSED: "all destinations refused",
    NONE_PERMITTED: "no destination permitted",
    CANCEL_TEXT_MISSING: "cancel text missing",
    SIGNATURE_MISSING: "signature missing",
}


def describe(result: int) -> str:
    """A short English description of a SUBMIT_RESP / DELIVER_RESP Result (for logs)."""
    return _NAMES.get(result, f"error {result}")
