"""Hostile SMPP sessions for a real filterd SMPP listener, a model of what filterd must
answer to them, and a driver that plays a session over TCP and checks every answer
(used by tests/faults/test_smpp_fuzz.py).

The model (`plan`) follows the byte stream the way SMPP 3.4 frames it (by
command_length) and the way filterd's server says it handles it
(filterd/smpp/session.py, `ClientSession`):

- command_length outside 16..MAX_PDU_LENGTH: one generic_nack ESME_RINVCMDLEN with
  the header's sequence number, then filterd closes the connection (framing is lost);
  nothing after it is answered.
- a response (command_id with the high bit set), well formed or not: no answer.
- a command id filterd does not know: generic_nack ESME_RINVCMDID.
- a known request whose body does not decode: exactly one answer, its own *_resp (or
  generic_nack), with one of the codec's error statuses (never ESME_ROK, never
  ESME_RSYSERR); the connection stays open.
- bind_*: ESME_RALYBND when already bound; the right system_id and password bind;
  anything else gets ESME_RINVPASWD and filterd closes the connection.
- submit_sm before a bind, or on a receiver bind: ESME_RINVBNDSTS; else a decision
  (ESME_ROK / 0x400 refused / 0x401 no consent / ESME_RINVDSTADR).
- deliver_sm / data_sm from a client: their *_resp with ESME_RINVBNDSTS.
- enquire_link: ESME_ROK; unbind: unbind_resp ESME_ROK, then filterd closes.

Whether a body decodes is asked of filterd's own codec (`decode`), whose fuzz
invariant is tested apart; what each answer must be is written down here, from the
specification and the server's documented table. Where a generated PDU was built
broken on purpose, its exact status is known and checked too.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import strategies as st

from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.framer import MAX_PDU_LENGTH
from filterd.smpp.header import (
    BIND_RECEIVER,
    BIND_TRANSCEIVER,
    BIND_TRANSMITTER,
    DATA_SM,
    DELIVER_SM,
    ENQUIRE_LINK,
    GENERIC_NACK,
    HEADER,
    RESPONSE_BIT,
    SUBMIT_SM,
    UNBIND,
)
from filterd.smpp.pdu import (
    AnyPdu,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DataSm,
    DeliverSm,
    EnquireLink,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from filterd.smpp.status import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVDSTADR,
    ESME_RINVEXPIRY,
    ESME_RINVMSGID,
    ESME_RINVMSGLEN,
    ESME_RINVOPTPARSTREAM,
    ESME_RINVPASWD,
    ESME_RINVSCHED,
    ESME_RINVSERTYP,
    ESME_RINVSRCADR,
    ESME_RINVSYSID,
    ESME_RINVSYSTYP,
    ESME_ROK,
    ESME_RSYSERR,
    FILTERD_NO_CONSENT,
    FILTERD_REFUSED,
)
from filterd.smpp.tlv import (
    TAG_MESSAGE_PAYLOAD,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
)
from tests.faults.conftest import JANE_SMS as CONSENTING_SMS
from tests.faults.conftest import SMPP_PASSWORD, SMPP_SYSTEM_ID

SYSTEM_ID, PASSWORD = SMPP_SYSTEM_ID, SMPP_PASSWORD
"""The [[smpp.accounts]] entry of tests/faults/conftest.write_config."""
JANE_SMS = CONSENTING_SMS
"""Consent on record (international digits, TON 1)."""
REFUSED_SMS = "8613900139000"
"""A refusal on record."""
UNKNOWN_SMS = "8613700137000"
"""A valid number with nothing on record."""

ALERT_NOTIFICATION = 0x00000102
"""SMPP 3.4 §4.12: alert_notification has no response (an answer is tolerated, not owed)."""
SENTINEL_SEQUENCE = 0x7EADBEEF
"""The sequence number of the enquire_link that ends a session still open."""

KNOWN_REQUESTS = frozenset(
    {BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER, UNBIND, ENQUIRE_LINK, SUBMIT_SM,
     DELIVER_SM, DATA_SM}
)  # fmt: skip
BINDS = {BIND_RECEIVER: "rx", BIND_TRANSMITTER: "tx", BIND_TRANSCEIVER: "trx"}
BAD_INPUT = frozenset(
    {ESME_RINVMSGLEN, ESME_RINVCMDLEN, ESME_RINVSRCADR, ESME_RINVDSTADR, ESME_RINVMSGID,
     ESME_RINVPASWD, ESME_RINVSYSID, ESME_RINVSERTYP, ESME_RINVSYSTYP, ESME_RINVSCHED,
     ESME_RINVEXPIRY, ESME_RINVOPTPARSTREAM}
)  # fmt: skip
"""The statuses filterd's codec answers a malformed body with (filterd/smpp/decode.py)."""
BAD_LENGTH = frozenset({ESME_RINVCMDLEN})
UNKNOWN_COMMAND = frozenset({ESME_RINVCMDID})
SUBMIT_OUTCOMES = frozenset({ESME_ROK, FILTERD_REFUSED, FILTERD_NO_CONSENT, ESME_RINVDSTADR})
"""What a decoded submit_sm on a transmitting bind may get, registry and carrier up."""


