"""Hostile networks (SPEC §11), black box: a real `filterd serve` with all four front ends
(SMTP relay → an aiosmtpd sink, SMPP relay → the fake SMSC, the Postfix policy service,
HTTP), its own Valkey, and raw clients over loopback.

- connection caps: beyond `max_connections` / `max_connections_per_address` SMTP
  answers `421 4.7.0` and closes, HTTP `503` and closes, SMPP and policy close without
  a word; a freed slot is served again;
- idle and slow peers: a connection that sends nothing for `idle_timeout` is closed
  (enquire_link counts as SMPP traffic); an HTTP head trickled byte by byte is closed
  too, and a body must arrive within `body_timeout`;
- the login gate (one per process, SMTP AUTH and SMPP bind): after a failure from an
  address, every next attempt from it, right or wrong, serial or concurrent, is
  answered only after the back-off (0.5 s doubling): asserted as lower bounds only;
- `/healthz` and `/metrics` only for `http.status_networks`, and a 503 that names no
  host;
- descriptor exhaustion (RLIMIT_NOFILE lowered in the daemon) never stops it: every
  front end serves again once the flood is gone, and caps below the limit keep the
  other front ends serving during a flood.

Scenarios of the login gate use source addresses of their own in 127.0.0.0/8 (the
gate keys on the client address); the legitimate client is 127.0.0.1. Nothing sleeps
to synchronise: conditions are polled with a deadline, and "the server closed the
connection" is a blocking read with a timeout well above the configured one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from filterd.model import Kind
from filterd.smpp.pdu import EnquireLink, EnquireLinkResp
from filterd.smpp.status import ESME_RINVPASWD, ESME_ROK
from tests.faults.conftest import (
    JANE,
    JANE_SMS,
    SMPP_PASSWORD,
    SMTP_PASSWORD,
    Reaper,
    facts_of,
    record_fact,
    report,
)
from tests.faults.hostile import (
    CLIENT,
    FRONT_ENDS,
    HttpReply,
    LimitedDaemon,
    SmppSession,
    SmtpSession,
    TomlValue,
    close_all,
    connect,
    first_arrivals,
    flood,
    healthz_ok,
    hostile_config,
    http_get,
    http_request,
    policy_ask,
    policy_serves,
    poll_until,
    read_http_reply,
    read_until_closed,
    smpp_serves,
    smtp_serves,
    smtp_transaction,
    timed_auth,
    timed_bind,
    unsubscribe_token,
)
from tests.helpers import RedisProcess, SinkServer, bundled_valkey, free_port
from tests.smsc import FakeSmsc

pytestmark = pytest.mark.timeout(120)

WRONG = "wrong-pw"
"""A wrong password for both SMTP and SMPP (an SMPP password has at most 8 octets)."""
FIRST_BACKOFF_S = 0.5
TIMER_SLACK_S = 0.01
"""Allowed below a back-off's lower bound: the event loop's timer granularity (asyncio
may run a timer up to its clock resolution early); every elapsed time is measured from
just before the attempt was sent, so the server's own wait is always inside it."""
SERVE_AGAIN_S = 30.0
"""Deadline for a front end to serve again after a flood is gone."""


def owed(failures: int) -> float:
    """The back-off owed by the next attempt after `failures` failed logins in a row."""
    return min(FIRST_BACKOFF_S * 2 ** (failures - 1), 30.0) if failures else 0.0


