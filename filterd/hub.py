"""The hub that carries deliveries between the processes of `smpp.workers > 1` or
`cmpp.workers > 1`.

Every SMPP (or CMPP) process has its own link to the carrier, so a delivery
receipt (status report) or a consumer's reply (MO) may arrive in a process that
does not hold the client's connection. `filterd serve` (the parent) runs one
`Hub` per relay with workers; each worker gets one end of a unix socket pair to
it and runs a `HubClient`. A worker tells the hub which accounts (SMPP
system_ids, CMPP sp_ids) have connections in it that take deliveries, and hands
the hub what it cannot deliver itself; the hub passes it to its own relay (the
parent serves clients too) or to a worker holding such a connection. Nothing of
it goes through Redis: an MO holds the consumer's raw number (SPEC §5), and it
stays in memory and out of the logs here as well.

What a delivery is, and its bytes, is the relay's `Wire` (`filterd.smpp.hub`
for deliver_sm / data_sm, `filterd.cmpp.hub` for CMPP_DELIVER).

Frames, both directions: a 4-octet big-endian length L of what follows, then
L octets: a type octet and the body.

| type | name      | body                                                        |
|------|-----------|-------------------------------------------------------------|
| 0x01 | RECEIVERS | account names, each one length octet + ASCII (the full set) |
| 0x02 | DELIVER   | one length octet + account name, then one whole delivery    |
|      |           | in the wire's encoding                                      |

RECEIVERS always carries the sender's whole set (sent when it changes), so a
lost or repeated frame cannot leave a stale entry behind. A malformed frame
closes that link (logged); the peer's end then sees the link lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from filterd.errors import FilterdError
from filterd.logs import get_logger

RECEIVERS = 0x01
DELIVER = 0x02
_NAMES_MAX = 64 * 1024
"""Room for a DELIVER's account name and a RECEIVERS set, beyond the delivery itself."""
_LENGTH = struct.Struct(">I")
MAX_BACKLOG = 4 * 1024 * 1024
"""Bytes a link may have waiting to be written (a stuck or stopped peer): past
it, no more deliveries are queued to that peer — they count as undeliverable and
are logged — so the sender's memory stays bounded."""

D = TypeVar("D")
D_contra = TypeVar("D_contra", contravariant=True)


class HubProtocolError(FilterdError):
    """Bytes on a hub link that are not a valid frame."""


class Wire(Protocol[D]):
    """A relay's deliveries on the hub: their bytes, and which are receipts."""

    @property
    def name(self) -> str:
        """The relay ("smpp", "cmpp"): the hub's logs are "<name>.hub"."""
        ...

    @property
    def max_length(self) -> int:
        """The most octets one encoded delivery takes."""
        ...

    def encode(self, delivery: D) -> bytes:
        """A delivery's bytes."""
        ...

    def decode(self, data: bytes) -> D:
        """Bytes back to a delivery; HubProtocolError naming what is wrong."""
        ...

    def is_receipt(self, delivery: D) -> bool:
        """True for a delivery receipt / status report (False: an MO)."""
        ...


def _backlogged(writer: asyncio.StreamWriter) -> bool:
    """True when `writer` has MAX_BACKLOG bytes or more not yet written."""
    return writer.transport.get_write_buffer_size() >= MAX_BACKLOG


@dataclass(frozen=True, slots=True)
class Receivers:
    """The accounts that take deliveries in the sending process."""

    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Delivery(Generic[D]):
    """A delivery (receipt or MO) for a connection of account `name`."""

    name: str
    delivery: D


Frame = Receivers | Delivery[D]


def _name(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"account name of {len(raw)} octets")
    return bytes([len(raw)]) + raw


def encode_receivers(names: Iterable[str]) -> bytes:
    """A RECEIVERS frame for this set of account names."""
    body = bytes([RECEIVERS]) + b"".join(_name(s) for s in sorted(set(names)))
    return _LENGTH.pack(len(body)) + body


def encode_deliver(wire: Wire[D], name: str, delivery: D) -> bytes:
    """A DELIVER frame: `delivery` for a connection of account `name`."""
    body = bytes([DELIVER]) + _name(name) + wire.encode(delivery)
    return _LENGTH.pack(len(body)) + body


