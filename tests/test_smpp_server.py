"""The SMPP server (filterd/smpp/server.py) end to end: `filterd serve` as a real
process with smpplib clients, a fake carrier and a real Valkey registry; reload,
connection caps and idle timeout, the deliver backlog of a receiver that stops
reading; with smpp.workers = 2, two processes on one port and deliveries through the hub."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import smpplib.exceptions
import smpplib.smpp

from filterd.config.load import load as load_config
from filterd.model import Kind
from filterd.smpp import server as server_module
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from tests.helpers import RedisProcess
from tests.smpp_relay_helpers import (
    JANE,
    NUMBER,
    SIGNATURE,
    Client,
    Relay,
    bound_peer,
    compliance,
    config,
    free_port,
    in_process_relay,
    next_pdu,
    running_relay,
    udh_parts,
)


def test_sighup_reloads_accounts_without_dropping_binds(smpp_relay: Relay) -> None:
    """A new [[smpp.accounts]] entry works after SIGHUP, and a client bound before
    the reload stays bound and keeps submitting."""
    assert smpp_relay.home is not None
    assert smpp_relay.log is not None
    before = smpp_relay.client()
    config_path = smpp_relay.home / "filterd.toml"
    config_path.write_text(
        config_path.read_text() + '\n[[smpp.accounts]]\nsystem_id = "late"\npassword = "late-pw1"\n'
        'sender = "acme"\nstream = "transactional"\n'
    )
    smpp_relay.process.send_signal(signal.SIGHUP)
    assert smpp_relay.log.wait_for("reloaded")["restart_needed"] is None
    after = smpp_relay.client(system_id="late", password="late-pw1")  # noqa: S106
    assert after.submit(JANE)[0] == "ok"  # transactional: delivered
    assert before.submit(JANE) == ("error", 0x401)  # still bound: decided (no consent)
    assert smpp_relay.process.poll() is None


def test_connection_caps_and_idle_timeout(valkey_server: RedisProcess) -> None:
    """Beyond max_connections_per_address a connection is closed at once, nothing said;
    a silent connection is closed after idle_timeout; a bound client whose only traffic
    is enquire_link stays bound past it."""
    extra = 'idle_timeout = "1s"\nmax_connections_per_address = 2'
    with running_relay(valkey_server, extra=extra) as relay:
        bound = relay.client()
        silent = socket.create_connection(("127.0.0.1", relay.port), timeout=15)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as third:
            assert third.recv(1024) == b""
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # past the idle timeout, talking all along
            bound.smpp.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=bound.smpp))
            bound.smpp.read_pdu()
            time.sleep(0.25)
        assert silent.recv(1024) == b""
        silent.close()
        assert bound.submit(JANE) == ("error", 0x401)  # still bound, still judged


MO = DeliverSm(
    sequence_number=9, source_addr_ton=1, source_addr="8613800138000",
    destination_addr="10690001", short_message=b"hello there",
)  # fmt: skip


def test_a_receiver_that_stops_reading_gets_no_more_than_the_backlog(
    valkey_server: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client bound as receiver that never reads (a real TCP peer with a small
    receive buffer): deliver_sm for it are queued up to DELIVER_BACKLOG bytes, then
    refused for that bind (deliver_local False: undeliverable, logged), so filterd's
    buffer for it stays bounded."""
    monkeypatch.setattr(server_module, "DELIVER_BACKLOG", 64 * 1024)
    settings = load_config(config(tmp_path, valkey_server.url, free_port()))
    smpp = settings.smpp
    assert smpp is not None

    async def scenario() -> tuple[int, int]:
        async with in_process_relay(smpp, valkey_server.url) as (relay, port):
            peer = await bound_peer(port, BindReceiver)
            [session] = relay.sessions
            assert session.receives
            sent = 0
            while relay.deliver_local("promo", MO):
                sent += 1
                assert sent < 200_000, "the backlog is not bounded"
                if sent % 100 == 0:
                    await asyncio.sleep(0)  # let the transport write what the kernel takes
            waiting = session.writer.transport.get_write_buffer_size()
            peer.close()
            return sent, waiting

    sent, waiting = asyncio.run(scenario())
    assert sent > 0
    assert 64 * 1024 <= waiting < 64 * 1024 + len(encode(MO)) + 64


