"""Hostile Postfix policy delegation sessions for a real filterd policy service, a model
of the replies it owes, and a driver that plays a session over TCP and checks every
reply (used by tests/faults/test_policy_fuzz.py).

The model (`plan`) reads the byte stream by the protocol's rules as
filterd/policy_service.py states them: attribute lines `name=value` ended by a newline
(one CR before it tolerated), a request ended by an empty line; a line over MAX_LINE
bytes (CR not counted; an unfinished line over MAX_LINE + 1), a line without `=`, an
empty name, or more than MAX_ATTRIBUTES lines in a request is a protocol error: every
request completed before that line is answered, then filterd closes the connection.
A request is answered `action=<text>` + newline + an empty line, in order:

- `protocol_state` other than RCPT (any letter case), or an empty request: DUNNO;
- the account: `sasl_username` when not empty (only "newsletter" exists), else a
  `client_address` inside POLICY_NETWORK; none: NO_ACCOUNT (554);
- the recipient: no `@` → 553 "not an email address"; known recipients get their
  exact reply (DUNNO / 550 refused / 550 no consent); others one of DUNNO, 550, 553.

Replies carry no control characters (filterd writes `?` for them).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import socket
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import strategies as st

from filterd.policy_wire import MAX_ATTRIBUTES, MAX_LINE

USER = b"newsletter"
NETWORK = ipaddress.ip_network("192.0.2.0/24")
"""POLICY_NETWORK of tests/faults/conftest.write_config."""
NO_ACCOUNT = b"554 5.7.1 client is not allowed to send through filterd (no account)"
REFUSED = b"550 5.7.1 <%s>: recipient has refused commercial messages"
NO_CONSENT = b"550 5.7.1 <%s>: no consent or request on record"
BAD_ADDRESS = b"553 5.1.3 <%s>: %s"

KNOWN_RECIPIENTS: dict[bytes, bytes] = {
    b"jane@example.com": b"DUNNO",
    b"JANE@Example.COM": b"DUNNO",
    b" jane@example.com ": b"DUNNO",
    b"bob@example.com": REFUSED % b"bob@example.com",
    b"carol@example.com": NO_CONSENT % b"carol@example.com",
    b"no-at-sign": BAD_ADDRESS % (b"no-at-sign", b"not an email address"),
    b"": BAD_ADDRESS % (b"", b"not an email address"),
    b"+8613800138000": BAD_ADDRESS % (b"+8613800138000", b"not an email address"),
    b"x\xff@example.com": BAD_ADDRESS % (b"x?@example.com", b"not valid UTF-8"),
}
"""Recipients whose reply is known exactly (jane consents, bob refused, carol nothing)."""
ANY_RECIPIENT = re.compile(
    rb"DUNNO|550 5\.7\.1 <[^\n]*>: (recipient has refused commercial messages|no consent or "
    rb"request on record)|553 5\.1\.3 <[^\n]*>: [^\n]+"
)
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
SENTINEL = b"protocol_state=RCPT\nsasl_username=newsletter\nrecipient=jane@example.com\n\n"
"""The request that ends a session still open: DUNNO."""


class BadSession(AssertionError):
    """filterd replied wrongly, not at all, too often, or did not close when it should."""


# ---- the model -------------------------------------------------------------------------------


def _in_network(client_address: bytes) -> bool:
    try:
        ip = ipaddress.ip_address(client_address.decode("ascii").split("%", 1)[0])
    except (UnicodeDecodeError, ValueError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in NETWORK


def expected_action(request: dict[bytes, bytes]) -> re.Pattern[bytes]:
    """The action text a complete request must get (a pattern that must match it whole)."""
    state = request.get(b"protocol_state", b"").decode("utf-8", "surrogateescape")
    if state.upper() != "RCPT":
        return re.compile(re.escape(b"DUNNO"))
    user = request.get(b"sasl_username", b"")
    if not (user == USER if user else _in_network(request.get(b"client_address", b""))):
        return re.compile(re.escape(NO_ACCOUNT))
    recipient = request.get(b"recipient", b"")
    if recipient in KNOWN_RECIPIENTS:
        return re.compile(re.escape(KNOWN_RECIPIENTS[recipient]))
    if b"@" not in recipient:
        return re.compile(re.escape(BAD_ADDRESS % (_echoed(recipient), b"not an email address")))
    return ANY_RECIPIENT


def _echoed(recipient: bytes) -> bytes:
    """A recipient as a reply echoes it: each undecodable byte and control character `?`."""
    text = recipient.decode("utf-8", "surrogateescape")
    return "".join(
        "?" if 0xDC80 <= ord(c) <= 0xDCFF or ord(c) < 32 or ord(c) == 127 else c for c in text
    ).encode()


@dataclass
class Plan:
    """The replies filterd owes for a stream, and how the session ends: "open" (all read),
    "pending" (a request or line unfinished at the end) or "closed" (a protocol error)."""

    replies: list[re.Pattern[bytes]] = field(default_factory=list)
    ending: str = "open"
    reason: str = ""


def plan(stream: bytes) -> Plan:
    """Read `stream` by the protocol's rules (see the module doc)."""
    result = Plan()
    request: dict[bytes, bytes] = {}
    lines = 0
    pos = 0
    while True:
        end = stream.find(b"\n", pos)
        if end < 0:
            tail = stream[pos:]
            if len(tail) > MAX_LINE + 1:
                result.ending, result.reason = "closed", "unfinished line too long"
            elif tail or lines:
                result.ending, result.reason = "pending", "request unfinished"
            return result
        line = stream[pos:end]
        pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE:
            result.ending, result.reason = "closed", "line too long"
            return result
        if not line:
            result.replies.append(expected_action(request))
            request, lines = {}, 0
            continue
        name, equals, value = line.partition(b"=")
        lines += 1
        if not equals or not name or lines > MAX_ATTRIBUTES:
            result.ending = "closed"
            result.reason = "too many attributes" if equals and name else "not name=value"
            return result
        request[name] = value