def _names(data: bytes) -> tuple[list[str], int]:
    """Length-prefixed ASCII names from the start of `data` (all of it for RECEIVERS)."""
    names, pos = [], 0
    while pos < len(data):
        size = data[pos]
        raw = data[pos + 1 : pos + 1 + size]
        if len(raw) != size or not raw or not raw.isascii() or not raw.decode().isprintable():
            raise HubProtocolError(f"bad account name at octet {pos}")
        names.append(raw.decode("ascii"))
        pos += 1 + size
    return names, pos


def decode_frame(wire: Wire[D], body: bytes) -> Frame[D]:
    """One frame's type octet and body → a Frame; HubProtocolError if malformed."""
    if not body:
        raise HubProtocolError("empty frame")
    kind, rest = body[0], body[1:]
    if kind == RECEIVERS:
        return Receivers(frozenset(_names(rest)[0]))
    if kind != DELIVER:
        raise HubProtocolError(f"unknown frame type {kind:#04x}")
    if not rest:
        raise HubProtocolError("DELIVER without an account name")
    names, end = _names(rest[: 1 + rest[0]])
    return Delivery(names[0], wire.decode(rest[end:]))


class FrameReader(Generic[D]):
    """Sans-IO: bytes in, frames out. Any bytes either parse or raise HubProtocolError."""

    def __init__(self, wire: Wire[D]) -> None:
        self._wire = wire
        self._buffer = bytearray()
        self.max_frame = _NAMES_MAX + wire.max_length
        """Largest frame accepted."""

    def feed(self, data: bytes) -> None:
        """Add bytes read from the link."""
        self._buffer += data

    def next_frame(self) -> Frame[D] | None:
        """The next whole frame, or None until more bytes arrive."""
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if not 0 < length <= self.max_frame:
            raise HubProtocolError(f"frame length {length} is outside 1-{self.max_frame}")
        if len(self._buffer) < _LENGTH.size + length:
            return None
        body = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
        del self._buffer[: _LENGTH.size + length]
        return decode_frame(self._wire, body)


class Peers(Protocol[D_contra]):
    """What a relay asks of the other processes (a Hub or a HubClient)."""

    def forward(self, name: str, delivery: D_contra) -> bool:
        """Hand on a delivery this process has no connection for; False if it cannot."""
        ...

    def receivers(self, names: frozenset[str]) -> None:
        """This process's accounts that take deliveries are now `names`."""
        ...


LocalDelivery = Callable[[str, D], bool]
"""Deliver to a connection of an account in this process; False if there is none."""


class _Links(Generic[D]):
    """What the hub and its clients share: the wire, the log, reading frames."""

    def __init__(self, wire: Wire[D]) -> None:
        self.wire = wire
        self.log = get_logger(f"{wire.name}.hub")

    async def read_frames(
        self, reader: asyncio.StreamReader, handle: Callable[[Frame[D]], None], link: str
    ) -> None:
        """Feed `handle` every frame until EOF; a malformed frame ends the link (logged)."""
        frames = FrameReader(self.wire)
        try:
            while data := await reader.read(65536):
                frames.feed(data)
                while (frame := frames.next_frame()) is not None:
                    handle(frame)
        except HubProtocolError as exc:
            self.log.error("hub_frame_malformed", link=link, reason=str(exc))
        except (ConnectionError, OSError) as exc:
            self.log.warning("hub_link_error", link=link, error=str(exc) or type(exc).__name__)

    def undeliverable(self, name: str, delivery: D) -> None:
        """No connection of `name` in any process: a receipt is logged (as a single
        process does); an MO is not passed on, as to an account with no connection."""
        if self.wire.is_receipt(delivery):
            self.log.warning("receipt_undeliverable", account=name, reason="no connection")
        else:
            self.log.debug("mo_not_forwarded", account=name, reason="no connection")


@dataclass(eq=False)
class _Link:
    name: str
    writer: asyncio.StreamWriter
    receivers: frozenset[str] = frozenset()