class BadSession(AssertionError):
    """filterd answered wrongly, not at all, twice, or did not close when it should."""


# ---- building PDUs (broken ones too) ---------------------------------------------------


def frame(command_id: int, body: bytes, sequence: int, status: int = 0) -> bytes:
    """A PDU with a correct command_length around `body`."""
    return HEADER.pack(16 + len(body), command_id, status, sequence) + body


def bind_body(system_id: bytes, password: bytes, system_type: bytes = b"",
              address_range: bytes = b"") -> bytes:  # fmt: skip
    """A bind body; fields are written with a NUL after them, whatever their length."""
    fields = b"\0".join([system_id, password, system_type])
    return fields + b"\0" + bytes([0x34, 0, 0]) + address_range + b"\0"


SM_FIELDS = ("service_type", "source_addr", "destination_addr", "schedule_delivery_time",
             "validity_period")  # fmt: skip
OVERLONG_STATUS = {
    "service_type": (6, ESME_RINVSERTYP),
    "source_addr": (21, ESME_RINVSRCADR),
    "destination_addr": (21, ESME_RINVDSTADR),
    "schedule_delivery_time": (17, ESME_RINVSCHED),
    "validity_period": (17, ESME_RINVEXPIRY),
    "system_id": (16, ESME_RINVSYSID),
    "password": (9, ESME_RINVPASWD),
    "system_type": (13, ESME_RINVSYSTYP),
    "address_range": (41, ESME_RINVCMDLEN),
}
"""SMPP maximum (with the NUL) and filterd's status for a C-Octet String without a NUL."""


def sm_body(fields: dict[str, bytes], short_message: bytes, *, sm_length: int | None = None,
            tlvs: bytes = b"", dest_ton: int = 1, esm_class: int = 0,
            data_coding: int = 0) -> bytes:  # fmt: skip
    """A submit_sm body from raw fields (any length), sm_length possibly lying."""
    f = {name: fields.get(name, b"") for name in SM_FIELDS}
    if "source_addr" not in fields:
        f["source_addr"] = b"10690001"
    length = len(short_message) if sm_length is None else sm_length
    return (
        f["service_type"] + b"\0" + b"\x00\x00" + f["source_addr"] + b"\0"
        + bytes([dest_ton, 1]) + f["destination_addr"] + b"\0"
        + bytes([esm_class, 0, 0]) + f["schedule_delivery_time"] + b"\0"
        + f["validity_period"] + b"\0" + bytes([0, 0, data_coding, 0, length])
        + short_message + tlvs
    )  # fmt: skip


def tlv(tag: int, value: bytes) -> bytes:
    """One optional parameter."""
    return struct.pack(">HH", tag, len(value)) + value