@dataclass
class Peers:
    """What a hostile test's daemon talks to: its registry, upstream sink and carrier."""

    home: Path
    registry_url: str
    sink: SinkServer
    smsc: FakeSmsc
    reaper: Reaper
    daemons: list[LimitedDaemon] = field(default_factory=list)

    def start(
        self,
        tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
        *,
        nofile: int | None = None,
    ) -> LimitedDaemon:
        """`filterd serve` with all four front ends and `tables` added to their listener
        tables (RLIMIT_NOFILE = `nofile` if given); returns once it is listening and
        bound to the carrier."""
        config = hostile_config(
            self.home,
            self.registry_url,
            sink_port=self.sink.port,
            smsc_port=self.smsc.port,
            tables=tables,
        )
        daemon = LimitedDaemon(config, self.reaper, FRONT_ENDS, nofile=nofile)
        self.daemons.append(daemon)
        daemon.start()
        self.smsc.wait_bound()
        return daemon

    def stop(self) -> None:
        """SIGTERM every daemon started (the reaper kills what is left and says so)."""
        for daemon in self.daemons:
            if daemon.process is not None:
                daemon.stop()


@pytest.fixture
def peers(
    home: Path, valkey: RedisProcess, sink: SinkServer, smsc: FakeSmsc, reaper: Reaper
) -> Iterator[Peers]:
    """Valkey with consent of sender acme for JANE (email) and JANE_SMS (sms), a sink
    and a carrier; the daemons a test starts on them are stopped (SIGTERM) after it."""
    record_fact(valkey.url, JANE, Kind.CONSENT)
    record_fact(valkey.url, "+" + JANE_SMS, Kind.CONSENT)
    peers = Peers(home, valkey.url, sink, smsc, reaper)
    try:
        yield peers
    finally:
        peers.stop()


# ---- connection caps -------------------------------------------------------------------------


def smtp_greeting(port: int, source: str) -> bytes:
    """What a new SMTP connection from `source` is told before the server closes it or
    the client does (the first reply line, or everything until close)."""
    with connect(port, source) as sock:
        data = sock.recv(65536)
        if data.startswith(b"220"):
            return data
        return data + read_until_closed(sock)


def test_smtp_caps_answer_421_and_close(peers: Peers) -> None:
    """[smtp] max_connections_per_address = 3, max_connections = 5: a 4th connection from
    one address is answered `421 4.7.0` and closed; per-address counts are per address
    (a second address gets 2 more), and beyond 5 in all any address gets the 421. When a
    connection ends, its slot serves again."""
    daemon = peers.start({"smtp": {"max_connections": 5, "max_connections_per_address": 3}})
    port = daemon.ports["smtp"]
    held = [SmtpSession(port, "127.0.0.1") for _ in range(3)]
    try:
        over_address = smtp_greeting(port, "127.0.0.1")
        held += [SmtpSession(port, "127.0.0.2") for _ in range(2)]
        over_total = smtp_greeting(port, "127.0.0.3")
        held.pop(0).close()
        took = poll_until(
            lambda: smtp_greeting(port, "127.0.0.1").startswith(b"220"), 10, "a freed SMTP slot"
        )
    finally:
        close_all([session.sock for session in held])
    report(
        "smtp_caps", over_address=over_address[:9], over_total=over_total[:9],
        slot_back_s=f"{took:.2f}",
    )  # fmt: skip
    assert over_address.startswith(b"421 4.7.0"), over_address
    assert over_total.startswith(b"421 4.7.0"), over_total
    assert daemon.alive()


def keep_alive_get(port: int, source: str) -> tuple[socket.socket, HttpReply | None]:
    """A new connection from `source` with one keep-alive GET /healthz: the socket (still
    open unless the server closed it) and the response."""
    sock = connect(port, source)
    sock.sendall(http_request("GET", "/healthz", keep_alive=True))
    return sock, read_http_reply(sock)


def status_of(reply: HttpReply | None) -> int | None:
    """The status of a response (None: the connection closed without one)."""
    return None if reply is None else reply.status


def over_cap_http(port: int, source: str) -> tuple[int | None, bytes]:
    """A keep-alive GET /healthz on a new connection from `source`: the status (None: no
    response) and what came after it before the server closed the connection."""
    sock, reply = keep_alive_get(port, source)
    with sock:
        rest = read_until_closed(sock)
    return status_of(reply), rest


