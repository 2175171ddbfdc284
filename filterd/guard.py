"""What every listener keeps against hostile peers (SPEC §11): the login gate,
connection caps and idle deadlines.

- `LoginGate` (one per process, shared by SMTP AUTH, SMPP binds and every later
  login): after a failed login from a client address, *every* next attempt from
  that address waits out the back-off before it is checked and answered, right
  password or wrong, serial or concurrent. Attempts from one address take turns
  (a lock per address), so parallel guesses cost as much as serial ones, and an
  attempt is judged only after its wait: a client that gives up early learns
  nothing, and a right password is never answered sooner than a wrong one.
  An attempt that waited is logged once its wait is over (`login_delayed`); those
  whose client left first are counted and logged at most once per `LOG_EVERY_S`
  (`logins_abandoned`): a guesser that drops each connection makes hundreds a second.
- An IPv6 client is counted by its /64 (`address_key`): one host holds a whole
  /64, and could otherwise start afresh from each of its addresses.
- `ConnectionTable` (one per listener): at most `max_connections` open, at most
  `max_connections_per_address` from one address; each admitted connection holds
  a `Ticket` with a deadline that its front end pushes on (on every read, or at
  each step of an HTTP request); one timer per listener closes the connections
  whose deadline has passed. A refused connection is counted and logged at most
  once per `LOG_EVERY_S` (a flood does not flood the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from filterd.accounts import client_ip
from filterd.logs import get_logger
from filterd.settings import ListenerLimits

log = get_logger("guard")

LOG_EVERY_S = 10.0
"""Refused connections of a listener are logged at most once per this many seconds."""
SWEEP_MAX_S = 1.0
"""Longest wait between two looks for connections past their deadline."""
SWEEP_BATCH = 8
"""Connections closed per look at most: closing each costs the event loop time, and a
peer that reopens what was closed (a slowloris) comes back in a burst of that size."""
SWEEP_AGAIN_S = 0.005
"""The next look after a full batch: the rest soon, but other work in between."""
ACCEPT_BATCH = 8
"""Connections a listener accepts per turn of the event loop (asyncio's `backlog`
argument): the setup of each new connection runs before anything that arrives
after it, so a flood of connects accepted 100 at a time (asyncio's default) puts
up to 100 setups ahead of an established client's next request. The rest wait in
the kernel's queue (`LISTEN_QUEUE`)."""
LISTEN_QUEUE = 1024
"""Connections the kernel holds for a listener before it accepts them (listen(2))."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def widen_queue(server: asyncio.Server, size: int = LISTEN_QUEUE) -> None:
    """Let the kernel queue `size` connections on each of `server`'s sockets.

    asyncio gives listen(2) the same number as its accept batch; a listener made
    with `backlog=ACCEPT_BATCH` gets its kernel queue back here (listen(2) on a
    duplicate descriptor changes the shared socket).
    """
    for listening in server.sockets:
        with socket.socket(fileno=os.dup(listening.fileno())) as sock:
            sock.listen(size)


class FailureBackoff:
    """Per-peer delay after failed logins: 0.5 s doubling to 30 s, forgotten after 15 min.

    A wrong password from a peer makes its next failures slower to answer, so
    guessing passwords costs time; a success clears the peer's record. At
    most `limit` peers are remembered (the oldest are forgotten first).
    """

    def __init__(
        self,
        *,
        first_s: float = 0.5,
        max_s: float = 30.0,
        forget_s: float = 900.0,
        limit: int = 10_000,
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.forget_s = forget_s
        self.limit = limit
        self._failures: dict[str, tuple[int, float]] = {}

    def failed(self, peer: str, now: float) -> float:
        """Record a failure; return how long to wait before answering it."""
        count, last = self._failures.pop(peer, (0, now))
        if now - last > self.forget_s:
            count = 0
        count += 1
        self._failures[peer] = (count, now)
        while len(self._failures) > self.limit:
            del self._failures[next(iter(self._failures))]
        return float(min(self.first_s * 2 ** (count - 1), self.max_s))

    def delay(self, peer: str, now: float) -> float:
        """How long to wait before taking the peer's next attempt (0 without failures)."""
        count, last = self._failures.get(peer, (0, now))
        if count == 0 or now - last > self.forget_s:
            return 0.0
        return float(min(self.first_s * 2 ** (count - 1), self.max_s))

    def succeeded(self, peer: str) -> None:
        """Forget the peer's failures."""
        self._failures.pop(peer, None)

    def failures(self, peer: str) -> int:
        """Failures remembered for a peer."""
        return self._failures.get(peer, (0, 0.0))[0]


class Abandoned(Exception):
    """The client went away while its login attempt waited: it is not judged."""


GONE_POLL_S = 0.25
"""How often a waiting attempt looks whether its client is still there."""


class Attempt:
    """One login attempt inside the gate: say how it went with `succeeded` / `failed`."""

    __slots__ = ("outcome",)

    def __init__(self) -> None:
        self.outcome: bool | None = None
        """True success, False failure, None not judged (nothing is recorded)."""

    def succeeded(self) -> None:
        """The credentials were right: the address's failures are forgotten."""
        self.outcome = True

    def failed(self) -> None:
        """The credentials were wrong: the address's next attempt waits longer."""
        self.outcome = False


class LoginGate:
    """The per-address back-off every login of the process goes through."""

    def __init__(
        self,
        backoff: FailureBackoff | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff or FailureBackoff()
        self._clock = clock
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}
        self._abandoned = 0
        self._abandoned_logged_at = -math.inf

    def waiting(self, address: str) -> int:
        """Attempts from `address` inside the gate now (holding or awaiting a turn)."""
        return self._turns.get(address_key(address), (None, 0))[1]

    @contextlib.asynccontextmanager
    async def attempt(
        self, address: str, gone: Callable[[], bool] | None = None
    ) -> AsyncIterator[Attempt]:
        """Wait for the turn and back-off of the client at `address`; then check the
        credentials and answer inside the block, and record the outcome on the
        yielded Attempt.

        `gone` tells whether the client has left (for a front end whose task is not
        cancelled when it does): such an attempt raises Abandoned when its turn
        comes or during its wait, unjudged, so attempts dropped by a guesser do not
        queue up behind one another.
        """
        peer = address_key(address)
        lock, users = self._turns.get(peer, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._turns[peer] = (lock, users + 1)
        judged = False
        try:
            async with lock:
                delay = self.backoff.delay(peer, self._clock())
                if delay:
                    await _wait(delay, gone)  # guessing passwords costs the guesser time
                    log.info("login_delayed", peer=peer, delay_s=delay)
                elif gone is not None and gone():
                    raise Abandoned
                attempt = Attempt()
                judged = True
                yield attempt
                if attempt.outcome is True:
                    self.backoff.succeeded(peer)
                elif attempt.outcome is False:
                    self.backoff.failed(peer, self._clock())
        finally:
            _, users = self._turns[peer]
            if users <= 1:
                del self._turns[peer]
            else:
                self._turns[peer] = (lock, users - 1)
            if not judged:
                self._note_abandoned(peer)

    def _note_abandoned(self, peer: str) -> None:
        """An attempt whose client left before its turn or wait was over: counted, and
        logged at most once per `LOG_EVERY_S` (a guessing storm drops hundreds a second)."""
        self._abandoned += 1
        now = self._clock()
        if now - self._abandoned_logged_at >= LOG_EVERY_S:
            log.info("logins_abandoned", peer=peer, abandoned=self._abandoned)
            self._abandoned, self._abandoned_logged_at = 0, now


async def _wait(delay: float, gone: Callable[[], bool] | None) -> None:
    """Sleep `delay`; raise Abandoned as soon as `gone()` says the client has left."""
    if gone is None:
        await asyncio.sleep(delay)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    while not gone():
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, GONE_POLL_S))
    raise Abandoned