# ---- smpp.workers = 2: two processes on one port, deliveries through the hub ------------


@pytest.fixture
def workers(valkey_server: RedisProcess) -> Iterator[Relay]:
    """filterd with smpp.workers = 2 (the main process and one worker) on one fixed port,
    each process bound to the fake carrier."""
    with running_relay(valkey_server, workers=2) as relay:
        yield relay


def client_on(relay: Relay, pid: int, tries: int = 64) -> Client:
    """A bound transceiver client served by process `pid` (told by the pid of the "bound"
    log line); clients that land on the other process are closed again."""
    assert relay.log is not None
    for _ in range(tries):
        client = relay.client()
        if relay.log.wait_for("bound")["pid"] == pid:
            return client
        relay.clients.remove(client)
        client.close()
    raise AssertionError(f"no client landed on process {pid} in {tries} binds")


def read_deliveries(client: Client, count: int) -> list[Any]:
    """Read until the client has received `count` deliver_sm; return and clear them."""
    while len(client.received) < count:
        client.smpp.read_once()
    received, client.received[:] = list(client.received), []
    return received


def text_id(message_id: str | bytes) -> bytes:
    """A message id as smpplib gives it, in bytes."""
    return message_id if isinstance(message_id, bytes) else message_id.encode()


def test_two_processes_share_the_smpp_port(workers: Relay) -> None:
    """With smpp.workers = 2 the main process and one worker both listen on the one port
    and both bind to the carrier; clients land on each (told apart by the pid of the
    "bound" log line), and a submit through either is relayed to the carrier."""
    workers.record(JANE, Kind.CONSENT)
    assert set(workers.pids) == {"main", "smpp-worker"}
    assert workers.smsc.links == 2
    for pid in workers.pids.values():
        client = client_on(workers, pid)
        assert client.submit(JANE)[0] == "ok"
        client.close()
    forwarded = workers.smsc.wait_submits(2)
    assert [p.destination_addr for p in forwarded] == [JANE, JANE]


def test_receipts_and_mo_reach_a_client_in_the_other_process(workers: Relay) -> None:
    """The client's receiver bind is in one process; a receipt and an MO sent on each
    process's carrier bind both reach it: the copy that arrives in the other process is
    passed on through the parent's hub. True with the client in the main process and
    with the client in the worker."""
    workers.record(JANE, Kind.CONSENT)
    for round_, pid in enumerate(workers.pids.values(), 1):
        client = client_on(workers, pid)
        _, client_id = client.submit(JANE)
        workers.smsc.wait_submits(round_)
        for link in range(2):
            assert workers.smsc.send_receipt(f"c{round_}", link=link) == 0
        receipts = read_deliveries(client, 2)
        assert all(b"id:" + text_id(client_id) in r.short_message for r in receipts)
        for link in range(2):
            assert workers.smsc.send_mo(JANE, NUMBER, b"hello there", link=link) == 0
        assert [p.short_message for p in read_deliveries(client, 2)] == [b"hello there"] * 2
        workers.clients.remove(client)
        client.close()


