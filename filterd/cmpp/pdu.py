"""The CMPP 2.0 / 3.0 messages a relay needs, as frozen values (sans-IO).

CONNECT, SUBMIT, DELIVER, ACTIVE_TEST and TERMINATE, each with its response.
One class serves both versions: a field the version does not carry (LinkID,
the *_terminal_type octets in 2.0) is encoded as nothing and decoded to its
default; Result / Status hold the 3.0 range and must fit one octet in 2.0.
`layout(version)` gives a class's wire fields in order. Bytes are made and read
by `filterd.cmpp.encode`, `filterd.cmpp.decode` and `filterd.cmpp.framer`.

CONNECT, TERMINATE and ACTIVE_TEST have one layout in both versions, so a
server decodes the first CONNECT before it knows the client's version.
ACTIVE_TEST_RESP carries one Reserved octet, which is written as 0; a decoder
also accepts it without that octet, as some peers send it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, get_args

from filterd.cmpp.fields import Content, Field, Raw, Reserved, Terminals, Text, Uint
from filterd.cmpp.header import (
    ACTIVE_TEST,
    ACTIVE_TEST_RESP,
    CONNECT,
    CONNECT_RESP,
    DELIVER,
    DELIVER_RESP,
    RESPONSE_BIT,
    SUBMIT,
    SUBMIT_RESP,
    TERMINATE,
    TERMINATE_RESP,
    V20,
    V30,
    check_version,
)

NO_AUTHENTICATOR = bytes(16)
"""The AuthenticatorISMG of a refused CONNECT (the protocol says "empty": 16 NULs)."""


@dataclass(frozen=True, slots=True)
class _Message:
    """Base of the messages: the Sequence_Id, the command id and the layouts."""

    command_id: ClassVar[int]
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {V20: (), V30: ()}

    sequence_id: int

    @property
    def is_response(self) -> bool:
        """True for a *_RESP."""
        return bool(self.command_id & RESPONSE_BIT)

    @classmethod
    def layout(cls, version: int) -> tuple[Field, ...]:
        """The wire fields of this message in `version` (V20 or V30), in order."""
        check_version(version)
        return cls.layouts[version]


def _both(*fields: Field) -> dict[int, tuple[Field, ...]]:
    """The same layout in both versions."""
    return {V20: fields, V30: fields}


@dataclass(frozen=True, slots=True)
class Connect(_Message):
    """CMPP_CONNECT: an SP logs in. `timestamp` is MMDDHHMMSS as a number."""

    command_id: ClassVar[int] = CONNECT
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = _both(
        Text("source_addr", 6),
        Raw("authenticator_source", 16),
        Uint("version", 1),
        Uint("timestamp", 4),
    )

    source_addr: str
    authenticator_source: bytes
    version: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ConnectResp(_Message):
    """CMPP_CONNECT_RESP: Status (0 accepted) and the ISMG's authenticator."""

    command_id: ClassVar[int] = CONNECT_RESP
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {
        V20: (Uint("status", 1), Raw("authenticator_ismg", 16), Uint("version", 1)),
        V30: (Uint("status", 4), Raw("authenticator_ismg", 16), Uint("version", 1)),
    }

    status: int
    authenticator_ismg: bytes = NO_AUTHENTICATOR
    version: int = V30


@dataclass(frozen=True, slots=True)
class Submit(_Message):
    """CMPP_SUBMIT: a message from an SP to up to 100 destinations."""

    command_id: ClassVar[int] = SUBMIT
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {
        version: (
            Uint("msg_id", 8),
            Uint("pk_total", 1),
            Uint("pk_number", 1),
            Uint("registered_delivery", 1),
            Uint("msg_level", 1),
            Text("service_id", 10),
            Uint("fee_usertype", 1),
            Text("fee_terminal_id", width),
            *((Uint("fee_terminal_type", 1),) if version == V30 else ()),
            Uint("tp_pid", 1),
            Uint("tp_udhi", 1),
            Uint("msg_fmt", 1),
            Text("msg_src", 6),
            Text("fee_type", 2),
            Text("fee_code", 6),
            Text("valid_time", 17),
            Text("at_time", 17),
            Text("src_id", 21),
            Terminals("dest_terminal_ids", width),
            *((Uint("dest_terminal_type", 1),) if version == V30 else ()),
            Content(),
            Text("link_id", 20) if version == V30 else Reserved(8),
        )
        for version, width in ((V20, 21), (V30, 32))
    }

    msg_id: int = 0
    pk_total: int = 1
    pk_number: int = 1
    registered_delivery: int = 0
    msg_level: int = 0
    service_id: str = ""
    fee_usertype: int = 0
    fee_terminal_id: str = ""
    fee_terminal_type: int = 0
    tp_pid: int = 0
    tp_udhi: int = 0
    msg_fmt: int = 0
    msg_src: str = ""
    fee_type: str = ""
    fee_code: str = ""
    valid_time: str = ""
    at_time: str = ""
    src_id: str = ""
    dest_terminal_ids: tuple[str, ...] = ()
    dest_terminal_type: int = 0
    msg_content: bytes = b""
    link_id: str = ""


