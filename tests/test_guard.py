"""The guards of every listener (filterd/guard.py): the per-address back-off,
the login gate every login goes through (turns per address, the wait before
the check), connection caps and deadlines, and client address matching."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import ipaddress
import json
import os
import socket
import sys
import weakref
from collections.abc import Iterator

import pytest

from filterd import logs
from filterd.guard import (
    LOG_EVERY_S,
    Abandoned,
    ConnectionTable,
    FailureBackoff,
    LoginGate,
    Ticket,
    address_key,
    in_networks,
    peer_host,
    widen_queue,
)
from filterd.settings import ListenerLimits


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


def test_backoff_doubles_per_failure_up_to_the_cap() -> None:
    """Failures from one peer wait 0.5, 1, 2 ... seconds, never more than the cap."""
    backoff = FailureBackoff(first_s=0.5, max_s=4.0)
    delays = [backoff.failed("192.0.2.1", now=100.0 + i) for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failed("192.0.2.2", now=106.0) == 0.5  # another peer starts afresh


def test_backoff_is_cleared_by_success_and_forgotten_with_time() -> None:
    """A successful login clears the peer's record; old failures are forgotten."""
    backoff = FailureBackoff(forget_s=60.0)
    backoff.failed("peer", now=0.0)
    backoff.failed("peer", now=1.0)
    backoff.succeeded("peer")
    assert backoff.failures("peer") == 0
    backoff.failed("peer", now=2.0)
    assert backoff.failed("peer", now=200.0) == 0.5  # 198 s later: a first failure again


def test_backoff_remembers_a_bounded_number_of_peers() -> None:
    """Beyond `limit` peers the oldest record is dropped (memory stays bounded)."""
    backoff = FailureBackoff(limit=3)
    for index in range(5):
        backoff.failed(f"peer{index}", now=float(index))
    assert [backoff.failures(f"peer{i}") for i in range(5)] == [0, 0, 1, 1, 1]


def test_backoff_delay_reads_without_counting() -> None:
    """delay() tells the wait a peer's next attempt gets, without counting a failure:
    0 for a peer without failures, the current step after failures, 0 once forgotten."""
    backoff = FailureBackoff(first_s=0.5, forget_s=60.0)
    assert backoff.delay("peer", now=0.0) == 0.0
    backoff.failed("peer", now=0.0)
    backoff.failed("peer", now=1.0)
    assert backoff.delay("peer", now=2.0) == backoff.delay("peer", now=3.0) == 1.0
    assert backoff.failures("peer") == 2
    assert backoff.delay("peer", now=100.0) == 0.0


def _gate(first_s: float = 0.05) -> LoginGate:
    return LoginGate(FailureBackoff(first_s=first_s, max_s=10 * first_s))


def test_gate_a_first_attempt_is_judged_at_once_and_its_failure_counts() -> None:
    """A peer without failures is checked at once; a failed attempt is remembered and a
    success clears the record."""
    gate = _gate()

    async def run() -> list[int]:
        counts = []
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()
        counts.append(gate.backoff.failures("192.0.2.1"))
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.succeeded()
        counts.append(gate.backoff.failures("192.0.2.1"))
        return counts

    assert asyncio.run(run()) == [1, 0]


def test_gate_waits_out_the_back_off_before_the_check_right_or_wrong() -> None:
    """After a failure, the next attempt enters its block only after the back-off, so
    a right password is never judged sooner than a wrong one would be."""
    gate = _gate(first_s=0.2)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()
        started = loop.time()
        async with gate.attempt("192.0.2.1") as attempt:
            entered = loop.time() - started
            attempt.succeeded()
        return entered

    assert asyncio.run(run()) >= 0.2  # a lower bound: the sleep guarantees it


def test_gate_concurrent_attempts_take_turns_as_if_serial() -> None:
    """Parallel attempts from one address enter one at a time, each after the back-off
    the failures before it earned (0, 1, 2, 4 steps): concurrency buys nothing."""
    step = 0.05
    gate = _gate(first_s=step)
    inside = 0
    most_inside = 0

    async def guess(loop: asyncio.AbstractEventLoop, started: float) -> float:
        nonlocal inside, most_inside
        async with gate.attempt("192.0.2.9") as attempt:
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0)  # let any other attempt in, if the gate allowed it
            inside -= 1
            attempt.failed()
            return loop.time() - started

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        return sorted(await asyncio.gather(*(guess(loop, started) for _ in range(4))))

    entered = asyncio.run(run())
    assert most_inside == 1
    assert gate.backoff.failures("192.0.2.9") == 4
    owed = [0.0, step, step + 2 * step, step + 2 * step + 4 * step]
    assert all(t >= o for t, o in zip(entered, owed, strict=True))
    assert gate.waiting("192.0.2.9") == 0  # the turn bookkeeping is gone


