"""One client transaction of the SMTP relay and its upstream leg.

A client's transaction is mirrored at the upstream in real time: the first
recipient that may be sent to borrows a pooled connection and sends MAIL FROM
(the client's options, SIZE stripped), every such recipient is sent on as RCPT,
and the transaction ends with DATA's reply, RSET, a new MAIL or EHLO, or the
client going away; the connection then goes back to the pool (RSET first
unless DATA ended it). Nothing here reads the message or decides anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

from filterd.model import Address
from filterd.settings import SmtpAccount
from filterd.smtp.outbound import UpstreamConnection, UpstreamPool, UpstreamReply
from filterd.tokens import Unsubscribe


class EnvelopeView(Protocol):
    """What the relay reads and writes of a transaction's envelope (aiosmtpd's
    Envelope has these; typed here so that only the protocol edge imports aiosmtpd)."""

    mail_from: str | None
    mail_options: list[str]
    rcpt_tos: list[str]
    rcpt_options: list[str]
    original_content: bytes | None


@dataclass
class RelayState:
    """What one client connection has going: its account and open transaction."""

    account: SmtpAccount | None = None
    upstream: UpstreamConnection | None = None
    addresses: list[Address] = field(default_factory=list)
    """The recipients to relay, normalised (unsubscribe recipients are not here)."""
    paths: list[str] = field(default_factory=list)
    """The same recipients as the client wrote them (for replies and the upstream)."""
    optouts: list[Unsubscribe] = field(default_factory=list)
    feedback: bool = False
    """The transaction names smtp.feedback_address: its message must be a report."""
    utf8: bool = False
    transaction: str = ""
    rcpts: int = 0
    """RCPT commands of the open transaction, refused ones included."""
    admitted: tuple[str, Address] | str | None = None
    """The admission verdict of the RCPT being handled (see envelope.admit_path)."""


class Transactions:
    """The upstream side of the client transactions of one listener: open, add a
    recipient, end, abandon; and a signal each time one ends (for draining)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self._cleanups: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()

    async def rcpt(self, relay: RelayState, envelope: EnvelopeView, address: str) -> UpstreamReply:
        """RCPT at the upstream (opening the upstream transaction first if none is)."""
        if relay.upstream is None:
            opened = await self._open(relay, envelope)
            if opened is not None:
                return opened
        assert relay.upstream is not None  # noqa: S101 - set by _open
        return await relay.upstream.rcpt(address, relay.utf8)

    async def _open(self, relay: RelayState, envelope: EnvelopeView) -> UpstreamReply | None:
        """Borrow a connection and send MAIL FROM; the failing reply, or None."""
        options = [o for o in envelope.mail_options if not o.upper().startswith("SIZE=")]
        for _attempt in (1, 2):  # a pooled connection may have gone stale: one retry
            connection = await self.pool.acquire()
            if isinstance(connection, UpstreamReply):
                return connection
            sender = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
            try:
                reply = await connection.mail(sender, options, relay.utf8)
            except BaseException:
                connection.close()  # cancelled mid-command: its state is unknown
                raise
            if reply.ok:
                relay.upstream = connection
                return None
            stale = connection.broken
            connection.close()  # a refused MAIL may leave a transaction open: never reuse
            await self.pool.release(connection)
            if not stale:
                return reply
        return reply

    async def end(self, relay: RelayState, *, reset: bool = True) -> None:
        """Give the upstream connection back (RSET first unless DATA just ended it)."""
        connection = relay.upstream
        relay.addresses = []
        relay.paths = []
        relay.optouts = []
        relay.feedback = False
        relay.rcpts = 0
        if connection is None:
            self._ended.set()
            return
        try:
            if reset and not connection.broken:
                reply = await connection.rset()
                if not reply.ok:
                    connection.close()
        except BaseException:
            relay.upstream = None
            connection.close()  # cancelled mid-RSET: never reuse it
            raise
        relay.upstream = None
        await self.pool.release(connection)
        self._ended.set()

    def abandon(self, relay: RelayState) -> None:
        """The client went away, perhaps mid-command: close its upstream connection
        (its state is unknown, so it is not reused) and end the transaction."""
        if relay.upstream is None:
            return
        relay.upstream.close()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to clean
            task = asyncio.get_running_loop().create_task(self.end(relay))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def ended(self) -> None:
        """Return once a transaction ends from now on."""
        self._ended.clear()
        await self._ended.wait()