# ---- what a session is -------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """A piece of the stream: bytes, a label, and (when built broken or aimed on purpose)
    the statuses filterd must answer it with if it arrives as one PDU and is judged."""

    data: bytes
    label: str
    statuses: frozenset[int] | None = None


@dataclass(frozen=True)
class Session:
    """One hostile session: an optional bind first ("tx", "rx", "trx", or "wrong": a
    transceiver bind with a wrong password), the chunks, and where the stream is cut into
    separate writes."""

    bind: str | None
    chunks: tuple[Chunk, ...]
    cuts: tuple[int, ...]

    def stream(self) -> tuple[bytes, dict[int, Chunk]]:
        """The bytes to send, and each chunk by its offset."""
        parts, at, offset = [], {}, 0
        for chunk in (*self.prelude(), *self.chunks):
            at[offset] = chunk
            parts.append(chunk.data)
            offset += len(chunk.data)
        return b"".join(parts), at

    def prelude(self) -> tuple[Chunk, ...]:
        """The first bind, if any."""
        if self.bind is None:
            return ()
        if self.bind == "wrong":
            wrong = BindTransceiver(sequence_number=1, system_id=SYSTEM_ID, password="wrong")  # noqa: S106
            return (Chunk(encode(wrong), "bind_wrong"),)
        cls = {"tx": BindTransmitter, "rx": BindReceiver, "trx": BindTransceiver}[self.bind]
        pdu = cls(sequence_number=1, system_id=SYSTEM_ID, password=PASSWORD)
        return (Chunk(encode(pdu), f"bind_{self.bind}"),)

    def writes(self) -> list[bytes]:
        """The stream cut at `cuts` (positions taken modulo its length)."""
        data, _ = self.stream()
        points = sorted({c % (len(data) + 1) for c in self.cuts} | {0, len(data)})
        return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


# ---- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One answer filterd owes: to which sequence number, which command ids and statuses."""

    sequence: int
    command_ids: frozenset[int]
    statuses: frozenset[int]
    what: str
    optional: bool = False
    label: str = ""
    """The generated chunk this PDU is ("unaligned": framing moved by earlier bytes)."""

    def accepts(self, command_id: int, sequence: int, status: int) -> bool:
        """True when a response fits this expectation."""
        return (
            sequence == self.sequence and command_id in self.command_ids and status in self.statuses
        )


@dataclass
class Plan:
    """What filterd must answer to a stream, and how the session ends.

    `ending` is "open" (every PDU read, connection kept), "pending" (a PDU cut short
    at the end: filterd waits for the rest) or "closed" (filterd closes after
    `reason`)."""

    expected: list[Expected] = field(default_factory=list)
    ending: str = "open"
    reason: str = ""
    frames: int = 0
    labels: Counter[str] = field(default_factory=Counter)


def _judge(
    pdu: object, bound: str | None, aimed: frozenset[int] | None
) -> tuple[frozenset[int], str | None, str]:
    """For a decoded request: the statuses its response may carry, the bind state after
    it, and why filterd then closes ("" when it does not)."""
    # by default: submit_sm unbound or on a receiver bind; deliver_sm, data_sm from a client
    statuses, close = frozenset({ESME_RINVBNDSTS}), ""
    if isinstance(pdu, BindTransmitter | BindReceiver | BindTransceiver):
        if bound is not None:
            statuses = frozenset({ESME_RALYBND})
        elif (pdu.system_id, pdu.password) == (SYSTEM_ID, PASSWORD):
            statuses, bound = frozenset({ESME_ROK}), BINDS[pdu.command_id]
        else:
            statuses, close = frozenset({ESME_RINVPASWD}), "bind refused"
    elif isinstance(pdu, Unbind):
        statuses, close = frozenset({ESME_ROK}), "unbind"
    elif isinstance(pdu, EnquireLink):
        statuses = frozenset({ESME_ROK})
    elif isinstance(pdu, SubmitSm) and bound in ("tx", "trx"):
        statuses = aimed or SUBMIT_OUTCOMES
    return statuses, bound, close