# ---- strategies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A piece of the stream and what it is."""

    data: bytes
    label: str


@dataclass(frozen=True)
class Session:
    """The items of one connection and where the stream is cut into separate writes."""

    items: tuple[Item, ...]
    cuts: tuple[int, ...]

    def stream(self) -> bytes:
        """The bytes to send."""
        return b"".join(item.data for item in self.items)

    def writes(self) -> list[bytes]:
        """The stream cut at `cuts` (positions taken modulo its length)."""
        data = self.stream()
        points = sorted({c % (len(data) + 1) for c in self.cuts} | {0, len(data)})
        return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


VOCABULARY = (b"protocol_state", b"sasl_username", b"client_address", b"recipient", b"queue_id")


def _line_safe(data: bytes) -> bytes:
    return data.replace(b"\n", b"")


NAME = st.binary(min_size=1, max_size=24).map(
    lambda b: _line_safe(b).replace(b"=", b"") or b"x"
).filter(lambda b: b not in VOCABULARY and b.rstrip(b"\r") not in VOCABULARY)  # fmt: skip
VALUE = st.binary(max_size=80).map(_line_safe)
STATES = [b"RCPT", b"rcpt", b"RcPt", b"DATA", b"END-OF-MESSAGE", b"CONNECT", b"", b"RCPT ",
          b"RCPT\x00", b"\xffRCPT"]  # fmt: skip
USERS = [USER, b"", b"NEWSLETTER", b"nobody", USER + b"\xff", USER + b" "]
CLIENTS = [b"192.0.2.7", b"192.0.2.255", b"::ffff:192.0.2.9", b"10.0.0.1", b"", b"garbage",
           b"\xff\xfe", b"2001:db8::1", b"192.0.2.300", b"192.0.2.7\x00"]  # fmt: skip
QUEUE_IDS = [b"", b"4F2A31C0D5", b"Q" * 300, "队列".encode(), b"id with spaces", b"4F2\xff31"]


RCPT_STATES = [b"RCPT", b"rcpt", b"RcPt"]
MEMBERS = [b"192.0.2.7", b"192.0.2.255", b"::ffff:192.0.2.9"]