class Ticket:
    """One admitted connection: its address, deadline and how to close it."""

    __slots__ = ("_table", "close", "deadline", "peer", "released", "transport")

    def __init__(self, table: ConnectionTable, peer: str, close: Callable[[], None]) -> None:
        self._table = table
        self.peer = peer
        self.close = close
        self.deadline = math.inf
        self.released = False
        self.transport: asyncio.BaseTransport | None = None
        """The connection's transport, when admitted by it (`admit_transport`)."""

    def extend(self, seconds: float | None = None) -> None:
        """Allow the peer `seconds` more (default: the listener's idle_timeout) from now."""
        self.deadline = self._table.clock() + (
            self._table.limits.idle_timeout_s if seconds is None else seconds
        )

    def release(self) -> None:
        """The connection is gone (idempotent)."""
        if not self.released:
            self.released = True
            self._table.forget(self)
            self.close = _closes_nothing  # it may be a method of the connection: no cycle
            if self.transport is not None:
                unlink_transport(self.transport)
                self.transport = None


async def listen_streams(
    table: ConnectionTable,
    listen: tuple[str, int],
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Ticket], Awaitable[None]],
    *,
    reuse_port: bool,
) -> asyncio.Server:
    """Listen on `listen` for a stream protocol (the SMPP and CMPP relays).

    Each connection admitted within `table`'s caps is served by `serve` and its
    ticket released when `serve` returns; one over a cap is closed at once, nothing
    said. New connections are accepted `ACCEPT_BATCH` per loop turn, the rest kept
    in the kernel's queue (`widen_queue`); `reuse_port` shares the port with the
    other worker processes (SO_REUSEPORT).
    """

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ticket = table.admit_transport(writer.transport, close=writer.close)
        if ticket is None:
            return
        try:
            await serve(reader, writer, ticket)
        finally:
            ticket.release()

    host, port = listen
    server = await asyncio.start_server(
        connected, host, port, reuse_port=reuse_port or None, backlog=ACCEPT_BATCH
    )
    widen_queue(server)
    table.start()
    return server


def _closes_nothing() -> None:
    """What a released ticket closes: nothing, the connection is gone."""