def test_gate_other_addresses_do_not_wait() -> None:
    """One address's failures do not delay another address (its turn is its own)."""
    gate = _gate(first_s=3600.0)  # were it applied, the test would time out

    async def run() -> bool:
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()
        async with gate.attempt("192.0.2.2") as attempt:
            attempt.succeeded()
        return True

    assert asyncio.run(run())


def test_gate_a_cancelled_wait_judges_nothing_and_frees_the_turn() -> None:
    """A client that leaves while waiting is not judged (no failure, no success is
    recorded), and the next attempt still owes the back-off."""
    gate = _gate(first_s=0.5)

    async def run() -> tuple[int, int]:
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()

        async def waiting() -> None:
            async with gate.attempt("192.0.2.1") as attempt:
                attempt.succeeded()

        task = asyncio.create_task(waiting())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return gate.backoff.failures("192.0.2.1"), gate.waiting("192.0.2.1")

    assert asyncio.run(run()) == (1, 0)


def test_gate_counts_an_ipv6_client_by_its_slash_64() -> None:
    """Failures from one IPv6 address delay the other addresses of its /64 (one host
    holds the whole /64), not those of another /64."""
    gate = _gate()

    async def run() -> None:
        async with gate.attempt("2001:db8:1:2::1") as attempt:
            attempt.failed()

    asyncio.run(run())
    assert gate.backoff.failures(address_key("2001:db8:1:2:ffff::9")) == 1
    assert gate.backoff.failures(address_key("2001:db8:1:3::1")) == 0


def _table(clock: Clock, **limits: float) -> ConnectionTable:
    settings = ListenerLimits(
        idle_timeout_s=limits.get("idle", 10.0),
        max_connections=int(limits.get("total", 4)),
        max_connections_per_address=int(limits.get("per_address", 2)),
    )
    return ConnectionTable("test", settings, clock=clock)


def test_table_caps_per_address_and_in_total() -> None:
    """Beyond max_connections_per_address from one address, or max_connections in all,
    a connection gets no ticket; a released ticket frees its place (once only)."""
    table = _table(Clock())
    a1 = table.admit("192.0.2.1", lambda: None)
    a2 = table.admit("192.0.2.1", lambda: None)
    assert a1 is not None
    assert a2 is not None
    assert table.admit("192.0.2.1", lambda: None) is None  # per address
    b1 = table.admit("192.0.2.2", lambda: None)
    b2 = table.admit("192.0.2.3", lambda: None)
    assert b1 is not None
    assert b2 is not None
    assert table.admit("192.0.2.4", lambda: None) is None  # in total
    a1.release()
    a1.release()  # idempotent: frees one place, not two
    assert len(table) == 3
    assert table.from_address("192.0.2.1") == 1
    assert table.admit("192.0.2.4", lambda: None) is not None
    assert table.admit("192.0.2.5", lambda: None) is None


def test_table_closes_connections_past_their_deadline() -> None:
    """A connection silent for idle_timeout is closed (and its place freed); one whose
    front end extended its deadline on traffic stays."""
    clock = Clock()
    table = _table(clock, idle=10.0)
    closed: list[str] = []
    quiet = table.admit("192.0.2.1", lambda: closed.append("quiet"))
    busy = table.admit("192.0.2.2", lambda: closed.append("busy"))
    assert quiet is not None
    assert busy is not None
    clock.now += 9.0
    busy.extend()
    clock.now += 1.0
    assert table.sweep() == 1
    assert closed == ["quiet"]
    assert len(table) == 1
    clock.now += 5.0
    busy.extend(30.0)  # an HTTP request whose head is in: body_timeout instead
    clock.now += 20.0
    assert table.sweep() == 0
    clock.now += 10.0
    assert table.sweep() == 1
    assert closed == ["quiet", "busy"]


def test_table_without_idle_has_no_deadline_until_one_is_set() -> None:
    """`idle=False` (SMTP, whose library keeps its own timer): never swept until extended."""
    clock = Clock()
    table = _table(clock)
    ticket = table.admit("192.0.2.1", lambda: None, idle=False)
    assert ticket is not None
    clock.now += 1e9
    assert table.sweep() == 0