def test_http_caps_answer_503_and_close(peers: Peers) -> None:
    """[http] max_connections_per_address = 3, max_connections = 5 (idle_timeout long
    enough to hold keep-alive connections): a 4th connection from one address gets
    `503` and is closed, though it asked for keep-alive; a second address gets 2 more;
    beyond 5 in all the next gets 503 too. A slot freed is served again."""
    daemon = peers.start(
        {"http": {"max_connections": 5, "max_connections_per_address": 3, "idle_timeout": "60s"}}
    )
    port = daemon.ports["http"]
    held: list[socket.socket] = []
    try:
        for source in ["127.0.0.1"] * 3:
            sock, reply = keep_alive_get(port, source)
            held.append(sock)
            assert status_of(reply) == 200, reply
        over_address = over_cap_http(port, "127.0.0.1")
        for source in ["127.0.0.2"] * 2:
            sock, reply = keep_alive_get(port, source)
            held.append(sock)
            assert status_of(reply) == 200, reply
        over_total = over_cap_http(port, "127.0.0.3")
        held.pop(0).close()
        took = poll_until(lambda: healthz_ok(port), 10, "a freed HTTP slot")
    finally:
        close_all(held)
    report("http_caps", over_address=over_address[0], over_total=over_total[0],
           slot_back_s=f"{took:.2f}")  # fmt: skip
    assert over_address[0] == 503, over_address
    assert over_total[0] == 503, over_total
    assert daemon.alive()


def test_smpp_and_policy_caps_close_without_a_word(peers: Peers) -> None:
    """[smpp] and [policy] max_connections_per_address = 3, max_connections = 5: a
    connection beyond either cap is closed with nothing sent (EOF before any byte);
    the connections within the caps are served (bind ESME_ROK, policy DUNNO), and a
    freed slot is served again."""
    caps: dict[str, TomlValue] = {"max_connections": 5, "max_connections_per_address": 3}
    daemon = peers.start({"smpp": dict(caps), "policy": dict(caps)})
    smpp_port, policy_port = daemon.ports["smpp"], daemon.ports["policy"]

    def smpp_bound(source: str) -> socket.socket:
        session = SmppSession(smpp_port, source)
        status = session.bind()
        assert status == ESME_ROK, f"bind from {source}: {status:#x}"
        return session.sock

    def policy_served(source: str) -> socket.socket:
        sock = connect(policy_port, source)
        assert policy_ask(sock) == b"action=DUNNO\n\n"
        return sock

    def refused_silently(port: int, source: str) -> bytes:
        with connect(port, source) as sock:
            return read_until_closed(sock)

    held: list[socket.socket] = []
    seen: dict[str, bytes] = {}
    try:
        for name, port, served in (
            ("smpp", smpp_port, smpp_bound),
            ("policy", policy_port, policy_served),
        ):
            held += [served("127.0.0.1") for _ in range(3)]
            seen[f"{name}_over_address"] = refused_silently(port, "127.0.0.1")
            held += [served("127.0.0.2") for _ in range(2)]
            seen[f"{name}_over_total"] = refused_silently(port, "127.0.0.3")
        close_all(held)
        held = []
        poll_until(lambda: smpp_serves(smpp_port), 10, "SMPP served after the slots freed")
        poll_until(lambda: policy_serves(policy_port), 10, "policy served after the slots freed")
    finally:
        close_all(held)
    report("smpp_policy_caps", **{name: len(data) for name, data in seen.items()})
    assert seen == dict.fromkeys(seen, b""), seen
    assert daemon.alive()


# ---- idle and slow peers ----------------------------------------------------------------------