def plan(stream: bytes, chunks: dict[int, Chunk]) -> Plan:
    """The answers filterd owes for `stream` on a new connection (see the module doc)."""
    result = Plan()
    bound: str | None = None
    offset = 0
    while len(stream) - offset >= 16:
        length, command_id, _, sequence = HEADER.unpack_from(stream, offset)
        framed = 16 <= length <= MAX_PDU_LENGTH
        if framed and len(stream) - offset < length:
            break  # filterd waits for the rest of this PDU
        chunk = chunks.get(offset)
        aimed = chunk if chunk is not None and len(chunk.data) == length else None
        label = aimed.label if aimed is not None else "unaligned"
        name = f"{label} {command_id:#010x} seq {sequence}"
        result.labels[label] += 1
        result.frames += 1
        ids = frozenset({command_id | RESPONSE_BIT})
        if not framed:
            ids, statuses, close = frozenset({GENERIC_NACK}), BAD_LENGTH, "bad command_length"
        elif command_id & RESPONSE_BIT:
            offset += length
            continue
        elif command_id not in KNOWN_REQUESTS:
            ids, statuses, close = frozenset({GENERIC_NACK}), UNKNOWN_COMMAND, ""
        else:
            try:
                pdu = decode(stream[offset : offset + length])
            except SmppProtocolError:
                ids = ids | {GENERIC_NACK}
                statuses, close = (aimed.statuses if aimed else None) or BAD_INPUT, ""
                if command_id in BINDS and bound is None:
                    close = "bind refused"  # a bind the codec refused is a failed bind
            else:
                statuses, bound, close = _judge(pdu, bound, aimed.statuses if aimed else None)
        offset += length
        optional = framed and command_id == ALERT_NOTIFICATION
        result.expected.append(Expected(sequence, ids, statuses, name, optional, label))
        if close:
            result.ending, result.reason = "closed", close
            return result
    if offset < len(stream):
        result.ending, result.reason = "pending", f"{len(stream) - offset} octets of a PDU"
    return result


# ---- strategies ------------------------------------------------------------------------------

SEQUENCE = st.one_of(
    st.integers(2, 0x7FFFFFFF), st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
)


def _no_nul(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size).map(lambda b: b.replace(b"\0", b"x"))


DESTINATIONS: list[tuple[int, bytes, int]] = [
    (1, JANE_SMS.encode(), ESME_ROK),
    (0, b"13800138000", ESME_ROK),
    (1, REFUSED_SMS.encode(), FILTERD_REFUSED),
    (1, UNKNOWN_SMS.encode(), FILTERD_NO_CONSENT),
    (1, b"123", ESME_RINVDSTADR),
    (0, b"not-a-number", ESME_RINVDSTADR),
    (1, b"", ESME_RINVDSTADR),
]
"""(dest_addr_ton, destination_addr, the status a bound submit_sm to it gets)."""
RANDOM_DESTINATION = st.one_of(
    _no_nul(0, 20),
    st.from_regex(rb"\A\+?[0-9]{1,20}\Z").filter(lambda b: len(b) <= 20),
    st.sampled_from([b"+", b" 8613800138000", b"jane@example.com", b"\xef\xbc\x91" * 6,
                     b"86 138 0013 8000", b"0", b"00000000000000000000"]),
)  # fmt: skip
UDH = st.one_of(
    st.just(b""),
    st.builds(lambda r, t, s: bytes([5, 0, 3, r, t, s]), st.integers(0, 255),
              st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda r, t, s: bytes([6, 8, 4]) + r.to_bytes(2, "big") + bytes([t, s]),
              st.integers(0, 0xFFFF), st.integers(0, 3), st.integers(0, 3)),
    st.binary(max_size=12),  # a damaged UDH: lengths that run past the message, etc.
    st.sampled_from([b"\xff", b"\x05\x00\x03", b"\x00", b"\x02\x00\x09"]),
)  # fmt: skip
OPTIONAL = st.one_of(
    st.just(b""),
    st.builds(lambda r, t, s: tlv(TAG_SAR_MSG_REF_NUM, r) + tlv(TAG_SAR_TOTAL_SEGMENTS, t)
              + tlv(TAG_SAR_SEGMENT_SEQNUM, s),
              st.binary(max_size=3), st.binary(max_size=2), st.binary(max_size=2)),
    st.builds(lambda v: tlv(TAG_MESSAGE_PAYLOAD, v), st.binary(max_size=300)),
    st.builds(tlv, st.integers(0, 0xFFFF), st.binary(max_size=16)),
)  # fmt: skip


@st.composite
def submit(draw: st.DrawFn) -> Chunk:
    """A decodable submit_sm: a known destination (its status known) or a random one, with
    random data_coding, esm_class, UDH and optional parameters."""
    sequence = draw(SEQUENCE)
    known = draw(st.booleans())
    if known:
        ton, destination, status = draw(st.sampled_from(DESTINATIONS))
        statuses: frozenset[int] | None = frozenset({status})
    else:
        ton, destination, statuses = draw(st.integers(0, 255)), draw(RANDOM_DESTINATION), None
    udh = draw(UDH)
    esm_class = (
        draw(st.sampled_from([0x00, 0x40, 0x43, 0x04, 0xFF]))
        if udh
        else draw(st.sampled_from([0x00, 0x40]))
    )
    text = draw(st.binary(max_size=160))
    message = (udh + text)[: draw(st.sampled_from([254, 140, 0]))] if udh or text else b""
    body = sm_body({"destination_addr": destination}, message, tlvs=draw(OPTIONAL),
                   dest_ton=ton, esm_class=esm_class,
                   data_coding=draw(st.sampled_from([0, 3, 8, 0x18, 0xF0, 0xFF])))  # fmt: skip
    return Chunk(frame(SUBMIT_SM, body, sequence), "submit_known" if known else "submit", statuses)


