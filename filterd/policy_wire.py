"""Postfix's policy delegation protocol on the wire, sans-IO (pure): bytes ⇄ requests.

Postfix's SMTP server sends one request per access check over a persistent
connection: attribute lines `name=value\\n`, ended by an empty line. The
answer is one line `action=...` and an empty line
(http://www.postfix.org/SMTPD_POLICY_README.html).

`PolicyParser` turns bytes into requests (`dict[str, str]`) and raises
`PolicyProtocolError` for anything else; `serialize_reply` turns an action into
bytes. Rules chosen here, beyond Postfix's own documentation:

- A line is at most `MAX_LINE` bytes (newline excluded), a request at most
  `MAX_ATTRIBUTES` attribute lines. A line without `=`, or with an empty
  name, is an error. A trailing `\\r` before the newline is tolerated (a
  person testing with telnet); `=` inside a value is kept (`ccert_subject=CN=x`);
  a repeated name keeps its last value.
- Bytes are decoded as UTF-8 with `errors="surrogateescape"`: any byte
  sequence parses (Postfix passes SMTPUTF8 addresses through as UTF-8, and
  may pass other bytes from the client unchanged).
- An empty line with no attributes before it is an (empty) request.

Input as Postfix writes it (whole requests, LF line ends, within the limits) is
split into requests and attributes by string methods, a few C calls per request;
anything else (a request cut between reads, a CR, an empty request, a broken
rule) goes line by line, which is also what names the broken rule. Both give the
same requests for the same bytes.
"""

from __future__ import annotations

import functools
import re
from itertools import repeat

from filterd.errors import FilterdError

MAX_LINE = 2048
"""Longest attribute line accepted, in bytes, without its newline."""
MAX_ATTRIBUTES = 100
"""Most attribute lines in one request (Postfix 3.7 sends about 40)."""


class PolicyProtocolError(FilterdError):
    """Input that is not the Postfix policy protocol; the connection is closed.

    The message names the rule that was broken, never the offending bytes
    (they may hold an address).
    """


@functools.cache
def _overlong(max_line: int) -> re.Pattern[bytes]:
    """A line of more than `max_line` bytes."""
    return re.compile(rb"^[^\n]{%d}" % (max_line + 1), re.MULTILINE)


class PolicyParser:
    """Incremental parser: `feed(bytes)` returns the requests completed by those bytes.

    Any input either parses or raises PolicyProtocolError; after an error the
    parser stays failed (every further `feed` raises).
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_attributes: int = MAX_ATTRIBUTES) -> None:
        self._max_line = max_line
        self._max_attributes = max_attributes
        self._overlong = _overlong(max_line)
        self._buffer = b""
        self._attributes: dict[str, str] = {}
        self._lines = 0
        self._error: str | None = None

    @property
    def pending(self) -> bool:
        """True when part of a request has been received but not its end."""
        return bool(self._buffer) or self._lines > 0

    @property
    def error(self) -> str | None:
        """Why the input is not the protocol, once it has failed; else None."""
        return self._error

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Take more bytes; return every request they complete, in order.

        Raises PolicyProtocolError when the bytes break the protocol before
        completing any request. When requests were completed before the
        offending line, they are returned first, and `error` is set: answer
        them, then close (every further `feed` raises).
        """
        if self._error is not None:
            raise PolicyProtocolError(self._error)
        buffer = self._buffer + data if self._buffer else bytes(data)
        if not self._lines:
            whole = self._whole_requests(buffer)
            if whole is not None:
                self._buffer = b""
                return whole
        requests: list[dict[str, str]] = []
        try:
            self._buffer = self._parse(buffer, requests)
        except PolicyProtocolError as exc:
            self._error = str(exc)
            self._buffer = b""
            self._attributes = {}
            self._lines = 0
            if not requests:
                raise
        return requests

    def _whole_requests(self, buffer: bytes) -> list[dict[str, str]] | None:
        """The requests in `buffer` when it holds whole requests as Postfix writes them
        (attribute lines ended by LF, each request by an empty line), every line within
        the rules; else None (the line-by-line parse then decides)."""
        if not self._plain(buffer):
            return None
        requests = []
        limit = self._max_attributes
        for block in buffer[:-2].decode("utf-8", "surrogateescape").split("\n\n"):
            lines = block.split("\n")
            try:  # a line without "=" splits into one part, which dict() refuses
                attributes = dict(map(str.split, lines, repeat("="), repeat(1)))
            except ValueError:
                return None
            if "" in attributes or len(lines) > limit:  # "" : a line that starts with "="
                return None
            requests.append(attributes)
        return requests

    def _plain(self, buffer: bytes) -> bool:
        """Whether `buffer` is whole requests with LF line ends, no empty request and no
        line over the limit (what `_whole_requests` takes)."""
        if not buffer.endswith(b"\n\n") or buffer.startswith(b"\n"):
            return False
        if b"\r" in buffer or b"\n\n\n" in buffer:  # a CR, an empty request
            return False
        return len(buffer) <= self._max_line or self._overlong.search(buffer) is None

    def _parse(self, buffer: bytes, requests: list[dict[str, str]]) -> bytes:
        """Complete requests into `requests`; return the unfinished rest.

        The complete lines are split and decoded in one go (newline and `=` are
        ASCII, so they never fall inside a UTF-8 or surrogate-escaped character).
        """
        end = buffer.rfind(b"\n")
        rest = buffer[end + 1 :]
        # One byte of slack: the unfinished line may yet end in "\r\n".
        rest_too_long = len(rest) > self._max_line + 1
        if end >= 0:
            complete = buffer[:end]
            lines = complete.decode("utf-8", "surrogateescape").split("\n")
            overlong = self._first_overlong(complete)
            self._lines_of(lines if overlong < 0 else lines[:overlong], requests)
            if overlong >= 0:
                rest_too_long = True
        if rest_too_long:
            raise PolicyProtocolError(f"a line longer than {self._max_line} bytes")
        return rest

    def _first_overlong(self, complete: bytes) -> int:
        """Index of the first line over the limit (a final CR not counted), or -1."""
        raw = complete.split(b"\n")
        if max(map(len, raw)) <= self._max_line:
            return -1
        for index, line in enumerate(raw):
            if len(line) - line.endswith(b"\r") > self._max_line:
                return index
        return -1

    def _lines_of(self, lines: list[str], requests: list[dict[str, str]]) -> None:
        """Apply complete lines (decoded, without newline) in order."""
        attributes, count, limit = self._attributes, self._lines, self._max_attributes
        try:
            for line in lines:
                if line.endswith("\r"):
                    line = line[:-1]  # noqa: PLW2901 - the line without its CR
                if not line:
                    requests.append(attributes)
                    attributes, count = {}, 0
                    continue
                name, sep, value = line.partition("=")
                if not sep:
                    raise PolicyProtocolError("a line without '='")
                if not name:
                    raise PolicyProtocolError("an attribute without a name")
                count += 1
                if count > limit:
                    raise PolicyProtocolError(f"more than {limit} attributes in one request")
                attributes[name] = value
        finally:
            self._attributes, self._lines = attributes, count


_UNSAFE = dict.fromkeys((*range(32), 127), "?")


def serialize_reply(action: str) -> bytes:
    """`action=<action>\\n\\n`; control characters in `action` become `?`."""
    line = action.translate(_UNSAFE)
    return f"action={line}\n\n".encode("utf-8", "surrogateescape")
