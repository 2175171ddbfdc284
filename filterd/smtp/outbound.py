"""The upstream leg: a small pool of reusable aiosmtplib connections to the
carrier / smarthost (the only module that imports aiosmtplib).

aiosmtplib runs one transaction per connection at a time, so each inbound
transaction borrows a connection for its lifetime (MAIL … DATA or RSET) and
gives it back. Connections are retired after `max_uses` transactions or
`max_age` seconds, and on any error. Every upstream failure is turned into an
`UpstreamReply` carrying the SMTP code and text to pass back to the client.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import aiosmtplib

from filterd.logs import get_logger

log = get_logger("smtp.upstream")

UNREACHABLE = (451, "4.4.1 upstream mail server unavailable, try again later")
LOST = (451, "4.4.2 connection to the upstream mail server lost, try again later")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """An SMTP reply from (or about) the upstream."""

    code: int
    message: str

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.code < 300

    def line(self) -> str:
        """The reply as one line for the client."""
        return f"{self.code} {self.message}".replace("\r", " ").replace("\n", " ")


class UpstreamConnection:
    """One pooled connection (one transaction at a time)."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.created = time.monotonic()
        self.uses = 0
        self.broken = False

    async def mail(self, sender: str, options: Sequence[str], utf8: bool) -> UpstreamReply:
        """MAIL FROM with the client's options (SIZE stripped by the caller)."""
        encoding = "utf-8" if utf8 else "ascii"
        return await self._call(self.client.mail(sender, options=list(options), encoding=encoding))

    async def rcpt(self, recipient: str, utf8: bool) -> UpstreamReply:
        """RCPT TO; the upstream's refusal comes back as its reply."""
        if _PLAIN_ADDRESS.fullmatch(recipient):
            return await self._call(self._rcpt_plain(recipient))
        return await self._call(self.client.rcpt(recipient, encoding="utf-8" if utf8 else "ascii"))

    async def _rcpt_plain(self, recipient: str) -> aiosmtplib.SMTPResponse:
        """`RCPT TO:<recipient>`, the bytes aiosmtplib's rcpt() sends for a plain
        address, without its address parsing (the email package's parseaddr: ~20 µs
        per recipient on the bench VM); a refusal raised as rcpt() raises it."""
        command = b"TO:<" + recipient.encode("ascii") + b">"
        response = await self.client.execute_command(b"RCPT", command)
        if response.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
        return response

    async def data(self, content: bytes) -> UpstreamReply:
        """DATA with the message as received."""
        return await self._call(self.client.data(content))

    async def rset(self) -> UpstreamReply:
        """RSET, to end a transaction and keep the connection."""
        return await self._call(self.client.rset())

    async def _call(self, operation: Awaitable[aiosmtplib.SMTPResponse]) -> UpstreamReply:
        try:
            response = await operation
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code in (421, -1):
                self.broken = True
            return UpstreamReply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.broken = True
            log.warning("upstream_error", error=str(exc) or type(exc).__name__)
            return UpstreamReply(*LOST)
        except (ValueError, UnicodeError):
            # an address the client library will not write (checked before sending):
            # nothing went out, the connection stays usable
            return UpstreamReply(553, "5.1.3 address not accepted for relaying")
        return UpstreamReply(int(response.code), str(response.message))

    def close(self) -> None:
        """Drop the connection without QUIT."""
        self.broken = True
        self.client.close()


_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
"""An ASCII `local@host.domain` that aiosmtplib's quote_address sends as `<address>`
(a property test checks it)."""


class UpstreamPool:
    """Reusable connections to one upstream."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: str = "none",
        local_hostname: str = "filterd",
        timeout: float = 60.0,
        max_idle: int = 16,
        max_uses: int = 100,
        max_age: float = 300.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_uses = max_uses
        self.max_age = max_age
        self.tls_context = tls_context
        self._idle: list[UpstreamConnection] = []

    async def acquire(self) -> UpstreamConnection | UpstreamReply:
        """An idle healthy connection, or a new one; an UpstreamReply if none can be had."""
        while self._idle:
            connection = self._idle.pop()
            if connection.client.is_connected and not self._expired(connection):
                connection.uses += 1
                return connection
            await self._quit(connection)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.tls == "tls",
            start_tls=True if self.tls == "starttls" else False,  # noqa: SIM210
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            tls_context=self.tls_context,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            return UpstreamReply(exc.code if exc.code >= 400 else 451, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            log.warning("upstream_unreachable", error=str(exc) or type(exc).__name__)
            return UpstreamReply(*UNREACHABLE)
        connection = UpstreamConnection(client)
        connection.uses = 1
        return connection

    async def release(self, connection: UpstreamConnection) -> None:
        """Give a connection back (after DATA or RSET), or close it if it is spent."""
        if (
            connection.broken
            or not connection.client.is_connected
            or self._expired(connection)
            or len(self._idle) >= self.max_idle
        ):
            await self._quit(connection)
            return
        self._idle.append(connection)

    async def close(self) -> None:
        """QUIT every idle connection."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._quit(connection)

    def _expired(self, connection: UpstreamConnection) -> bool:
        age = time.monotonic() - connection.created
        return connection.uses >= self.max_uses or age >= self.max_age

    async def _quit(self, connection: UpstreamConnection) -> None:
        if connection.broken or not connection.client.is_connected:
            connection.client.close()
            return
        try:
            await connection.client.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            connection.client.close()