@st.composite
def broken_submit(draw: st.DrawFn) -> Chunk:
    """A submit_sm broken on purpose: sm_length over 254 or past the body, an overlong
    C-Octet String, a body cut short in its mandatory part, or a truncated TLV."""
    sequence = draw(SEQUENCE)
    kind = draw(st.sampled_from(["sm_length", "overlong", "truncated", "tlv"]))
    valid = sm_body({"destination_addr": JANE_SMS.encode()}, b"hello")
    if kind == "sm_length":
        message = draw(st.binary(max_size=40))
        lie = draw(st.one_of(st.integers(255, 255), st.integers(len(message) + 1, 254)))
        body = sm_body({"destination_addr": JANE_SMS.encode()}, message, sm_length=lie)
        return Chunk(frame(SUBMIT_SM, body, sequence), "submit_sm_length",
                     frozenset({ESME_RINVMSGLEN}))  # fmt: skip
    if kind == "overlong":
        name = draw(st.sampled_from(SM_FIELDS))
        size, status = OVERLONG_STATUS[name]
        value = draw(_no_nul(size, size + 30))
        body = sm_body({"destination_addr": JANE_SMS.encode(), name: value}, b"hi")
        return Chunk(frame(SUBMIT_SM, body, sequence), f"submit_overlong_{name}",
                     frozenset({status}))  # fmt: skip
    if kind == "truncated":
        cut = draw(st.integers(0, len(valid) - 1))
        return Chunk(frame(SUBMIT_SM, valid[:cut], sequence), "submit_truncated",
                     frozenset({ESME_RINVCMDLEN, ESME_RINVMSGLEN}))  # fmt: skip
    value = draw(st.binary(max_size=8))
    whole = tlv(draw(st.integers(0, 0xFFFF)), value)
    cut = draw(st.integers(1, len(whole) - 1))
    return Chunk(frame(SUBMIT_SM, valid + whole[:cut], sequence), "submit_truncated_tlv",
                 frozenset({ESME_RINVOPTPARSTREAM}))  # fmt: skip


@st.composite
def bind(draw: st.DrawFn) -> Chunk:
    """A bind: valid (any mode), with a wrong password (rare: each costs filterd's 0.5 s
    back-off), or with an overlong field (refused by the codec; before a bind that is a
    failed bind like a wrong password: back-off, then closed)."""
    sequence = draw(SEQUENCE)
    command_id = draw(st.sampled_from(sorted(BINDS)))
    kind = draw(st.sampled_from(["valid"] * 4 + ["overlong"] * 4 + ["wrong"]))
    if kind == "valid":
        body = bind_body(SYSTEM_ID.encode(), PASSWORD.encode())
        return Chunk(frame(command_id, body, sequence), "bind")
    if kind == "wrong":
        password = draw(st.sampled_from([b"", b"wrong", b"CHG-ME-1", b"chg-me-"]))
        system_id = draw(st.sampled_from([SYSTEM_ID.encode(), b"nobody", b""]))
        body = bind_body(system_id, password)
        return Chunk(frame(command_id, body, sequence), "bind_wrong")
    name = draw(st.sampled_from(["system_id", "password", "system_type", "address_range"]))
    size, status = OVERLONG_STATUS[name]
    fields = {"system_id": SYSTEM_ID.encode(), "password": PASSWORD.encode(),
              "system_type": b"", "address_range": b""}  # fmt: skip
    fields[name] = draw(_no_nul(size, size + 40))
    return Chunk(frame(command_id, bind_body(**fields), sequence), f"bind_overlong_{name}",
                 frozenset({status}))  # fmt: skip