class Hub(_Links[D]):
    """The parent's side: one link per worker; routes deliveries between them."""

    def __init__(self, wire: Wire[D]) -> None:
        super().__init__(wire)
        self.local: LocalDelivery[D] | None = None
        """The parent's own relay (set once it runs)."""
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, sock: socket.socket, name: str) -> None:
        """Serve a new worker's end of a socket pair (the hub takes ownership of `sock`)."""
        task = asyncio.get_running_loop().create_task(self._serve(sock, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, name: str) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError as exc:
            sock.close()
            self.log.error("hub_link_error", link=name, error=str(exc))
            return
        link = _Link(name, writer)
        self._links.append(link)
        try:
            await self.read_frames(reader, lambda frame: self._handle(link, frame), name)
        finally:
            self._links.remove(link)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _handle(self, link: _Link, frame: Frame[D]) -> None:
        if isinstance(frame, Receivers):
            link.receivers = frame.names
            return
        delivered = False
        try:
            delivered = self.local is not None and self.local(frame.name, frame.delivery)
        except Exception:  # the parent's own sessions must not end the hub
            self.log.exception("hub_local_delivery_failed", account=frame.name)
        if not delivered and not self._route(frame.name, frame.delivery, origin=link):
            self.undeliverable(frame.name, frame.delivery)

    def _route(self, name: str, delivery: D, origin: _Link | None) -> bool:
        """Send to the first live worker (not `origin`, not backlogged) with a connection
        of account `name`."""
        for link in self._links:
            live = link is not origin and not link.writer.is_closing()
            if live and name in link.receivers:
                if _backlogged(link.writer):
                    self.log.warning("hub_backlog_full", link=link.name, account=name)
                    continue
                link.writer.write(encode_deliver(self.wire, name, delivery))
                return True
        return False

    def forward(self, name: str, delivery: D) -> bool:
        """The parent's relay has no connection for it: a worker's, if any."""
        return self._route(name, delivery, origin=None)

    def receivers(self, names: frozenset[str]) -> None:
        """The parent's own connections: the hub asks its relay directly, nothing to record."""

    def holders(self) -> dict[str, frozenset[str]]:
        """Each link's receiver set (for logs and tests)."""
        return {link.name: link.receivers for link in self._links}

    async def close(self) -> None:
        """Close every link."""
        for link in self._links:
            link.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class HubClient(_Links[D]):
    """A worker's side: its one link to the parent's hub."""

    def __init__(
        self,
        wire: Wire[D],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        local: LocalDelivery[D],
    ) -> None:
        super().__init__(wire)
        self._reader = reader
        self._writer = writer
        self._local = local

    @classmethod
    async def open(cls, wire: Wire[D], fd: int, local: LocalDelivery[D]) -> HubClient[D]:
        """The link on inherited file descriptor `fd` (the worker's end of the pair)."""
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(wire, reader, writer, local)

    async def run(self) -> None:
        """Deliver what the hub sends until the link ends (EOF or a malformed frame)."""
        await self.read_frames(self._reader, self._handle, "parent")
        self._writer.close()

    def _handle(self, frame: Frame[D]) -> None:
        if not isinstance(frame, Delivery):
            return  # the hub sends no RECEIVERS; ignore one
        try:
            delivered = self._local(frame.name, frame.delivery)
        except Exception:  # a session's failure must not end the link
            self.log.exception("hub_local_delivery_failed", account=frame.name)
            delivered = False
        if not delivered:
            self.undeliverable(frame.name, frame.delivery)  # the connection went away meanwhile

    @property
    def up(self) -> bool:
        """True while the link is open."""
        return not self._writer.is_closing()

    def forward(self, name: str, delivery: D) -> bool:
        """Hand a delivery to the hub; False if the link is down or backlogged."""
        if not self.up:
            return False
        if _backlogged(self._writer):
            self.log.warning("hub_backlog_full", link="parent", account=name)
            return False
        self._writer.write(encode_deliver(self.wire, name, delivery))
        return True

    def receivers(self, names: frozenset[str]) -> None:
        """Tell the hub this worker's accounts that take deliveries (the full set)."""
        if self.up:
            self._writer.write(encode_receivers(names))

    async def close(self) -> None:
        """Close the link."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