@st.composite
def request(draw: st.DrawFn) -> Item:
    """A Postfix-like request: mostly a RCPT check by a known account (its sasl_username
    or a client address in its network) of a known or random recipient, else any mix of
    the attributes filterd reads (known or random values); random other attributes; a
    name sometimes repeated (the last value counts); LF or CRLF lines."""
    attributes: list[tuple[bytes, bytes]] = []
    values: dict[bytes, list[bytes]] = {
        b"protocol_state": STATES, b"sasl_username": USERS, b"client_address": CLIENTS,
        b"queue_id": QUEUE_IDS, b"recipient": list(KNOWN_RECIPIENTS),
    }  # fmt: skip
    if draw(st.integers(0, 3)):  # a RCPT check by a known account
        values[b"protocol_state"] = RCPT_STATES
        if draw(st.booleans()):
            values[b"sasl_username"] = [USER]
        else:
            values[b"sasl_username"] = [b""]
            values[b"client_address"] = MEMBERS
        for name in (b"protocol_state", b"sasl_username", b"client_address", b"recipient"):
            attributes.append((name, draw(st.sampled_from(values[name]))))
        if draw(st.integers(0, 3)) == 0:
            attributes[-1] = (b"recipient", draw(VALUE))
        label = "rcpt_request"
    else:
        for name, choices in values.items():
            if draw(st.integers(0, 5)):
                attributes.append((name, draw(st.one_of(st.sampled_from(choices), VALUE))))
        label = "request"
    if draw(st.booleans()):
        attributes.append((b"queue_id", draw(st.one_of(st.sampled_from(QUEUE_IDS), VALUE))))
    attributes += draw(st.lists(st.tuples(NAME, VALUE), max_size=6))
    attributes = list(draw(st.permutations(attributes)))
    if attributes and draw(st.integers(0, 4)) == 0:  # a name again: the last value counts
        attributes.append((attributes[0][0], draw(VALUE)))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(name + b"=" + value + eol for name, value in attributes)
    return Item(body + draw(st.sampled_from([b"\n", b"\r\n"])), label)


def _numbered(count: int) -> bytes:
    return b"".join(b"a%d=%d\n" % (i, i) for i in range(count))


ITEM: st.SearchStrategy[Item] = st.one_of(
    request(),
    request(),
    request(),
    st.just(Item(b"\n", "empty_request")),
    st.just(Item(b"\r\n", "empty_request")),
    # many requests in one write
    st.builds(lambda n: Item(SENTINEL * n, "burst"), st.integers(2, 40)),
    # exactly at the limits: fine
    st.just(Item(_numbered(MAX_ATTRIBUTES) + b"\n", "max_attributes")),
    st.builds(lambda cr: Item(b"x=" + b"v" * (MAX_LINE - 2) + cr + b"\n\n", "max_line"),
              st.sampled_from([b"", b"\r"])),
    # NULs and bytes that are not UTF-8 in names and values
    st.builds(lambda n, v: Item(n + b"=" + v + b"\n\n", "odd_bytes"),
              st.sampled_from([b"\x00", b"a\x00b", b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]),
              st.sampled_from([b"\x00", b"\xff\xfe", b"\x1b[31m", b"a=b=c", b"\r\r"])),
)  # fmt: skip
"""Items that keep the stream valid."""
BAD: st.SearchStrategy[Item] = st.one_of(
    st.builds(lambda line: Item(line + b"\n", "no_equals"),
              st.binary(min_size=1, max_size=60).map(lambda b: _line_safe(b).replace(b"=", b""))
              .filter(lambda b: b.rstrip(b"\r") != b"" or len(b) > 1)),
    st.builds(lambda v: Item(b"=" + v + b"\n", "empty_name"), VALUE),
    st.builds(lambda n: Item(b"x=" + b"v" * (n - 2) + b"\n", "overlong_line"),
              st.integers(MAX_LINE + 1, MAX_LINE + 2000)),
    st.builds(lambda n: Item(b"y" * n, "overlong_unfinished"),
              st.integers(MAX_LINE + 2, MAX_LINE + 3000)),
    st.just(Item(_numbered(MAX_ATTRIBUTES + 1) + b"\n", "too_many_attributes")),
)  # fmt: skip
"""Items that break the protocol: filterd must close after answering what came before."""
TAIL: st.SearchStrategy[Item | None] = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    BAD,
    st.binary(min_size=1, max_size=300).map(lambda b: Item(b, "random_bytes")),
    st.builds(lambda n, v: Item(n + b"=" + v + b"\n", "unfinished_request"), NAME, VALUE),
)
SESSIONS = st.builds(
    Session,
    st.builds(lambda items, tail: (*items, *([] if tail is None else [tail])),
              st.lists(ITEM, max_size=8), TAIL),
    st.lists(st.integers(0, 1 << 20), max_size=8).map(tuple),
).filter(lambda s: bool(s.items))  # fmt: skip