def test_idle_connections_are_closed(peers: Peers) -> None:
    """idle_timeout = 1s on [smtp], [policy] and [smpp]: a connection that then sends
    nothing is closed by the server: SMTP after EHLO (a 421 timeout line before the close
    is allowed) and before even reading the greeting, policy after one answered request,
    SMPP bound and unbound. The daemon keeps serving."""
    idle: dict[str, TomlValue] = {"idle_timeout": "1s"}
    daemon = peers.start({"smtp": dict(idle), "policy": dict(idle), "smpp": dict(idle)})
    ports = daemon.ports
    closed: dict[str, bytes] = {}

    session = SmtpSession(ports["smtp"])
    with session.sock:
        closed["smtp_after_ehlo"] = read_until_closed(session.sock)
    with connect(ports["smtp"]) as sock:
        closed["smtp_silent"] = read_until_closed(sock)
    with connect(ports["policy"]) as sock:
        assert policy_ask(sock) == b"action=DUNNO\n\n"
        closed["policy"] = read_until_closed(sock)
    bound = SmppSession(ports["smpp"])
    with bound.sock:
        assert bound.bind() == ESME_ROK
        closed["smpp_bound"] = read_until_closed(bound.sock)
    with connect(ports["smpp"]) as sock:
        closed["smpp_unbound"] = read_until_closed(sock)
    report("idle_closed", **{name: len(data) for name, data in closed.items()})
    after_ehlo = closed["smtp_after_ehlo"]
    assert after_ehlo == b"" or after_ehlo.startswith(b"421"), after_ehlo
    assert closed["smtp_silent"].startswith(b"220")
    after_greeting = closed["smtp_silent"].split(b"\r\n", 1)[1]
    assert after_greeting == b"" or after_greeting.startswith(b"421"), closed["smtp_silent"]
    assert closed["policy"] == b""
    assert smtp_serves(ports["smtp"])
    assert smpp_serves(ports["smpp"])
    assert policy_serves(ports["policy"])


def test_smpp_enquire_link_keeps_a_bind_alive(peers: Peers) -> None:
    """[smpp] idle_timeout = 2s: a bound client that sends enquire_link every 0.25 s
    stays bound for 2.5 idle timeouts (each answered); once it stops, the server closes
    the connection."""
    daemon = peers.start({"smpp": {"idle_timeout": "2s"}})
    session = SmppSession(daemon.ports["smpp"])
    answered = 0
    with session.sock:
        assert session.bind() == ESME_ROK
        until = time.monotonic() + 5.0
        while time.monotonic() < until:
            session.send(EnquireLink(sequence_number=1000 + answered))
            answer = session.read()
            assert isinstance(answer, EnquireLinkResp), f"after {answered} answers: {answer}"
            answered += 1
            session.sock.settimeout(0.25)  # the pace of the keep-alives, not a synchronisation
            with contextlib.suppress(TimeoutError):
                early = session.sock.recv(65536)
                raise AssertionError(f"the server spoke or closed while traffic flowed: {early!r}")
            session.sock.settimeout(10)
        closed = read_until_closed(session.sock)
    report("smpp_enquire_link", answered=answered, after_stop=len(closed))


def test_http_idle_and_slowloris_are_closed(peers: Peers) -> None:
    """[http] idle_timeout = 1s: a connection that sends nothing is closed; so is one
    that trickles a request head one byte every 0.25 s and never completes it: closed
    while still trickling (well before 80 bytes = 20 s), never answered 200."""
    daemon = peers.start({"http": {"idle_timeout": "1s"}})
    port = daemon.ports["http"]
    with connect(port) as sock:
        silent = read_until_closed(sock)
    trickled = 0
    answer = b""
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while trickled < 80:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            trickled += 1
            sock.settimeout(0.25)  # the trickle's pace, not a synchronisation
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            answer += read_until_closed(sock)
            break
        else:
            raise AssertionError("a head trickled for 20 s was never closed")
    report("http_slow", silent=len(silent), trickled_bytes=trickled, answer=answer[:12])
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert healthz_ok(port)