def test_killed_worker_is_restarted_and_clients_bind_again(workers: Relay) -> None:
    """kill -9 of the SMPP worker: its clients lose the connection, `filterd serve` starts
    a new worker, which listens, binds to the carrier and joins the hub: a client that
    binds again on it submits, and its receipts arrive whichever carrier bind they take."""
    assert workers.log is not None
    workers.record(JANE, Kind.CONSENT)
    old = workers.pids["smpp-worker"]
    victim = client_on(workers, old)
    os.kill(old, signal.SIGKILL)
    with pytest.raises((smpplib.exceptions.ConnectionError, OSError)):
        victim.smpp.read_pdu()
    died = workers.log.wait_for("worker_died")
    assert (died["front_end"], died["pid"]) == ("smpp", old)
    restarted = workers.log.wait_for("listening")
    assert restarted["role"] == "smpp-worker"
    assert restarted["pid"] != old
    workers.smsc.wait_bound(links=2, total=3)
    client = client_on(workers, int(restarted["pid"]))  # type: ignore[call-overload]
    kind, client_id = client.submit(JANE)
    assert kind == "ok"
    [forwarded] = workers.smsc.wait_submits(1)
    assert forwarded.destination_addr == JANE
    for link in range(2):
        assert workers.smsc.send_receipt("c1", link=link) == 0
    receipts = read_deliveries(client, 2)
    assert all(b"id:" + text_id(client_id) in r.short_message for r in receipts)


def test_sigterm_drains_every_process(workers: Relay) -> None:
    """SIGTERM to `filterd serve` with a client on each process: both processes drain
    their SMPP front end (logged with their pids), the worker exits, and filterd exits 0."""
    assert workers.log is not None
    for pid in workers.pids.values():
        client_on(workers, pid)
    workers.process.send_signal(signal.SIGTERM)
    drained = [workers.log.wait_for("drained") for _ in range(2)]
    assert {entry["pid"] for entry in drained} == set(workers.pids.values())
    assert workers.process.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(workers.pids["smpp-worker"], 0)


def test_worker_exits_when_main_is_killed(valkey_server: RedisProcess) -> None:
    """kill -9 of `filterd serve`: its SMPP worker is told by the parent-death signal and
    exits by itself; nothing is left serving the port."""
    with running_relay(valkey_server, workers=2, exit_code=-signal.SIGKILL) as relay:
        pidfd = os.pidfd_open(relay.pids["smpp-worker"])
        try:
            relay.process.kill()
            relay.process.wait(30)
            assert select.select([pidfd], [], [], 30)[0] == [pidfd], "the worker still runs"
        finally:
            os.close(pidfd)


def test_stopping_answers_held_parts_at_once(valkey_server: RedisProcess, tmp_path: Path) -> None:
    """At shutdown a part held for the other parts of its message (the [compliance] text
    rules) is answered at once, before the unbind: 0x403, the message can no longer be
    whole (hold_s is an hour here)."""
    tables = compliance("require")
    settings = load_config(config(tmp_path, valkey_server.url, free_port(), tables=tables))
    smpp = settings.smpp
    assert smpp is not None
    first = udh_parts([SIGNATURE + "尊敬的客户，", "全场八折。"])[0]

    async def scenario() -> list[tuple[type, int, int]]:
        options = {"compliance": settings.compliance, "hold_s": 3600}
        async with in_process_relay(smpp, valkey_server.url, **options) as (relay, port):
            peer = await bound_peer(port, BindTransceiver)
            submit = SubmitSm(sequence_number=2, dest_addr_ton=1, destination_addr=JANE,
                              esm_class=0x40, data_coding=8, short_message=first)  # fmt: skip
            ping = EnquireLink(sequence_number=3)
            await asyncio.get_running_loop().sock_sendall(peer, encode(submit) + encode(ping))
            framer = Framer()
            answers = [await next_pdu(peer, framer)]  # the enquire_link_resp: the part is held
            await asyncio.wait_for(relay.unbind_all(), 30)
            answers += [await next_pdu(peer, framer) for _ in range(2)]
            peer.close()
        return [(type(a), a.sequence_number, a.command_status) for a in answers]

    assert asyncio.run(scenario()) == [
        (EnquireLinkResp, 3, 0),
        (SubmitSmResp, 2, 0x403),
        (Unbind, 1, 0),
    ]
