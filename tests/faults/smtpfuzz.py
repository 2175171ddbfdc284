"""Random and hostile SMTP command lines for a real filterd SMTP listener, and a session
driver that checks every reply (shared by tests/faults/test_smtp_fuzz.py and
bench/fuzz.py).

A reply is well formed when every line is `NNN-text` / `NNN text` + CRLF with one code
(2xx-5xx) and the last line uses a space. An exception escaping filterd's handler shows
as aiosmtpd's fallback `500 Error: (ExceptionName) ...`, which counts as a crash."""

from __future__ import annotations

import base64
import re
import socket
from collections import Counter
from dataclasses import dataclass

from hypothesis import strategies as st

REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([^\r\n]*)\r\n")
HANDLER_CRASH = re.compile(rb"500 Error: \(")
KNOWN_CRASHES: dict[str, re.Pattern[bytes]] = {
    # Replies of filterd bugs already reported, counted apart instead of failing a run.
    # Empty: the four this fuzzer found (null reverse-path and a MAIL FROM that aiosmtplib
    # refuses -> ValueError; non-UTF-8 addresses -> UnicodeEncodeError; a no-break-space
    # domain -> aiosmtpd's parser IndexError) are fixed and have regression tests in
    # test_smtp_fuzz.py.
}
GOODBYE = re.compile(rb"goodbye", re.IGNORECASE)
MAX_REPLY_LINE = 4096

VERBS = [
    b"EHLO", b"HELO", b"LHLO", b"MAIL FROM:", b"RCPT TO:", b"mail from:", b"rcpt to:",
    b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"NOOP", b"VRFY", b"EXPN", b"HELP",
    b"AUTH", b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"STARTTLS", b"ETRN",
    b"XCLIENT", b"QUIT", b"TURN",
]  # fmt: skip
ARGUMENTS = [
    b"<jane@example.com>", b"<bob@example.com>", b"<>", b"<+8613800138000>",
    b"<13800138000@sms>", b"<@relay.test,@b.test:x@y.test>", b"<a@b.test> SIZE=99999999999",
    b"<a@b.test> SIZE=-1", b"<a@b.test> BODY=8BITMIME SMTPUTF8", b"<a@b.test> BODY=BINARYMIME",
    "<用户@例子.中国> SMTPUTF8".encode(), b"<a@[127.0.0.1]>", b"<a@[IPv6:::1]>",
    b'<"quoted local"@example.com>', b"<x@y> NOTIFY=SUCCESS ORCPT=rfc822;x@y",
    b"<a@b.test> AUTH=<>", b"<jane@example.com> XYZ=1", b"jane@example.com",
    b"<jane@example.com", b"<<jane@example.com>>", b"<jane@example.com>\x00",
    base64.b64encode(b"\0newsletter\0pw-news"), base64.b64encode(b"\0newsletter\0wrong"),
    b"=", b"*", b"%s%n%x", b"\xff\xfe", b"\xc3\x28", b"..", b"-", b"A" * 1000,
]  # fmt: skip


def _no_line_ends(data: bytes) -> bytes:
    return data.replace(b"\r", b"").replace(b"\n", b"")


ARGUMENT = st.one_of(
    st.just(b""),
    st.sampled_from(ARGUMENTS),
    st.binary(max_size=80).map(_no_line_ends),
    st.text(max_size=60).map(lambda t: _no_line_ends(t.encode("utf-8", "surrogatepass"))),
    st.integers(min_value=990, max_value=1100).map(lambda n: b"x" * n),
)
ADDRESS = st.one_of(
    st.sampled_from(ARGUMENTS[:21]),
    st.text(max_size=40).map(lambda t: b"<" + _no_line_ends(t.encode("utf-8", "surrogatepass"))
                             + b"@example.com>"),
    st.from_regex(rb"\A<\+?[0-9 ()-]{0,18}>\Z"),
)  # fmt: skip
COMMAND = st.one_of(
    st.builds(lambda address: b"RCPT TO:" + address, ADDRESS),
    st.sampled_from([b"DATA", b"RSET", b"NOOP", b"RCPT TO:<jane@example.com>"]),
    st.builds(
        lambda verb, space, argument: verb + space + argument,
        st.sampled_from(VERBS),
        st.sampled_from([b" ", b"", b"  ", b"\t"]),
        ARGUMENT,
    ),
    st.binary(max_size=120).map(_no_line_ends),
)
DATA_LINE = st.one_of(
    st.sampled_from([b"", b"Subject: x", b"From: a@b", b".", b"..", b". x", b"\x00"]),
    st.binary(max_size=200).map(_no_line_ends),
)