def test_http_body_must_arrive_within_body_timeout(peers: Peers) -> None:
    """[http] body_timeout = 1s (idle_timeout 30s, so only the body timer can act): a
    one-click POST whose head announces 100 bytes of body and sends 10 is closed well
    before the idle timeout, and records nothing; the same POST sent whole afterwards
    is answered 200 and records the refusal."""
    daemon = peers.start({"http": {"idle_timeout": "30s", "body_timeout": "1s"}})
    port = daemon.ports["http"]
    path = f"/unsubscribe/{unsubscribe_token()}"
    form = b"List-Unsubscribe=One-Click"
    head = http_request("POST", path, body=form).split(b"\r\n\r\n")[0]
    head = head.replace(f"Content-Length: {len(form)}".encode(), b"Content-Length: 100")
    with connect(port) as sock:
        sock.sendall(head + b"\r\n\r\n" + form[:10])
        answer = read_until_closed(sock)
    refusals_after_partial = [f for f in facts_of(peers.registry_url, JANE) if f[0] == "refusal"]
    with connect(port) as sock:
        sock.sendall(http_request("POST", path, body=form))
        whole = read_http_reply(sock)
    report("http_body_timeout", partial_answer=answer[:12], whole=whole and whole.status)
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert refusals_after_partial == []
    assert status_of(whole) == 200, whole
    assert [f for f in facts_of(peers.registry_url, JANE) if f[0] == "refusal"]


# ---- the login gate ---------------------------------------------------------------------------


def test_smpp_right_password_after_a_failure_waits_the_backoff(peers: Peers) -> None:
    """After one failed bind from an address, a bind with the right password from it, on
    a new connection, is answered ESME_ROK no sooner than 0.5 s after it was sent. The
    attack of a connection per guess, dropped if nothing came back within 100 ms, learns
    nothing: after a failure, no guess (4 wrong, then the right one) is answered within
    100 ms. The right password still binds afterwards."""
    daemon = peers.start()
    port = daemon.ports["smpp"]
    source = "127.0.0.21"
    first, _ = timed_bind(port, WRONG, source)
    right, right_s = timed_bind(port, SMPP_PASSWORD, source)
    again, _ = timed_bind(port, WRONG, source)
    answered_fast: list[str] = []
    for password in [f"guess-{n}" for n in range(4)] + [SMPP_PASSWORD]:
        session = SmppSession(port, source)
        with session.sock:
            session.send_bind(password)
            arrival = first_arrivals([session.sock], 0.1)[0]
            if arrival.data:
                answered_fast.append(password)
    final, _ = timed_bind(port, SMPP_PASSWORD, source, timeout=60)
    report("smpp_backoff", right_after_failure_s=f"{right_s:.3f}", fast_guesses=answered_fast,
           final=final)  # fmt: skip
    assert first == ESME_RINVPASWD
    assert again == ESME_RINVPASWD
    assert right == ESME_ROK
    assert right_s >= owed(1) - TIMER_SLACK_S, right_s
    assert answered_fast == [], "guesses answered within 100 ms after a failure"
    assert final == ESME_ROK


def test_smpp_concurrent_wrong_binds_are_answered_in_turn(peers: Peers) -> None:
    """Three wrong binds sent at once from one address (no failure before) are answered
    as if serial: the last answer comes no sooner than 0 + 0.5 + 1 s after the first was
    sent; a right bind after them waits the 2 s owed after three failures."""
    daemon = peers.start()
    port = daemon.ports["smpp"]
    source = "127.0.0.22"
    sessions = [SmppSession(port, source, timeout=60) for _ in range(3)]
    try:
        started = min(session.send_bind(WRONG) for session in sessions)
        arrivals = first_arrivals([session.sock for session in sessions], 60)
        statuses = []
        for session, arrival in zip(sessions, arrivals, strict=True):
            assert arrival.data, "a wrong bind got no answer"
            session.framer.feed(arrival.data)
            pdu = session.read()
            statuses.append(None if pdu is None else pdu.command_status)
    finally:
        close_all([session.sock for session in sessions])
    last_s = max(a.at for a in arrivals if a.at is not None) - started
    right, right_s = timed_bind(port, SMPP_PASSWORD, source)
    report("smpp_concurrent", statuses=statuses, last_answer_s=f"{last_s:.3f}",
           right_s=f"{right_s:.3f}")  # fmt: skip
    assert statuses == [ESME_RINVPASWD] * 3
    assert last_s >= owed(1) + owed(2) - TIMER_SLACK_S, last_s
    assert right == ESME_ROK
    assert right_s >= owed(3) - TIMER_SLACK_S, right_s


