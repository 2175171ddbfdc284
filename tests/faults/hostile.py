"""Drivers of the hostile-network fault tests (tests/faults/test_hostile.py, SPEC §11).

- `hostile_config`: the config of `conftest.write_config` with all four front ends
  (SMTP relay, SMPP relay, policy service, HTTP) and extra keys in their listener
  tables (`idle_timeout`, `max_connections`, `max_connections_per_address`,
  `body_timeout`, `status_networks`);
- `LimitedDaemon`: `filterd serve` like conftest's `Daemon`, optionally started with
  RLIMIT_NOFILE lowered in the child (soft = hard);
- raw clients of every front end over loopback. Each connects from a chosen source
  address of 127.0.0.0/8 (all of it is loopback on Linux): the login gate and the
  per-address caps key on the client address, so scenarios that must not disturb each
  other use addresses of their own. Every read has a socket timeout; a read that
  waits for the server to close a connection (`read_until_closed`) waits for EOF,
  bounded by a timeout well above the idle timeout under test.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import selectors
import smtplib
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from filterd.identity import ConsumerHasher
from filterd.model import Channel
from filterd.normalize import normalize
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import AnyPdu, BindTransceiver, EnquireLink, EnquireLinkResp, Pdu, SubmitSm
from filterd.tokens import TokenKeys, derive_key
from tests.faults.conftest import (
    JANE,
    JANE_SMS,
    NUMBER,
    SECRET,
    SMPP_PASSWORD,
    SMPP_SYSTEM_ID,
    SMTP_PASSWORD,
    SMTP_USER,
    Daemon,
    Reaper,
    write_config,
)

FRONT_ENDS = ("smtp", "smpp", "policy", "http")
CLIENT = "127.0.0.1"
"""The legitimate client's address (the default source of every driver)."""
READ_TIMEOUT = 10.0
"""Socket timeout of a read that must be answered (the back-off tests pass longer ones)."""
CLOSE_TIMEOUT = 15.0
"""How long a driver waits for the server to close a connection: well above every
idle_timeout, body_timeout and login back-off the tests configure or cause before it."""

TomlValue = str | int | Sequence[str]


# ---- config and daemon ---------------------------------------------------------------------


def _toml(value: TomlValue) -> str:
    """A TOML value (strings here are ASCII, where JSON and TOML strings agree)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    return "[" + ", ".join(json.dumps(item) for item in value) + "]"


def hostile_config(
    home: Path,
    registry_url: str,
    *,
    sink_port: int,
    smsc_port: int,
    tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> Path:
    """`write_config` with the SMTP relay (to `sink_port`), the SMPP relay (carrier at
    `smsc_port`), the policy service and HTTP, every listener on 127.0.0.1 port 0; then
    `tables` = {"smtp" | "smpp" | "policy" | "http": {key: value}} added to those tables."""
    path = write_config(
        home, registry_url, smtp_upstream=sink_port, smsc_port=smsc_port, http=True, policy=True
    )
    text = path.read_text()
    for table, keys in (tables or {}).items():
        if table not in FRONT_ENDS:
            raise ValueError(f"no listener table [{table}]")
        header = f"\n[{table}]\n"
        if text.count(header) != 1:
            raise ValueError(f"[{table}] is not once in the config")
        lines = "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items())
        text = text.replace(header, header + lines)
    path.write_text(text)
    return path


class LimitedDaemon(Daemon):
    """conftest's `Daemon`, started with RLIMIT_NOFILE soft = hard = `nofile` when given."""

    def __init__(
        self,
        config: Path,
        reaper: Reaper,
        front_ends: tuple[str, ...] = FRONT_ENDS,
        *,
        nofile: int | None = None,
    ) -> None:
        super().__init__(config, reaper, front_ends, nofile=nofile)

    def open_descriptors(self) -> int:
        """How many descriptors the main process holds now (0 once it is gone)."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0


# ---- plain sockets ---------------------------------------------------------------------------


def connect(port: int, source: str = CLIENT, timeout: float = READ_TIMEOUT) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` from `source` (any free port)."""
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset);
    AssertionError when it is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"still open after {timeout:.0f} s; received {data[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        except TimeoutError:
            raise AssertionError(
                f"still open after {timeout:.0f} s; received {data[:200]!r}"
            ) from None
        if not chunk:
            return data
        data += chunk


def read_line(sock: socket.socket, pending: bytearray) -> bytes:
    """One CRLF-ended line (without it); b"" when the connection closes first."""
    while b"\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\r\n")
    pending[:] = rest
    return line


def read_smtp_reply(sock: socket.socket, pending: bytearray) -> bytes:
    """One whole SMTP reply (all lines of a multi-line one), CRLF-joined; b"" on EOF."""
    lines = []
    while True:
        line = read_line(sock, pending)
        if not line:
            return b""
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"\r\n".join(lines)