def test_table_sweeps_on_its_own_timer() -> None:
    """start() closes a silent connection by itself once idle_timeout has passed."""

    async def run() -> bool:
        closed = asyncio.Event()
        table = ConnectionTable("test", ListenerLimits(idle_timeout_s=0.2))
        table.admit("192.0.2.1", closed.set)
        table.start()
        try:
            async with asyncio.timeout(5):
                await closed.wait()
        finally:
            table.stop()
        return len(table) == 0

    assert asyncio.run(run())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("fe80::1%eth0", False),
        ("10.0.0.1", False),
        ("", False),
        ("not an address", False),
    ],
)
def test_in_networks_reads_mapped_and_scoped_addresses(address: str, expected: bool) -> None:
    """Status networks match IPv4-mapped IPv6 as IPv4; garbage matches nothing."""
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert in_networks(address, loopback) is expected


def test_peer_host_and_address_key() -> None:
    """The host of a peername tuple; IPv4 counted by address, IPv6 by /64."""
    assert peer_host(("192.0.2.1", 5000)) == "192.0.2.1"
    assert peer_host(("::1", 5000, 0, 0)) == "::1"
    assert peer_host(None) == ""
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8::1") == "2001:db8::/64"
    assert address_key("weird") == "weird"


def test_gate_attempts_of_a_client_that_left_are_dropped_unjudged() -> None:
    """An attempt whose client has gone raises Abandoned when its turn comes (or during
    its wait), records nothing and frees the turn at once, so guesses dropped by their
    sender do not queue up behind one another."""
    gate = _gate(first_s=3600.0)  # were it waited out, the test would time out

    async def run() -> tuple[int, int]:
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()
        left = False

        def gone() -> bool:
            return left

        async def dropped() -> None:
            async with gate.attempt("192.0.2.1", gone) as attempt:
                attempt.succeeded()  # never reached

        task = asyncio.create_task(dropped())
        await asyncio.sleep(0.1)
        left = True  # the client hangs up during its hour-long wait
        with pytest.raises(Abandoned):
            await task
        with pytest.raises(Abandoned):  # gone before its turn: dropped without a wait
            async with gate.attempt("192.0.2.1", gone) as attempt:
                attempt.succeeded()
        return gate.backoff.failures("192.0.2.1"), gate.waiting("192.0.2.1")

    assert asyncio.run(run()) == (1, 0)


@contextlib.contextmanager
def _captured_logs() -> Iterator[io.StringIO]:
    """Every JSON log line written meanwhile, at INFO and above."""
    stream = io.StringIO()
    logs.configure(stream, "INFO")
    try:
        yield stream
    finally:
        logs.configure(sys.stderr, "WARNING")


def _events(stream: io.StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == name]


def test_gate_logs_a_wait_once_over_and_abandoned_attempts_in_a_summary() -> None:
    """An attempt that waited out its back-off is logged (`login_delayed`) when its wait
    is over, before it is judged; attempts whose client left first are not logged one
    by one: the first is (`logins_abandoned`), then how many more at most once per
    LOG_EVERY_S."""
    clock = Clock()
    gate = LoginGate(FailureBackoff(first_s=0.05), clock=clock)

    async def run(stream: io.StringIO) -> list[list[dict[str, object]]]:
        async with gate.attempt("192.0.2.1") as attempt:
            attempt.failed()
        seen = []

        async def waits() -> None:
            async with gate.attempt("192.0.2.1"):
                seen.append(_events(stream, "login_delayed"))  # before the check

        task = asyncio.create_task(waits())
        await asyncio.sleep(0.01)
        seen.append(_events(stream, "login_delayed"))  # during the wait
        await task
        for step in (0.0, 1.0, 1.0, LOG_EVERY_S):
            clock.now += step
            with pytest.raises(Abandoned):
                async with gate.attempt("192.0.2.1", lambda: True):
                    pass
        seen.append(_events(stream, "logins_abandoned"))
        return seen

    with _captured_logs() as stream:
        during, before_check, abandoned = asyncio.run(run(stream))
    assert during == []
    assert [(line["peer"], line["delay_s"]) for line in before_check] == [("192.0.2.1", 0.05)]
    assert [(line["peer"], line["abandoned"]) for line in abandoned] == [
        ("192.0.2.1", 1),
        ("192.0.2.1", 3),
    ]


class _Transport(asyncio.WriteTransport):
    """Just enough of a transport for admit_transport: a peer, writes, a close."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        """The peer address, as asyncio gives it."""
        return (self.peer, 4321) if name == "peername" else default

    def write(self, data: bytes) -> None:
        """Keep what is written."""
        self.written += data

    def close(self) -> None:
        """Note the close."""
        self.closed = True


def test_admit_transport_refuses_with_the_listeners_words_and_closes() -> None:
    """A transport within the caps gets a ticket and stays open; beyond them it is
    written the listener's refusal (if any) and closed; a ticket's close is the
    transport's close unless the front end gives its own."""
    table = _table(Clock(), total=10, per_address=1)
    first, second = _Transport("192.0.2.1"), _Transport("192.0.2.1")
    ticket = table.admit_transport(first, refusal=b"421 4.7.0 busy\r\n")
    assert ticket is not None
    assert (first.written, first.closed) == (b"", False)
    assert table.admit_transport(second, refusal=b"421 4.7.0 busy\r\n") is None
    assert (second.written, second.closed) == (b"421 4.7.0 busy\r\n", True)
    ticket.close()
    assert first.closed
    silent = _Transport("192.0.2.1")
    assert table.admit_transport(silent) is None
    assert (silent.written, silent.closed) == (b"", True)