def unlink_transport(transport: asyncio.BaseTransport) -> None:
    """Break a closed transport's reference to itself, so that it is freed at once.

    Python 3.11's selector socket transport keeps a bound method of itself (the
    callback its reads go to): every connection's transport is a reference cycle
    that only the cyclic collector frees. Under a storm of short connections
    thousands of them piled up between two full collections, and freeing them
    there stopped the event loop for tens of milliseconds (bench/hostile.py).
    Once the transport is closing its reads have stopped, and the link is dropped.
    """
    if getattr(transport, "_read_ready_cb", None) is not None and transport.is_closing():
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class ConnectionTable:
    """The connections of one listener, within its caps and deadlines."""

    def __init__(
        self,
        name: str,
        limits: ListenerLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.limits = limits
        self.clock = clock
        self.tickets: set[Ticket] = set()
        self._per_address: dict[str, int] = {}
        self._refused = 0
        self._refused_logged_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.tickets)

    def from_address(self, address: str) -> int:
        """Connections open from `address` (an IPv6 one: from its /64)."""
        return self._per_address.get(address_key(address), 0)

    def admit(self, address: str, close: Callable[[], None], *, idle: bool = True) -> Ticket | None:
        """A ticket for a new connection from `address`, or None when a cap is reached.

        With `idle`, the deadline starts at idle_timeout from now; without, the
        connection has no deadline until its front end sets one (SMTP keeps its own).
        """
        peer = address_key(address)
        count = self._per_address.get(peer, 0)
        limits = self.limits
        if len(self.tickets) >= limits.max_connections:
            self._note_refused(peer, "max_connections")
            return None
        if count >= limits.max_connections_per_address:
            self._note_refused(peer, "max_connections_per_address")
            return None
        self._per_address[peer] = count + 1
        ticket = Ticket(self, peer, close)
        if idle:
            ticket.extend()
        self.tickets.add(ticket)
        return ticket

    def admit_transport(
        self,
        transport: asyncio.BaseTransport,
        *,
        refusal: bytes = b"",
        close: Callable[[], None] | None = None,
        idle: bool = True,
    ) -> Ticket | None:
        """`admit` a new connection by its transport's peer; beyond a cap, write
        `refusal` (if any) and close the transport. `close` ends the connection when
        its deadline passes (default: the transport's close)."""
        peer = peer_host(transport.get_extra_info("peername"))
        ticket = self.admit(peer, close or transport.close, idle=idle)
        if ticket is None:
            if refusal and isinstance(transport, asyncio.WriteTransport):
                transport.write(refusal)
            transport.close()
            unlink_transport(transport)
        else:
            ticket.transport = transport
        return ticket

    def forget(self, ticket: Ticket) -> None:
        """Take a released ticket out of the counts."""
        self.tickets.discard(ticket)
        count = self._per_address.get(ticket.peer, 0) - 1
        if count > 0:
            self._per_address[ticket.peer] = count
        else:
            self._per_address.pop(ticket.peer, None)

    def _note_refused(self, peer: str, cap: str) -> None:
        self._refused += 1
        now = self.clock()
        if now - self._refused_logged_at >= LOG_EVERY_S:
            log.warning(
                "connections_refused", listener=self.name, cap=cap, peer=peer,
                refused=self._refused, open=len(self.tickets),
            )  # fmt: skip
            self._refused, self._refused_logged_at = 0, now

    def expired(self, now: float) -> list[Ticket]:
        """The tickets whose deadline has passed at `now`."""
        return [ticket for ticket in self.tickets if ticket.deadline <= now]

    def sweep(self, most: int | None = None) -> int:
        """Close the connections past their deadline (at most `most`, the longest
        overdue first); how many were closed."""
        late = self.expired(self.clock())
        if most is not None and len(late) > most:
            late = sorted(late, key=lambda ticket: ticket.deadline)[:most]
        for ticket in late:
            close = ticket.close
            ticket.release()
            with contextlib.suppress(Exception):  # a transport already closing
                close()
        if late:
            log.info("idle_connections_closed", listener=self.name, closed=len(late))
        return len(late)

    def start(self) -> None:
        """Look for connections past their deadline, from now until `stop`."""
        if self._timer is None:
            self._schedule()

    def _schedule(self, interval: float | None = None) -> None:
        if interval is None:
            interval = min(SWEEP_MAX_S, self.limits.idle_timeout_s / 4)
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        """Close a bounded batch; come back soon while more are overdue, so that many
        connections timing out together do not stall the event loop at once."""
        closed = self.sweep(SWEEP_BATCH)
        self._schedule(SWEEP_AGAIN_S if closed == SWEEP_BATCH else None)

    def stop(self) -> None:
        """No more sweeping (the listener is closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def peer_host(peername: object) -> str:
    """The address part of a transport's `peername` ('' when there is none)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername or "")


@functools.lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64.

    Remembered for the last 4,096 addresses: reading an address costs ~10 µs, and
    every connection and login is counted by it (a storm of guesses from a few
    addresses asks hundreds of times a second)."""
    ip = client_ip(address)
    if ip is None:
        return address
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """Whether a client address (IPv4-mapped IPv6 read as IPv4) is in one of `networks`."""
    ip = client_ip(address)
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)