# ---- SMTP ----------------------------------------------------------------------------------


def plain_auth(user: str, password: str) -> bytes:
    """`AUTH PLAIN <initial response>` for `user` / `password`."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"AUTH PLAIN {token}\r\n".encode()


class SmtpSession:
    """A raw SMTP client connection: greeting read, EHLO sent and answered."""

    def __init__(self, port: int, source: str = CLIENT, timeout: float = READ_TIMEOUT) -> None:
        self.sock = connect(port, source, timeout)
        self.pending = bytearray()
        self.greeting = read_smtp_reply(self.sock, self.pending)
        if not self.greeting.startswith(b"220"):
            self.sock.close()
            raise AssertionError(f"SMTP greeting {self.greeting!r}")
        self.sock.sendall(b"EHLO tool.test\r\n")
        ehlo = read_smtp_reply(self.sock, self.pending)
        if not ehlo.startswith(b"250"):
            self.sock.close()
            raise AssertionError(f"EHLO answered {ehlo!r}")

    def send_auth(self, password: str, user: str = SMTP_USER) -> float:
        """Send AUTH PLAIN; the monotonic time just before it was sent."""
        started = time.monotonic()
        self.sock.sendall(plain_auth(user, password))
        return started

    def reply(self) -> bytes:
        """The next reply (b"" if the server closed)."""
        return read_smtp_reply(self.sock, self.pending)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def timed_auth(port: int, password: str, source: str, timeout: float = 60) -> tuple[bytes, float]:
    """One AUTH PLAIN on a fresh connection from `source`: the reply and the seconds
    from just before it was sent to its arrival."""
    session = SmtpSession(port, source, timeout)
    try:
        started = session.send_auth(password)
        reply = session.reply()
        return reply, time.monotonic() - started
    finally:
        session.close()


def smtp_transaction(port: int, source: str = CLIENT, timeout: float = READ_TIMEOUT) -> int:
    """A whole commercial message to the consented JANE (AUTH, MAIL, RCPT, DATA) through
    the relay: the reply code of DATA (250 when relayed); raises on any other failure."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout, source_address=(source, 0)) as client:
        client.ehlo("tool.test")
        client.login(SMTP_USER, SMTP_PASSWORD)
        client.mail("shop@acme.test")
        code, text = client.rcpt(JANE)
        if code != 250:
            raise AssertionError(f"RCPT {JANE}: {code} {text!r}")
        content = (
            f"From: shop@acme.test\r\nTo: {JANE}\r\nSubject: offer\r\n"
            "Message-ID: <hostile@fault.test>\r\n\r\nHello.\r\n"
        ).encode()
        code, text = client.data(content)
        return int(code)


def smtp_serves(port: int) -> bool:
    """True when a whole SMTP transaction to JANE through the relay gets 250 now."""
    with contextlib.suppress(OSError, smtplib.SMTPException, AssertionError):
        return smtp_transaction(port, timeout=5) == 250
    return False


# ---- SMPP ----------------------------------------------------------------------------------

_SEQUENCE = itertools.count(1)


class SmppSession:
    """A raw SMPP client connection (PDUs from filterd's own codec)."""

    def __init__(self, port: int, source: str = CLIENT, timeout: float = READ_TIMEOUT) -> None:
        self.sock = connect(port, source, timeout)
        self.framer = Framer()

    def send(self, pdu: Pdu) -> float:
        """Write a PDU; the monotonic time just before."""
        started = time.monotonic()
        self.sock.sendall(encode(pdu))
        return started

    def read(self) -> AnyPdu | None:
        """The next PDU (None when the connection closes first)."""
        while (pdu := self.framer.next_pdu()) is None:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not data:
                return None
            self.framer.feed(data)
        return pdu

    def send_bind(self, password: str, system_id: str = SMPP_SYSTEM_ID) -> float:
        """Send bind_transceiver; the time just before."""
        return self.send(
            BindTransceiver(sequence_number=next(_SEQUENCE), system_id=system_id, password=password)
        )

    def bind(self, password: str = SMPP_PASSWORD) -> int:
        """bind_transceiver and its status (-1 when the connection closed instead)."""
        self.send_bind(password)
        answer = self.read()
        return -1 if answer is None else int(answer.command_status)

    def submit(self, destination: str = JANE_SMS) -> int:
        """One submit_sm to `destination` (international digits); its status."""
        sequence = next(_SEQUENCE)
        self.send(
            SubmitSm(
                sequence_number=sequence, source_addr_ton=0, source_addr=NUMBER,
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=destination,
                short_message=b"hostile",
            )
        )  # fmt: skip
        while True:
            answer = self.read()
            if answer is None:
                return -1
            if isinstance(answer, EnquireLink):
                self.send(EnquireLinkResp(sequence_number=answer.sequence_number))
                continue
            if answer.sequence_number == sequence:
                return int(answer.command_status)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def timed_bind(port: int, password: str, source: str, timeout: float = 60) -> tuple[int, float]:
    """One bind_transceiver on a fresh connection from `source`: its status (-1: closed
    without an answer) and the seconds from just before it was sent to its answer."""
    session = SmppSession(port, source, timeout)
    try:
        started = session.send_bind(password)
        answer = session.read()
        status = -1 if answer is None else int(answer.command_status)
        return status, time.monotonic() - started
    finally:
        session.close()