KNOWN_IDS = sorted(KNOWN_REQUESTS)
OTHER_SMPP_IDS = [0x00000000, 0x00000003, 0x00000007, 0x00000008, 0x0000000B, 0x00000021,
                  0x00000102, 0x00000111, 0x7FFFFFFF]  # fmt: skip
RESPONSE_IDS = [GENERIC_NACK, *(i | RESPONSE_BIT for i in KNOWN_IDS), 0x80000003, 0xFFFFFFFF]


def _header(length: int, command_id: int, sequence: int, status: int = 0) -> bytes:
    return HEADER.pack(length, command_id, status, sequence)


CHUNK: st.SearchStrategy[Chunk] = st.one_of(
    submit(),
    submit(),
    submit(),
    broken_submit(),
    broken_submit(),
    bind(),
    # a known command id with a random (often truncated) body
    st.builds(lambda c, b, s: Chunk(frame(c, b, s), "known_random_body"),
              st.sampled_from(KNOWN_IDS), st.binary(max_size=60), SEQUENCE),
    # enquire_link and unbind, bare or with a body they must not have
    st.builds(lambda s: Chunk(encode(EnquireLink(sequence_number=s)), "enquire_link"), SEQUENCE),
    st.builds(lambda s, b: Chunk(frame(ENQUIRE_LINK, b, s), "enquire_link_body",
                                 frozenset({ESME_RINVCMDLEN})),
              SEQUENCE, st.binary(min_size=1, max_size=8)),
    st.builds(lambda s: Chunk(encode(Unbind(sequence_number=s)), "unbind"), SEQUENCE),
    st.builds(lambda s, b: Chunk(frame(UNBIND, b, s), "unbind_body",
                                 frozenset({ESME_RINVCMDLEN})),
              SEQUENCE, st.binary(min_size=1, max_size=8)),
    # a client sending what only an SMSC sends
    st.builds(lambda s: Chunk(encode(DeliverSm(sequence_number=s, destination_addr="1")),
                              "deliver_sm"), SEQUENCE),
    st.builds(lambda s: Chunk(encode(DataSm(sequence_number=s, destination_addr="1")),
                              "data_sm"), SEQUENCE),
    # command ids filterd does not know (some are SMPP's, some nobody's)
    st.builds(lambda c, b, s: Chunk(frame(c, b, s), "unknown_command"),
              st.one_of(st.sampled_from(OTHER_SMPP_IDS),
                        st.integers(0, 0x7FFFFFFF).filter(lambda c: c not in KNOWN_REQUESTS)),
              st.binary(max_size=24), SEQUENCE),
    # responses: to nothing filterd sent, well formed or not
    st.builds(lambda c, b, s, st_: Chunk(frame(c, b, s, st_), "response"),
              st.one_of(st.sampled_from(RESPONSE_IDS), st.integers(RESPONSE_BIT, 0xFFFFFFFF)),
              st.binary(max_size=24), SEQUENCE, st.sampled_from([0, 8, 0xFFFFFFFF])),
    st.builds(lambda s: Chunk(encode(SubmitSmResp(sequence_number=s, message_id="x1")),
                              "submit_sm_resp"), SEQUENCE),
    # the largest PDU filterd takes
    st.builds(lambda s: Chunk(frame(DATA_SM, b"\0" * (MAX_PDU_LENGTH - 16), s), "max_length"),
              SEQUENCE),
    # many PDUs back to back (one write unless cut)
    st.builds(
        lambda n, s: Chunk(b"".join(encode(EnquireLink(sequence_number=s + i)) for i in range(n)),
                           "burst"),
        st.integers(2, 40), st.integers(2, 0x7FFFFF00),
    ),
)  # fmt: skip
"""PDUs that keep the framing (each is one whole PDU, or several)."""
TAIL: st.SearchStrategy[Chunk | None] = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    # framing broken for good: command_length below 16 or over the maximum
    st.builds(lambda n, c, s, t: Chunk(_header(n, c, s) + t, "bad_length"),
              st.one_of(st.integers(0, 15), st.integers(MAX_PDU_LENGTH + 1, 0xFFFFFFFF),
                        st.sampled_from([MAX_PDU_LENGTH + 1, 0xFFFFFFFF, 0x80000010])),
              st.sampled_from([SUBMIT_SM, BIND_TRANSCEIVER, ENQUIRE_LINK, GENERIC_NACK, 0x42]),
              SEQUENCE, st.binary(max_size=20)),
    # a long PDU whose end never comes (filterd waits for it)
    st.builds(lambda n, s, b: Chunk(_header(n, SUBMIT_SM, s) + b, "unfinished"),
              st.integers(17, MAX_PDU_LENGTH), SEQUENCE, st.binary(max_size=20)),
    st.binary(min_size=1, max_size=200).map(lambda b: Chunk(b, "random_bytes")),
)  # fmt: skip
"""What may end a session's stream: nothing, a framing error, a PDU never finished, or
random bytes (which may be any of these)."""
SESSIONS = st.builds(
    Session,
    # about 1 in 17 binds wrongly (each costs filterd's 0.5 s back-off); "wrong" is not at
    # an end of the list, which Hypothesis draws more often
    st.sampled_from([None, "trx", "tx", "rx", "trx", None, "wrong", "trx", "tx", "trx", "rx",
                     "trx", "tx", "trx", None, "rx", "trx"]),
    st.builds(lambda body, tail: body if tail is None else (*body, tail),
              st.lists(CHUNK, max_size=8).map(tuple), TAIL),
    st.lists(st.integers(0, 1 << 20), max_size=8).map(tuple),
).filter(lambda s: s.bind is not None or s.chunks)  # fmt: skip