@dataclass(frozen=True, slots=True)
class SubmitResp(_Message):
    """CMPP_SUBMIT_RESP: the Msg_Id given to the message and the Result (0 accepted)."""

    command_id: ClassVar[int] = SUBMIT_RESP
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {
        V20: (Uint("msg_id", 8), Uint("result", 1)),
        V30: (Uint("msg_id", 8), Uint("result", 4)),
    }

    msg_id: int = 0
    result: int = 0


@dataclass(frozen=True, slots=True)
class Deliver(_Message):
    """CMPP_DELIVER: an MO message, or a status report when registered_delivery is 1."""

    command_id: ClassVar[int] = DELIVER
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {
        version: (
            Uint("msg_id", 8),
            Text("dest_id", 21),
            Text("service_id", 10),
            Uint("tp_pid", 1),
            Uint("tp_udhi", 1),
            Uint("msg_fmt", 1),
            Text("src_terminal_id", width),
            *((Uint("src_terminal_type", 1),) if version == V30 else ()),
            Uint("registered_delivery", 1),
            Content(),
            Text("link_id", 20) if version == V30 else Reserved(8),
        )
        for version, width in ((V20, 21), (V30, 32))
    }

    msg_id: int = 0
    dest_id: str = ""
    service_id: str = ""
    tp_pid: int = 0
    tp_udhi: int = 0
    msg_fmt: int = 0
    src_terminal_id: str = ""
    src_terminal_type: int = 0
    registered_delivery: int = 0
    msg_content: bytes = b""
    link_id: str = ""


@dataclass(frozen=True, slots=True)
class DeliverResp(_Message):
    """CMPP_DELIVER_RESP: the DELIVER's Msg_Id and the Result (0 accepted)."""

    command_id: ClassVar[int] = DELIVER_RESP
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = {
        V20: (Uint("msg_id", 8), Uint("result", 1)),
        V30: (Uint("msg_id", 8), Uint("result", 4)),
    }

    msg_id: int = 0
    result: int = 0


@dataclass(frozen=True, slots=True)
class ActiveTest(_Message):
    """CMPP_ACTIVE_TEST: is the link alive (no body)."""

    command_id: ClassVar[int] = ACTIVE_TEST


@dataclass(frozen=True, slots=True)
class ActiveTestResp(_Message):
    """CMPP_ACTIVE_TEST_RESP: one Reserved octet."""

    command_id: ClassVar[int] = ACTIVE_TEST_RESP
    layouts: ClassVar[dict[int, tuple[Field, ...]]] = _both(Reserved(1))


@dataclass(frozen=True, slots=True)
class Terminate(_Message):
    """CMPP_TERMINATE: the sender is closing the link (no body)."""

    command_id: ClassVar[int] = TERMINATE


@dataclass(frozen=True, slots=True)
class TerminateResp(_Message):
    """CMPP_TERMINATE_RESP (no body)."""

    command_id: ClassVar[int] = TERMINATE_RESP


Pdu = (
    Connect
    | ConnectResp
    | Submit
    | SubmitResp
    | Deliver
    | DeliverResp
    | ActiveTest
    | ActiveTestResp
    | Terminate
    | TerminateResp
)

_CLASSES: dict[int, type[Pdu]] = {cls.command_id: cls for cls in get_args(Pdu)}


def pdu_class(command_id: int) -> type[Pdu] | None:
    """The class of `command_id`, or None (a command this codec does not know)."""
    return _CLASSES.get(command_id)


def response_class(command_id: int) -> type[Pdu] | None:
    """The class answering a request with `command_id`, or None (not a known request)."""
    if command_id & RESPONSE_BIT or command_id not in _CLASSES:
        return None
    return _CLASSES.get(command_id | RESPONSE_BIT)


def response_to(pdu: Pdu, **fields: Any) -> Pdu:
    """The response to a request: same Sequence_Id, the given body `fields`.

    A DELIVER's response carries its Msg_Id unless `fields` say otherwise. A
    response has no response: ValueError.
    """
    cls = response_class(pdu.command_id)
    if cls is None:
        raise ValueError(f"{type(pdu).__name__} is a response")
    if isinstance(pdu, Deliver):
        fields.setdefault("msg_id", pdu.msg_id)
    return cls(sequence_id=pdu.sequence_id, **fields)