def test_smtp_parallel_wrong_auths_are_serialised(peers: Peers) -> None:
    """Six wrong AUTH PLAIN sent at once on six connections from one address take at
    least 0.5 + 1 + 2 + 4 + 8 s before the last is answered (535 each, in turn); AUTH
    with the right password after them is answered 235 no sooner than the 16 s owed."""
    daemon = peers.start()
    port = daemon.ports["smtp"]
    source = "127.0.0.23"
    sessions = [SmtpSession(port, source, timeout=90) for _ in range(6)]
    try:
        started = min(session.send_auth(WRONG) for session in sessions)
        arrivals = first_arrivals([session.sock for session in sessions], 90)
    finally:
        close_all([session.sock for session in sessions])
    replies = [(a.data or b"")[:3] for a in arrivals]
    times = sorted(a.at - started for a in arrivals if a.at is not None)
    right, right_s = timed_auth(port, SMTP_PASSWORD, source, timeout=90)
    report("smtp_parallel_auth", replies=Counter(replies), answers_s=[f"{t:.2f}" for t in times],
           right=right[:3], right_s=f"{right_s:.2f}")  # fmt: skip
    assert replies == [b"535"] * 6
    assert times[-1] >= sum(owed(n) for n in range(1, 6)) - TIMER_SLACK_S, times
    assert right.startswith(b"235"), right
    assert right_s >= owed(6) - TIMER_SLACK_S, right_s


def test_login_gate_is_shared_by_smtp_and_smpp(peers: Peers) -> None:
    """One gate per process: after a failed SMPP bind from an address, AUTH with the right
    password from it is answered 235 no sooner than 0.5 s; after a failed AUTH from
    another address, a right bind from that one is answered ESME_ROK no sooner than
    0.5 s."""
    daemon = peers.start()
    smtp_port, smpp_port = daemon.ports["smtp"], daemon.ports["smpp"]
    wrong_bind, _ = timed_bind(smpp_port, WRONG, "127.0.0.24")
    auth, auth_s = timed_auth(smtp_port, SMTP_PASSWORD, "127.0.0.24")
    wrong_auth, _ = timed_auth(smtp_port, WRONG, "127.0.0.25")
    bind, bind_s = timed_bind(smpp_port, SMPP_PASSWORD, "127.0.0.25")
    report("shared_gate", auth_after_bind_s=f"{auth_s:.3f}", bind_after_auth_s=f"{bind_s:.3f}")
    assert wrong_bind == ESME_RINVPASWD
    assert wrong_auth.startswith(b"535"), wrong_auth
    assert auth.startswith(b"235"), auth
    assert auth_s >= owed(1) - TIMER_SLACK_S, auth_s
    assert bind == ESME_ROK
    assert bind_s >= owed(1) - TIMER_SLACK_S, bind_s


# ---- status endpoints -------------------------------------------------------------------------