# ---- the driver --------------------------------------------------------------------------------

REPLY = re.compile(rb"action=([^\n]*)\n\n")


@dataclass
class Outcome:
    """What one session saw."""

    plan: Plan
    actions: Counter[str] = field(default_factory=Counter)
    """Replies by their first word (DUNNO, 550, 553, 554)."""
    write_failed: bool = False


def _read_to_eof(sock: socket.socket, data: bytearray, what: str) -> None:
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise BadSession(f"filterd neither replied nor closed in time ({what})") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return
        data += chunk


def _replies(data: bytes) -> list[bytes]:
    """The action texts of `data`; BadSession unless it is all whole replies."""
    out, pos = [], 0
    while pos < len(data):
        match = REPLY.match(data, pos)
        if match is None:
            raise BadSession(f"malformed reply bytes at {pos}: {data[pos : pos + 120]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


def run(port: int, session: Session, timeout: float = 15.0) -> Outcome:
    """Play `session` on a new connection and check the replies against `plan`.

    After the stream: if the model says the connection is open, the sentinel request
    must get DUNNO (filterd still reads it), then the client half-closes; if a request
    is unfinished, the client half-closes; after a protocol error the client only
    waits. Either way filterd must close, every owed reply sent. Raises BadSession.
    """
    stream = session.stream()
    expectation = plan(stream)
    if expectation.ending == "open":
        expectation = plan(stream + SENTINEL)
    outcome = Outcome(expectation)
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in session.writes():
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            outcome.write_failed = True
            if expectation.ending != "closed":
                raise BadSession("filterd closed the connection while it should read on") from None
        if expectation.ending == "open":
            sock.sendall(SENTINEL)
            while len(_complete(received)) < len(expectation.replies):
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    raise BadSession("no reply to the closing request: filterd hangs") from None
                if not chunk:
                    raise BadSession(f"closed after {_complete(received)!r}, owed more")
                received += chunk
        if expectation.ending != "closed":
            sock.shutdown(socket.SHUT_WR)
        _read_to_eof(sock, received, f"ending {expectation.ending} {expectation.reason}")
    actions = _replies(bytes(received))
    if len(actions) != len(expectation.replies):
        raise BadSession(
            f"{len(actions)} replies for {len(expectation.replies)} requests "
            f"(ending {expectation.ending}: {expectation.reason}): {actions[:5]!r}"
        )
    for index, (action, pattern) in enumerate(zip(actions, expectation.replies, strict=True)):
        if CONTROL.search(action) or not pattern.fullmatch(action):
            raise BadSession(f"reply {index} is {action[:200]!r}, not {pattern.pattern[:200]!r}")
        outcome.actions[action.split(b" ", 1)[0].decode("ascii", "replace")] += 1
    return outcome


def _complete(received: bytearray) -> list[bytes]:
    """The whole replies received so far (a reply may still be arriving)."""
    end = received.rfind(b"\n\n")
    return _replies(bytes(received[: end + 2])) if end >= 0 else []


def still_serves(port: int, timeout: float = 15.0) -> None:
    """A fresh connection gets DUNNO for the consenting recipient and the refusal for bob,
    on one connection. Raises BadSession."""
    refused = b"protocol_state=RCPT\nsasl_username=newsletter\nrecipient=bob@example.com\n\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(SENTINEL + refused)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        _read_to_eof(sock, received, "a fresh connection")
    want = [b"DUNNO", REFUSED % b"bob@example.com"]
    if _replies(bytes(received)) != want:
        raise BadSession(f"a fresh connection got {bytes(received)!r}")