def test_sweep_closes_a_bounded_batch_longest_overdue_first() -> None:
    """sweep(most) closes at most `most` overdue connections, the longest overdue first
    (the timer comes back for the rest), so many timing out at once do not stall the
    event loop in one go."""
    clock = Clock()
    table = _table(clock, total=10, per_address=10, idle=10.0)
    closed: list[int] = []
    for index in range(5):
        table.admit("192.0.2.1", lambda index=index: closed.append(index))
        clock.now += 1.0
    clock.now += 20.0
    assert table.sweep(2) == 2
    assert closed == [0, 1]
    assert table.sweep() == 3
    assert sorted(closed) == [0, 1, 2, 3, 4]


async def _completed_connects(server: asyncio.Server, count: int, wait_s: float) -> int:
    """Open `count` connections to `server` (which accepts none) and return how many the
    kernel completed within `wait_s` (a full accept queue leaves the others unanswered)."""
    host, port = server.sockets[0].getsockname()[:2]
    attempts = [asyncio.ensure_future(asyncio.open_connection(host, port)) for _ in range(count)]
    done, pending = await asyncio.wait(attempts, timeout=wait_s)
    for attempt in pending:
        attempt.cancel()
    for attempt in done:
        if attempt.exception() is None:
            attempt.result()[1].close()
    return sum(1 for attempt in done if attempt.exception() is None)


def test_widen_queue_gives_the_kernel_queue_back_to_a_small_accept_batch() -> None:
    """A listener made with asyncio's `backlog` = 1 has a kernel queue of about one
    connection: of 20 connects nowhere near all complete while nothing accepts.
    After `widen_queue` the kernel completes all 20 and holds them for accepting."""

    async def main() -> tuple[int, int]:
        async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        narrow = await asyncio.start_server(ignore, "127.0.0.1", 0, backlog=1, start_serving=False)
        wide = await asyncio.start_server(ignore, "127.0.0.1", 0, backlog=1, start_serving=False)
        for server in (narrow, wide):  # listening, as _start_serving would, but not accepting
            with socket.socket(fileno=os.dup(server.sockets[0].fileno())) as sock:
                sock.listen(1)
        widen_queue(wide, 64)
        try:
            return (
                await _completed_connects(narrow, 20, 0.5),
                await _completed_connects(wide, 20, 2.0),
            )
        finally:
            narrow.close()
            wide.close()

    narrow_done, wide_done = asyncio.run(main())
    assert narrow_done < 10
    assert wide_done == 20


def test_a_released_connection_leaves_no_reference_cycle() -> None:
    """Once a connection admitted by its transport has ended and its ticket is released,
    neither the transport (which refers to itself through its read callback) nor the
    connection (whose ticket closes it with one of its own methods) waits for the
    cyclic collector: both are freed by reference counting, as is a connection refused
    over the cap."""

    class Connection(asyncio.Protocol):
        """Admitted by its transport, released when it is lost."""

        def __init__(self, table: ConnectionTable, made: list[weakref.ref[object]]) -> None:
            self.table = table
            self.made = made
            self.ticket: Ticket | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.made.extend((weakref.ref(self), weakref.ref(transport)))
            self.ticket = self.table.admit_transport(transport, close=self.close)
            self.transport = transport

        def close(self) -> None:
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.ticket is not None:
                self.ticket.release()

    async def main() -> list[object | None]:
        table = ConnectionTable("test", ListenerLimits(60.0, max_connections=1))
        made: list[weakref.ref[object]] = []
        server = await asyncio.get_running_loop().create_server(
            lambda: Connection(table, made), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        _, first = await asyncio.open_connection("127.0.0.1", port)
        refused, second = await asyncio.open_connection("127.0.0.1", port)  # over the cap
        assert await refused.read() == b""
        first.close()
        second.close()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(made) == 4 and len(table) == 0:
                break
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return [ref() for ref in made]

    gc.disable()
    try:
        alive = asyncio.run(main())
    finally:
        gc.enable()
    assert len(alive) == 4
    assert alive == [None, None, None, None]