def test_status_endpoints_refused_outside_status_networks(peers: Peers) -> None:
    """http.status_networks = ["10.9.9.0/24"]: /healthz and /metrics from 127.0.0.1 get
    403 or 404; the one-click page on the same listener is still served (200)."""
    daemon = peers.start({"http": {"status_networks": ["10.9.9.0/24"]}})
    port = daemon.ports["http"]
    health = http_get(port, "/healthz")
    metrics = http_get(port, "/metrics")
    page = http_get(port, f"/unsubscribe/{unsubscribe_token()}")
    report("status_refused", healthz=health.status, metrics=metrics.status, page=page.status)
    assert health.status in (403, 404), health
    assert metrics.status in (403, 404), metrics
    assert b"# TYPE" not in metrics.body
    assert page.status == 200


def test_status_endpoints_served_to_loopback_by_default(peers: Peers) -> None:
    """With the default status_networks (loopback), /healthz from 127.0.0.1 is 200 and
    /metrics 200 with the Prometheus text."""
    daemon = peers.start()
    port = daemon.ports["http"]
    health = http_get(port, "/healthz")
    metrics = http_get(port, "/metrics")
    assert health.status == 200, health
    assert metrics.status == 200, metrics
    assert b"# TYPE" in metrics.body


@dataclass
class TcpRegistry:
    """A Valkey this test owns on TCP 127.0.0.1:`port` (so a registry URL names a host)."""

    server: RedisProcess
    port: int


@pytest.fixture
def tcp_peers(
    home: Path, sink: SinkServer, smsc: FakeSmsc, reaper: Reaper
) -> Iterator[tuple[Peers, TcpRegistry]]:
    """Peers whose registry is a Valkey on a TCP port of 127.0.0.1 (no AOF); the daemons
    started on them are stopped after the test."""
    binary = bundled_valkey()
    if binary is None:
        pytest.skip("no valkey server binary installed")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--appendonly", "no"]
    server = RedisProcess(binary, home / "tcp", args).start()
    reaper.finalizers.append(server.kill)
    peers = Peers(home, f"redis://127.0.0.1:{port}", sink, smsc, reaper)
    try:
        yield peers, TcpRegistry(server, port)
    finally:
        peers.stop()


def test_healthz_503_names_no_host(tcp_peers: tuple[Peers, TcpRegistry]) -> None:
    """With the registry on TCP 127.0.0.1:PORT killed, /healthz answers 503, and neither
    its head nor its body names the host or the port."""
    peers, registry = tcp_peers
    daemon = peers.start()
    http_port = daemon.ports["http"]
    assert http_get(http_port, "/healthz").status == 200
    registry.server.kill()
    replies: list[HttpReply] = []

    def unavailable() -> bool:
        replies.append(http_get(http_port, "/healthz"))
        return replies[-1].status == 503

    poll_until(unavailable, 30, "/healthz to answer 503")
    reply = replies[-1]
    text = reply.head + b"\r\n\r\n" + reply.body
    report("healthz_503", body=reply.body[:120])
    for secret in (str(registry.port).encode(), b"127.0.0.1", b"localhost"):
        assert secret not in text, text


# ---- descriptor exhaustion --------------------------------------------------------------------


def every_front_end_serves(daemon: LimitedDaemon) -> dict[str, float]:
    """Poll each front end until it serves (SMTP 250, SMPP bind + submit ESME_ROK, policy
    DUNNO, /healthz 200), each within SERVE_AGAIN_S; seconds each took."""
    ports = daemon.ports
    return {
        "smtp": poll_until(lambda: smtp_serves(ports["smtp"]), SERVE_AGAIN_S, "SMTP 250"),
        "smpp": poll_until(lambda: smpp_serves(ports["smpp"]), SERVE_AGAIN_S, "SMPP ESME_ROK"),
        "policy": poll_until(lambda: policy_serves(ports["policy"]), SERVE_AGAIN_S, "DUNNO"),
        "http": poll_until(lambda: healthz_ok(ports["http"]), SERVE_AGAIN_S, "/healthz 200"),
    }