@dataclass(frozen=True)
class Script:
    """One fuzz session: optionally log in first, then send `commands`; after any 354 the
    `data` lines (dot-stuffed) and the end-of-data dot go out."""

    authenticate: bool
    transaction: bool
    """MAIL FROM before the commands (after the login, if any), a permitted RCPT and DATA
    after them."""
    commands: tuple[bytes, ...]
    data: tuple[bytes, ...]


SCRIPTS = st.builds(
    Script,
    st.booleans(),
    st.booleans(),
    st.lists(COMMAND, min_size=1, max_size=8).map(tuple),
    st.lists(DATA_LINE, max_size=6).map(tuple),
)


class BadReply(AssertionError):
    """filterd answered with a malformed reply, a handler crash, or not at all."""


class Session:
    """One SMTP connection that reads and checks whole replies."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.codes: Counter[int] = Counter()
        self.known_crashes: Counter[str] = Counter()
        self.closing = False
        """The last reply ends the session (221, 421, or aiosmtpd's 502 `... goodbye.`)."""
        self.last_sent = b"<connect>"

    def close(self) -> None:
        """Close the connection."""
        self.file.close()
        self.sock.close()

    def send(self, line: bytes) -> None:
        """Send one line (CRLF added)."""
        self.last_sent = line
        self.sock.sendall(line + b"\r\n")

    def reply(self) -> int | None:
        """Read one whole reply and check it; its code, or None if the server closed."""
        code: bytes | None = None
        while True:
            try:
                line = self.file.readline(MAX_REPLY_LINE)
            except TimeoutError:
                raise BadReply(f"no answer to {self.last_sent[:80]!r}") from None
            except ConnectionResetError:
                line = b""
            if not line:
                if code is not None:
                    raise BadReply(f"reply to {self.last_sent[:80]!r} cut short")
                return None
            match = REPLY_LINE.fullmatch(line)
            if match is None:
                raise BadReply(f"malformed reply line {line[:120]!r} to {self.last_sent[:80]!r}")
            known = [name for name, pattern in KNOWN_CRASHES.items() if pattern.match(line)]
            if known:
                self.known_crashes[known[0]] += 1
            elif HANDLER_CRASH.match(line):
                raise BadReply(f"handler crash {line[:200]!r} after {self.last_sent[:120]!r}")
            if code is not None and match.group(1) != code:
                raise BadReply(f"mixed codes in one reply: {line[:120]!r}")
            code = match.group(1)
            if match.group(2) == b" ":
                self.closing = code in (b"221", b"421") or bool(GOODBYE.search(line))
                self.codes[int(code)] += 1
                return int(code)

    def command(self, line: bytes) -> int | None:
        """Send a line and read its reply."""
        self.send(line)
        return self.reply()


def _follow_up(session: Session, code: int | None, script: Script) -> int | None:
    """After 354 send the data and the dot; answer AUTH challenges (334) with junk."""
    if code == 354:
        for data_line in script.data:
            session.send(b"." + data_line if data_line.startswith(b".") else data_line)
        code = session.command(b".")
    answers = iter(script.data)
    turns = 0
    while code == 334 and turns < 3:
        code = session.command(next(answers, b"*"))
        turns += 1
    return code


def run(port: int, script: Script) -> Session:
    """Play `script` against filterd's SMTP listener; the closed session with its counts
    of reply codes and known crashes. Raises BadReply."""
    session = Session(port)
    try:
        if session.reply() != 220:
            raise BadReply("no 220 greeting")
        if script.authenticate:
            session.command(b"EHLO fuzz.test")
            credentials = base64.b64encode(b"\0newsletter\0pw-news")
            if session.command(b"AUTH PLAIN " + credentials) != 235:
                raise BadReply("valid credentials refused")
        if script.transaction:
            session.command(b"MAIL FROM:<shop@acme.test>")
        tail = (b"RCPT TO:<jane@example.com>", b"DATA") if script.transaction else ()
        for line in (*script.commands, *tail):
            code = _follow_up(session, session.command(line), script)
            if code is None:
                raise BadReply(f"connection closed without a reply to {line[:80]!r}")
            if session.closing:
                return session
        if session.command(b"NOOP") is None:
            raise BadReply("connection closed after NOOP")
        session.command(b"QUIT")
    except OSError as exc:
        raise BadReply(f"{type(exc).__name__} after {session.last_sent[:80]!r}") from exc
    finally:
        session.close()
    return session