# ---- the driver --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one session saw."""

    plan: Plan
    statuses: Counter[int] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    """Answers by "chunk label:status"."""
    responses: int = 0
    write_failed: bool = False


def _frames(buffer: bytearray) -> list[bytes]:
    """Cut whole PDUs off the front of `buffer`; BadSession for a bad command_length."""
    out = []
    while len(buffer) >= 16:
        (length,) = struct.unpack_from(">I", buffer)
        if not 16 <= length <= MAX_PDU_LENGTH:
            raise BadSession(f"filterd sent a command_length of {length}: {bytes(buffer[:32])!r}")
        if len(buffer) < length:
            break
        out.append(bytes(buffer[:length]))
        del buffer[:length]
    return out


class Reader:
    """Reads and checks the PDUs filterd sends on one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.pdus: list[tuple[int, int, int]] = []
        """(command_id, command_status, sequence_number) of each PDU received."""
        self.decoded: list[AnyPdu] = []
        self.eof = False

    def _take(self, data: bytes) -> None:
        self.buffer += data
        for pdu_bytes in _frames(self.buffer):
            command_id, status, sequence = HEADER.unpack_from(pdu_bytes)[1:]
            if not command_id & RESPONSE_BIT:
                raise BadSession(f"filterd sent a request {command_id:#010x} mid-session")
            try:
                self.decoded.append(decode(pdu_bytes))
            except SmppProtocolError as exc:
                raise BadSession(f"malformed response {pdu_bytes[:64]!r}: {exc}") from None
            if status == ESME_RSYSERR:
                raise BadSession(f"ESME_RSYSERR in {command_id:#010x} seq {sequence}")
            self.pdus.append((command_id, status, sequence))

    def until(self, command_id: int, sequence: int, what: str) -> None:
        """Read until a response (command_id, sequence) arrives."""
        while not any(p[0] == command_id and p[2] == sequence for p in self.pdus):
            if self.eof or not self._recv():
                raise BadSession(f"connection closed before the answer to {what}")

    def to_eof(self, what: str) -> None:
        """Read until filterd closes the connection."""
        while not self.eof:
            self._recv()
        if self.buffer:
            raise BadSession(f"filterd closed mid-PDU ({bytes(self.buffer[:32])!r}) {what}")

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise BadSession("filterd neither answered nor closed in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._take(data)
        return True


def match(expected: list[Expected], received: list[tuple[int, int, int]]) -> dict[int, int]:
    """Every received response answers one expected request, each owed answer came
    exactly once; BadSession naming the first difference. Returns which response
    (index) answered which expectation (index)."""
    owner: dict[int, int] = {}  # expected index -> received index

    def assign(r: int, seen: set[int]) -> bool:
        command_id, status, sequence = received[r]
        for e, want in enumerate(expected):
            if e in seen or not want.accepts(command_id, sequence, status):
                continue
            seen.add(e)
            if e not in owner or assign(owner[e], seen):
                owner[e] = r
                return True
        return False

    for r, (command_id, status, sequence) in enumerate(received):
        if not assign(r, set()):
            owed = [w for w in expected if w.sequence == sequence]
            raise BadSession(
                f"unexpected answer {command_id:#010x} status {status:#x} seq {sequence}; "
                f"owed for that sequence: {owed}"
            )
    missing = [w for e, w in enumerate(expected) if e not in owner and not w.optional]
    if missing:
        raise BadSession(f"no answer to {missing[0]} ({len(missing)} unanswered)")
    return owner


def run(port: int, session: Session, timeout: float = 15.0) -> Outcome:
    """Play `session` on a new connection and check filterd's answers against `plan`.

    After the stream: if the model says the connection is open, an enquire_link must be
    answered (filterd did not hang), then the client half-closes; if a PDU is unfinished,
    the client half-closes; if filterd must close by itself, the client only waits.
    Either way filterd must then close, every owed answer sent. Raises BadSession, its
    message followed by the model's ending and the answers owed and received.
    """
    stream, chunks = session.stream()
    expectation = plan(stream, chunks)
    sentinel = encode(EnquireLink(sequence_number=SENTINEL_SEQUENCE))
    if expectation.ending == "open":
        expectation = plan(stream + sentinel, {**chunks, len(stream): Chunk(sentinel, "end")})
    outcome = Outcome(expectation)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(sock)
        try:
            _play(sock, reader, session, outcome, sentinel)
            owner = match(expectation.expected, reader.pdus)
        except BadSession as exc:
            owed = "\n    ".join(map(str, expectation.expected[:30]))
            raise BadSession(
                f"{exc}\n  ending {expectation.ending!r} ({expectation.reason}); "
                f"received (id, status, seq): {reader.pdus[:30]}\n  owed:\n    {owed}"
            ) from None
    for e, r in owner.items():
        outcome.answered[f"{expectation.expected[e].label}:{reader.pdus[r][1]:#x}"] += 1
    outcome.responses = len(reader.pdus)
    outcome.statuses.update(p[1] for p in reader.pdus)
    return outcome


def _play(
    sock: socket.socket, reader: Reader, session: Session, outcome: Outcome, sentinel: bytes
) -> None:
    """Write the session, end it as the plan says, read until filterd closes."""
    ending = outcome.plan.ending
    try:
        for piece in session.writes():
            sock.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        outcome.write_failed = True
        if ending != "closed":
            raise BadSession("filterd closed the connection while it should read on") from None
    if ending == "open":
        try:
            sock.sendall(sentinel)
        except OSError as exc:
            raise BadSession(f"the closing enquire_link could not be sent: {exc}") from None
        reader.until(ENQUIRE_LINK | RESPONSE_BIT, SENTINEL_SEQUENCE, "the closing enquire_link")
    if ending != "closed":
        sock.shutdown(socket.SHUT_WR)
    reader.to_eof(f"(expected ending: {ending} {outcome.plan.reason})")


def still_serves(port: int, timeout: float = 15.0) -> None:
    """A fresh connection binds, has a submit_sm to the consenting number accepted (with a
    message id) and unbinds. Raises BadSession."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = Reader(sock)
        bind_pdu = BindTransceiver(sequence_number=1, system_id=SYSTEM_ID, password=PASSWORD)
        sock.sendall(encode(bind_pdu))
        reader.until(BIND_TRANSCEIVER | RESPONSE_BIT, 1, "a fresh bind")
        submit_pdu = SubmitSm(sequence_number=2, source_addr="10690001", dest_addr_ton=1,
                              dest_addr_npi=1, destination_addr=JANE_SMS,
                              short_message=b"still there?")  # fmt: skip
        sock.sendall(encode(submit_pdu) + encode(Unbind(sequence_number=3)))
        reader.to_eof("after unbind")
        want = [
            (BIND_TRANSCEIVER | RESPONSE_BIT, ESME_ROK, 1),
            (SUBMIT_SM | RESPONSE_BIT, ESME_ROK, 2),
            (UNBIND | RESPONSE_BIT, ESME_ROK, 3),
        ]
        if sorted(reader.pdus) != sorted(want):
            raise BadSession(f"a fresh session got {reader.pdus}, not {want}")
        answer = next(p for p in reader.decoded if isinstance(p, SubmitSmResp))
        if not answer.message_id:
            raise BadSession("the fresh submit_sm was accepted without a message id")