def wait_exhausted(daemon: LimitedDaemon, nofile: int, flooded: str) -> int:
    """Poll until the daemon holds `nofile` - 5 descriptors or more (bounded); the most
    it was seen holding."""
    peak = 0

    def exhausted() -> bool:
        nonlocal peak
        peak = max(peak, daemon.open_descriptors())
        return peak >= nofile - 5

    poll_until(exhausted, 20, f"filterd to run out of descriptors ({flooded} flood)")
    return peak


def test_descriptor_exhaustion_never_stops_the_daemon(peers: Peers) -> None:
    """RLIMIT_NOFILE = 200 and caps far above it: a flood of idle connections to the HTTP
    port, then to the SMTP port, until connect() fails or 350 are open, runs the daemon
    out of descriptors (it holds ~200); when the flood is closed, the process is still
    running and every front end serves again."""
    nofile = 200
    high: dict[str, TomlValue] = {"max_connections": 5000, "max_connections_per_address": 5000}
    daemon = peers.start(
        {
            "smtp": dict(high),
            "smpp": dict(high),
            "policy": dict(high),
            "http": {**high, "idle_timeout": "60s"},
        },
        nofile=nofile,
    )
    counts: dict[str, object] = {}
    for name in ("http", "smtp"):
        held = flood(daemon.ports[name], nofile + 150)
        try:
            peak = wait_exhausted(daemon, nofile, name)
            assert daemon.alive(), f"filterd exited during the {name} flood"
        finally:
            close_all(held)
        took = every_front_end_serves(daemon)
        counts[name] = f"flood={len(held)} peak_fds={peak} back_s=" + "/".join(
            f"{k}:{v:.1f}" for k, v in took.items()
        )
        assert daemon.alive(), f"filterd exited after the {name} flood"
    report("descriptor_exhaustion", nofile=nofile, **counts)


def test_caps_below_the_descriptor_limit_keep_every_front_end_serving(peers: Peers) -> None:
    """RLIMIT_NOFILE = 400 and [http] max_connections = 50: with 50 keep-alive HTTP
    connections held, a stream of new HTTP connections gets 503 each, and meanwhile an
    SMTP transaction gets 250, an SMPP bind + submit ESME_ROK and a policy request DUNNO;
    after the flood /healthz is 200 again."""
    daemon = peers.start(
        {"http": {"max_connections": 50, "max_connections_per_address": 50,
                  "idle_timeout": "60s"}},
        nofile=400,
    )  # fmt: skip
    ports = daemon.ports
    held: list[socket.socket] = []
    statuses: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                sock, reply = keep_alive_get(ports["http"], CLIENT)
                sock.close()
            except OSError as exc:
                statuses[type(exc).__name__] += 1
                continue
            statuses["closed" if reply is None else str(reply.status)] += 1

    thread = threading.Thread(target=hammer, daemon=True)
    try:
        for _ in range(50):
            sock, reply = keep_alive_get(ports["http"], CLIENT)
            held.append(sock)
            assert status_of(reply) == 200, reply
        thread.start()
        poll_until(lambda: sum(statuses.values()) >= 20, 30, "the HTTP flood to get going")
        smtp_code = smtp_transaction(ports["smtp"])
        session = SmppSession(ports["smpp"])
        with session.sock:
            bind, submit = session.bind(), session.submit()
        with connect(ports["policy"]) as sock:
            policy = policy_ask(sock)
        stop.set()
        thread.join(30)
    finally:
        stop.set()
        close_all(held)
    back_s = poll_until(lambda: healthz_ok(ports["http"]), SERVE_AGAIN_S, "/healthz 200")
    report("caps_below_nofile", flood=dict(statuses), smtp=smtp_code, bind=bind, submit=submit,
           policy=policy.strip(), healthz_back_s=f"{back_s:.2f}")  # fmt: skip
    assert set(statuses) == {"503"}, statuses
    assert smtp_code == 250
    assert bind == ESME_ROK
    assert submit == ESME_ROK
    assert policy == b"action=DUNNO\n\n"
    assert daemon.alive()
