"""The hub that carries deliveries between the SMPP processes of `smpp.workers > 1`.

Every SMPP process has its own carrier bind, so a delivery receipt or a
consumer's reply (MO) may arrive in a process that does not hold the client's
receiver bind. `filterd serve` (the parent) runs a `Hub`; each SMPP worker
gets one end of a unix socket pair to it and runs a `HubClient`. A worker
tells the hub which system_ids have receiver-capable binds in it, and hands
the hub what it cannot deliver itself; the hub passes it to its own relay
(the parent serves clients too) or to a worker holding such a bind. Nothing
of it goes through Redis: an MO holds the consumer's raw number (SPEC §5),
and it stays in memory and out of the logs here as well.

Frames, both directions: a 4-octet big-endian length L of what follows, then
L octets: a type octet and the body.

| type | name      | body                                                        |
|------|-----------|-------------------------------------------------------------|
| 0x01 | RECEIVERS | system_ids, each one length octet + ASCII (the full set)    |
| 0x02 | DELIVER   | one length octet + system_id, then one whole deliver_sm or  |
|      |           | data_sm PDU (header included)                               |

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
from typing import Protocol

from filterd.errors import FilterdError
from filterd.logs import get_logger
from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.framer import MAX_PDU_LENGTH
from filterd.smpp.pdu import DataSm, DeliverSm
from filterd.smpp.receipt import is_receipt

log = get_logger("smpp.hub")

RECEIVERS = 0x01
DELIVER = 0x02
MAX_FRAME = 64 * 1024 + MAX_PDU_LENGTH
"""Largest frame accepted (a DELIVER is at most 1 + 256 + one PDU)."""
_LENGTH = struct.Struct(">I")
MAX_BACKLOG = 4 * 1024 * 1024
"""Bytes a link may have waiting to be written (a stuck or stopped peer): past
it, no more deliveries are queued to that peer — they count as undeliverable and
are logged — so the sender's memory stays bounded."""


def _backlogged(writer: asyncio.StreamWriter) -> bool:
    """True when `writer` has MAX_BACKLOG bytes or more not yet written."""
    return writer.transport.get_write_buffer_size() >= MAX_BACKLOG


class HubProtocolError(FilterdError):
    """Bytes on a hub link that are not a valid frame."""


@dataclass(frozen=True, slots=True)
class Receivers:
    """The system_ids that have a receiver-capable bind in the sending process."""

    system_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Deliver:
    """A deliver_sm (receipt or MO) for a receiver bind of `system_id`."""

    system_id: str
    pdu: DeliverSm | DataSm


Frame = Receivers | Deliver


def _name(system_id: str) -> bytes:
    raw = system_id.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"system_id of {len(raw)} octets")
    return bytes([len(raw)]) + raw


def encode_receivers(system_ids: Iterable[str]) -> bytes:
    """A RECEIVERS frame for this set of system_ids."""
    body = bytes([RECEIVERS]) + b"".join(_name(s) for s in sorted(set(system_ids)))
    return _LENGTH.pack(len(body)) + body


def encode_deliver(system_id: str, pdu: DeliverSm | DataSm) -> bytes:
    """A DELIVER frame: `pdu` for a receiver bind of `system_id`."""
    body = bytes([DELIVER]) + _name(system_id) + encode(pdu)
    return _LENGTH.pack(len(body)) + body


def _names(data: bytes) -> tuple[list[str], int]:
    """Length-prefixed ASCII names from the start of `data` (all of it for RECEIVERS)."""
    names, pos = [], 0
    while pos < len(data):
        size = data[pos]
        raw = data[pos + 1 : pos + 1 + size]
        if len(raw) != size or not raw or not raw.isascii() or not raw.decode().isprintable():
            raise HubProtocolError(f"bad system_id at octet {pos}")
        names.append(raw.decode("ascii"))
        pos += 1 + size
    return names, pos


def decode_frame(body: bytes) -> Frame:
    """One frame's type octet and body → a Frame; HubProtocolError if malformed."""
    if not body:
        raise HubProtocolError("empty frame")
    kind, rest = body[0], body[1:]
    if kind == RECEIVERS:
        return Receivers(frozenset(_names(rest)[0]))
    if kind != DELIVER:
        raise HubProtocolError(f"unknown frame type {kind:#04x}")
    if not rest:
        raise HubProtocolError("DELIVER without a system_id")
    names, end = _names(rest[: 1 + rest[0]])
    try:
        pdu = decode(rest[end:])
    except SmppProtocolError as exc:
        raise HubProtocolError(f"DELIVER with a bad PDU: {exc.reason}") from None
    if not isinstance(pdu, DeliverSm | DataSm):
        raise HubProtocolError(f"DELIVER with a {type(pdu).__name__}")
    return Deliver(names[0], pdu)


