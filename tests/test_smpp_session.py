"""A client's session with the SMPP server (filterd/smpp/session.py), end to end:
binds judged inside the login gate, requests before a bind, unknown responses, and a
client that does not read its answers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions

from filterd.config.load import load as load_config
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import BindTransceiver, EnquireLink, SubmitSm
from filterd.smpp.server import SmppRelay
from tests.helpers import RedisProcess
from tests.smpp_relay_helpers import JANE, Relay, bound_peer, config, free_port, in_process_relay


def test_wrong_password_is_refused_and_closed(smpp_relay: Relay) -> None:
    """A wrong password gets ESME_RINVPASWD (0x0E) and the connection is closed."""
    smpp = smpplib.client.Client(
        "127.0.0.1", smpp_relay.port, timeout=10, allow_unknown_opt_params=True
    )
    smpp.connect()
    with pytest.raises(smpplib.exceptions.PDUError) as error:
        smpp.bind_transceiver(system_id="promo", password="wrong")  # noqa: S106
    assert error.value.args[1] == 0x0E
    with pytest.raises((smpplib.exceptions.ConnectionError, OSError)):
        smpp.read_pdu()  # the server has closed the connection
    smpp.disconnect()


def _wrong_bind(relay: Relay) -> None:
    """One bind with a wrong password, answered 0x0E."""
    smpp = smpplib.client.Client("127.0.0.1", relay.port, timeout=40, allow_unknown_opt_params=True)
    smpp.connect()
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as error:
            smpp.bind_transmitter(system_id="promo", password="guess")  # noqa: S106
        assert error.value.args[1] == 0x0E
    finally:
        smpp.disconnect()


def test_failed_binds_make_every_next_bind_from_that_peer_wait(smpp_relay: Relay) -> None:
    """After a wrong password, the peer's next bind, right or wrong, is checked only
    after the back-off (0.5 s, doubling per failure); a successful bind clears the
    peer's record, so the next failure starts afresh."""
    assert smpp_relay.log is not None
    _wrong_bind(smpp_relay)  # the first failure: judged at once
    _wrong_bind(smpp_relay)  # waits 0.5 s
    smpp_relay.client()  # the right password: waits 1 s, is accepted, clears the record
    _wrong_bind(smpp_relay)  # judged at once again
    _wrong_bind(smpp_relay)  # waits 0.5 s
    delays = [smpp_relay.log.wait_for("login_delayed")["delay_s"] for _ in range(3)]
    assert delays == [0.5, 1.0, 0.5]


def _raw_bind(port: int, password: str) -> tuple[socket.socket, float, int]:
    """Send a bind_transceiver on a new connection; (socket, seconds to its answer, status)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=40)
    bind = BindTransceiver(sequence_number=1, system_id="promo", password=password)
    started = time.monotonic()
    sock.sendall(encode(bind))
    framer = Framer()
    while (pdu := framer.next_pdu()) is None:
        chunk = sock.recv(4096)
        assert chunk, "closed without an answer"
        framer.feed(chunk)
    return sock, time.monotonic() - started, pdu.command_status


def test_after_a_failure_a_right_password_is_not_answered_sooner(smpp_relay: Relay) -> None:
    """The timing oracle is closed: after one wrong password from an address, a bind
    with the right password (on a new connection) is answered only after the back-off,
    as a wrong one would be; so a client that gives up early learns nothing."""
    wrong, took, status = _raw_bind(smpp_relay.port, "guess-1")
    assert status == 0x0E
    wrong.close()
    right, took, status = _raw_bind(smpp_relay.port, "chg-me-1")
    assert status == 0
    assert took >= 0.5  # a lower bound: the gate sleeps at least the back-off
    right.close()


def test_submit_before_bind(smpp_relay: Relay) -> None:
    """A submit_sm on an unbound connection gets ESME_RINVBNDSTS (0x04)."""
    with socket.create_connection(("127.0.0.1", smpp_relay.port), timeout=10) as sock:
        sock.sendall(encode(SubmitSm(sequence_number=7, destination_addr=JANE)))
        framer = Framer()
        while (pdu := framer.next_pdu()) is None:
            framer.feed(sock.recv(4096))
        assert (pdu.command_status, pdu.sequence_number) == (0x04, 7)


def test_unknown_response_from_client_is_ignored(smpp_relay: Relay) -> None:
    """A client's unknown response PDU does not end its session: enquire_link still answered."""
    with socket.create_connection(("127.0.0.1", smpp_relay.port), timeout=10) as sock:
        bind = BindTransceiver(sequence_number=1, system_id="promo", password="chg-me-1")  # noqa: S106
        sock.sendall(encode(bind))
        sock.sendall((16).to_bytes(4, "big") + (0x80000021).to_bytes(4, "big") + bytes(8))
        sock.sendall(encode(EnquireLink(sequence_number=2)))
        framer = Framer()
        answers = []
        while len(answers) < 2:
            framer.feed(sock.recv(4096))
            while (pdu := framer.next_pdu()) is not None:
                answers.append(pdu)
        assert [(type(p).__name__, p.command_status) for p in answers] == [
            ("BindTransceiverResp", 0), ("EnquireLinkResp", 0),
        ]  # fmt: skip


def test_a_client_that_does_not_read_its_answers_is_not_read_either(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """A transceiver that sends 200,000 enquire_link without reading the answers (a real
    TCP peer with a small receive buffer): filterd stops reading it once its answers
    pass the write buffer's high-water mark, so they stay bounded (not 3 MB of answers in
    memory); when the client reads again every request gets its one answer."""
    settings = load_config(config(tmp_path, valkey_server.url, free_port()))
    smpp = settings.smpp
    assert smpp is not None
    requests = 200_000
    links = b"".join(encode(EnquireLink(sequence_number=n)) for n in range(2, requests + 2))

    async def scenario() -> tuple[int, int]:
        async with in_process_relay(smpp, valkey_server.url) as (relay, port):
            return await flood(relay, port)

    async def flood(relay: SmppRelay, port: int) -> tuple[int, int]:
        peer = await bound_peer(port, BindTransceiver)
        loop = asyncio.get_running_loop()
        [session] = relay.sessions
        # a small kernel send buffer on filterd's side too, so that what the kernel does
        # not take waits in filterd's own buffer (loopback would take megabytes)
        own = session.writer.get_extra_info("socket")
        own.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sending = loop.create_task(loop.sock_sendall(peer, links))
        most = 0
        for _ in range(200):  # 2 s of not reading
            await asyncio.sleep(0.01)
            most = max(most, session.writer.transport.get_write_buffer_size())
        received = bytearray()
        while len(received) < requests * 16:  # enquire_link_resp: a 16-octet header
            chunk = await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), 30)
            assert chunk, "filterd closed the connection"
            received += chunk
        await sending
        answers = {int.from_bytes(received[i + 12 : i + 16], "big")
                   for i in range(0, len(received), 16)}  # fmt: skip
        peer.close()
        return most, len(answers)

    most, answered = asyncio.run(scenario())
    assert most <= 256 * 1024, f"{most:,} octets of answers waited for a client not reading"
    assert answered == requests