def smpp_serves(port: int) -> bool:
    """True when a bind and a submit_sm to the consented JANE_SMS both get ESME_ROK now."""
    with contextlib.suppress(OSError):
        session = SmppSession(port, timeout=5)
        try:
            return session.bind() == 0 and session.submit() == 0
        finally:
            session.close()
    return False


# ---- policy ----------------------------------------------------------------------------------

POLICY_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username="
    + SMTP_USER.encode()
    + b"\nrecipient="
    + JANE.encode()
    + b"\n\n"
)
"""A Postfix policy request for the consented JANE: answered `action=DUNNO`."""


def policy_ask(sock: socket.socket) -> bytes:
    """Send POLICY_REQUEST on an open connection; the reply (b"" when it closed)."""
    sock.sendall(POLICY_REQUEST)
    data = b""
    while not data.endswith(b"\n\n"):
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        if not chunk:
            return b""
        data += chunk
    return data


def policy_serves(port: int) -> bool:
    """True when a policy request for JANE gets `action=DUNNO` now."""
    with contextlib.suppress(OSError), connect(port, timeout=5) as sock:
        return policy_ask(sock) == b"action=DUNNO\n\n"
    return False


# ---- HTTP ------------------------------------------------------------------------------------


@dataclass
class HttpReply:
    """Status, raw head and body of one HTTP response."""

    status: int
    head: bytes
    body: bytes


def http_request(method: str, path: str, *, keep_alive: bool = False, body: bytes = b"") -> bytes:
    """The bytes of an HTTP/1.1 request."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    if body:
        head += "Content-Type: application/x-www-form-urlencoded\r\n"
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def read_http_reply(sock: socket.socket) -> HttpReply | None:
    """One response: head, then Content-Length bytes (or up to EOF without one); None
    when the connection closes before a whole head."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while length is None or len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            break
        body += chunk
    return HttpReply(status, head, body)


def http_get(
    port: int, path: str, source: str = CLIENT, timeout: float = READ_TIMEOUT
) -> HttpReply:
    """GET `path` on a fresh connection (Connection: close)."""
    with connect(port, source, timeout) as sock:
        sock.sendall(http_request("GET", path))
        reply = read_http_reply(sock)
    if reply is None:
        raise AssertionError(f"GET {path}: connection closed without a response")
    return reply


def healthz_ok(port: int) -> bool:
    """True when GET /healthz from 127.0.0.1 gets 200 now."""
    with contextlib.suppress(OSError, AssertionError):
        return http_get(port, "/healthz", timeout=5).status == 200
    return False


def unsubscribe_token(address: str = JANE, sender: str = "acme") -> str:
    """A valid one-click token for `address` and `sender`, signed with the key filterd
    derives from the test secret (SECRET)."""
    secret = bytes.fromhex(SECRET)
    consumer = ConsumerHasher(secret).consumer_id(normalize(address))
    keys = TokenKeys(derive_key(secret), max_age_s=86400)
    return keys.issue(sender, Channel.EMAIL, consumer, int(time.time()))


# ---- many connections ----------------------------------------------------------------------


def flood(port: int, limit: int, source: str = CLIENT, timeout: float = 5.0) -> list[socket.socket]:
    """Up to `limit` plain TCP connections that send nothing, opened one after another;
    stops at the first connect() that fails or times out (the listen queue stays full:
    a server that only accepts slowly frees it within the SYN retransmissions at 1 and
    3 s, a server out of descriptors does not)."""
    held: list[socket.socket] = []
    for _ in range(limit):
        try:
            held.append(connect(port, source, timeout))
        except OSError:
            break
    return held


def close_all(sockets: Sequence[socket.socket]) -> None:
    """Close every socket."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


@dataclass
class Arrival:
    """What one socket received first, and when (monotonic); data None: nothing came
    and the socket is still open; b"": it was closed."""

    data: bytes | None = None
    at: float | None = None


def first_arrivals(sockets: Sequence[socket.socket], timeout: float) -> list[Arrival]:
    """For each socket, the first bytes it received before `timeout` and their time of
    arrival, all read with one selector (the sockets answer in any order)."""
    found = [Arrival() for _ in sockets]
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(sockets):
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + timeout
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = sockets[key.data]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                found[key.data] = Arrival(data, time.monotonic())
                selector.unregister(sock)
    return found


def poll_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until it holds (bounded); the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started