class FrameReader:
    """Sans-IO: bytes in, frames out. Any bytes either parse or raise HubProtocolError."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the link."""
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive."""
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if not 0 < length <= MAX_FRAME:
            raise HubProtocolError(f"frame length {length} is outside 1-{MAX_FRAME}")
        if len(self._buffer) < _LENGTH.size + length:
            return None
        body = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
        del self._buffer[: _LENGTH.size + length]
        return decode_frame(body)


class Peers(Protocol):
    """What an SMPP relay asks of the other processes (a Hub or a HubClient)."""

    def forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Hand on a delivery this process has no receiver bind for; False if it cannot."""
        ...

    def receivers(self, system_ids: frozenset[str]) -> None:
        """This process's receiver-capable binds are now `system_ids`."""
        ...


LocalDelivery = Callable[[str, DeliverSm | DataSm], bool]
"""Deliver to a receiver bind of a system_id in this process; False if there is none."""


async def _read_frames(
    reader: asyncio.StreamReader, handle: Callable[[Frame], None], link: str
) -> None:
    """Feed `handle` every frame until EOF; a malformed frame ends the link (logged)."""
    frames = FrameReader()
    try:
        while data := await reader.read(65536):
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                handle(frame)
    except HubProtocolError as exc:
        log.error("hub_frame_malformed", link=link, reason=str(exc))
    except (ConnectionError, OSError) as exc:
        log.warning("hub_link_error", link=link, error=str(exc) or type(exc).__name__)


def _undeliverable(system_id: str, pdu: DeliverSm | DataSm) -> None:
    """No receiver bind of `system_id` in any process: a receipt is logged (as a single
    process does); an MO is not passed on, as to an account with no receiver bind."""
    if is_receipt(pdu):
        log.warning("receipt_undeliverable", system_id=system_id, reason="no receiver bind")
    else:
        log.debug("mo_not_forwarded", system_id=system_id, reason="no receiver bind")


@dataclass(eq=False)
class _Link:
    name: str
    writer: asyncio.StreamWriter
    receivers: frozenset[str] = frozenset()


class Hub:
    """The parent's side: one link per SMPP worker; routes deliveries between them."""

    def __init__(self) -> None:
        self.local: LocalDelivery | None = None
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
            log.error("hub_link_error", link=name, error=str(exc))
            return
        link = _Link(name, writer)
        self._links.append(link)
        try:
            await _read_frames(reader, lambda frame: self._handle(link, frame), name)
        finally:
            self._links.remove(link)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _handle(self, link: _Link, frame: Frame) -> None:
        if isinstance(frame, Receivers):
            link.receivers = frame.system_ids
            return
        delivered = False
        try:
            delivered = self.local is not None and self.local(frame.system_id, frame.pdu)
        except Exception:  # the parent's own sessions must not end the hub
            log.exception("hub_local_delivery_failed", system_id=frame.system_id)
        if not delivered and not self._route(frame.system_id, frame.pdu, origin=link):
            _undeliverable(frame.system_id, frame.pdu)

    def _route(self, system_id: str, pdu: DeliverSm | DataSm, origin: _Link | None) -> bool:
        """Send to the first live worker (not `origin`, not backlogged) with a receiver
        bind of `system_id`."""
        for link in self._links:
            live = link is not origin and not link.writer.is_closing()
            if live and system_id in link.receivers:
                if _backlogged(link.writer):
                    log.warning("hub_backlog_full", link=link.name, system_id=system_id)
                    continue
                link.writer.write(encode_deliver(system_id, pdu))
                return True
        return False

    def forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """The parent's relay has no receiver bind for it: a worker's, if any."""
        return self._route(system_id, pdu, origin=None)

    def receivers(self, system_ids: frozenset[str]) -> None:
        """The parent's own binds: the hub asks its relay directly, nothing to record."""

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


class HubClient:
    """A worker's side: its one link to the parent's hub."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: LocalDelivery
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._local = local

    @classmethod
    async def open(cls, fd: int, local: LocalDelivery) -> HubClient:
        """The link on inherited file descriptor `fd` (the worker's end of the pair)."""
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer, local)

    async def run(self) -> None:
        """Deliver what the hub sends until the link ends (EOF or a malformed frame)."""
        await _read_frames(self._reader, self._handle, "parent")
        self._writer.close()

    def _handle(self, frame: Frame) -> None:
        if not isinstance(frame, Deliver):
            return  # the hub sends no RECEIVERS; ignore one
        try:
            delivered = self._local(frame.system_id, frame.pdu)
        except Exception:  # a session's failure must not end the link
            log.exception("hub_local_delivery_failed", system_id=frame.system_id)
            delivered = False
        if not delivered:
            _undeliverable(frame.system_id, frame.pdu)  # the bind went away meanwhile

    @property
    def up(self) -> bool:
        """True while the link is open."""
        return not self._writer.is_closing()

    def forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Hand a delivery to the hub; False if the link is down or backlogged."""
        if not self.up:
            return False
        if _backlogged(self._writer):
            log.warning("hub_backlog_full", link="parent", system_id=system_id)
            return False
        self._writer.write(encode_deliver(system_id, pdu))
        return True

    def receivers(self, system_ids: frozenset[str]) -> None:
        """Tell the hub this worker's receiver-capable binds (the full set)."""
        if self.up:
            self._writer.write(encode_receivers(system_ids))

    async def close(self) -> None:
        """Close the link."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
