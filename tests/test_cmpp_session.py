"""A client's session with the CMPP server (filterd/cmpp/session.py), end to end over
loopback: CONNECT judged inside the login gate (Status 2 / 3 / 4, then closed; the
back-off after a failure), 2.0 and 3.0 sessions, messages before a login, the window,
ACTIVE_TEST both ways, TERMINATE, and what a session rewrites in its own layout."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import pytest

from filterd.cmpp.auth import authenticator_ismg
from filterd.cmpp.header import HEADER, SUBMIT, V20, V30
from filterd.cmpp.pdu import (
    ActiveTest,
    ActiveTestResp,
    ConnectResp,
    Deliver,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.report import StatusReport, decode_report, encode_report, report_deliver
from filterd.cmpp.server import CmppRelay
from filterd.model import Kind
from tests.cmpp_ismg import FakeIsmg
from tests.cmpp_relay_helpers import (
    JANE,
    SP_ID,
    SP_SECRET,
    CmppClient,
    connect_pdu,
    in_process_relay,
    limits,
    record,
    settings,
    submit_pdu,
)
from tests.helpers import RedisProcess

Body = Callable[[CmppRelay, int], Awaitable[None]]


def run(
    registry: RedisProcess,
    body: Body,
    ismg: FakeIsmg | None = None,
    drain_s: float = 30.0,
    **options: object,
) -> None:
    """Run `body(relay, port)` against an in-process relay ([cmpp] `options`)."""

    async def main() -> None:
        cmpp = settings(ismg, **options)
        async with in_process_relay(cmpp, registry.url, drain_s=drain_s) as (relay, port):
            await body(relay, port)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("sp_id", "secret", "version", "status"),
    [
        ("900009", SP_SECRET, V30, 2),
        (SP_ID, "wrong", V30, 3),
        (SP_ID, "wrong", V20, 3),
        (SP_ID, SP_SECRET, 0x31, 4),
    ],
    ids=["unknown-sp-id", "wrong-secret", "wrong-secret-2.0", "version-above-3.0"],
)
def test_refused_connect_gets_its_status_and_is_closed(
    valkey_server: RedisProcess, sp_id: str, secret: str, version: int, status: int
) -> None:
    """An unknown Source_Addr gets Status 2, a wrong AuthenticatorSource 3, a Version
    above 0x30 Status 4 (in the layout of the version asked for, 3.0 when not served),
    with an empty AuthenticatorISMG; then the connection is closed."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        layout = V20 if version == V20 else V30
        client.framer.version = client.version = layout
        client.send(connect_pdu(1, sp_id, secret, version))
        answer = await client.read()
        assert isinstance(answer, ConnectResp)
        assert (answer.sequence_id, answer.status) == (1, status)
        assert answer.authenticator_ismg == bytes(16)
        assert await client.closed()
        await client.close()

    run(valkey_server, body)


@pytest.mark.parametrize("version", [V20, V30])
def test_accepted_connect_speaks_its_version(valkey_server: RedisProcess, version: int) -> None:
    """A right login gets Status 0, the AuthenticatorISMG MD5(Status, AuthenticatorSource,
    secret) and the session's version, and the session then reads and answers in that
    version's layout (a submit's Result in 1 octet for 2.0, 4 for 3.0)."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        client.version = client.framer.version = version
        connect = connect_pdu(1, SP_ID, SP_SECRET, version)
        client.send(connect)
        answer = await client.read()
        assert isinstance(answer, ConnectResp)
        assert (answer.status, answer.version) == (0, version)
        source = connect.authenticator_source
        assert answer.authenticator_ismg == authenticator_ismg(0, source, SP_SECRET, version)
        expected = hashlib.md5(
            (0).to_bytes(1 if version == V20 else 4, "big") + source + SP_SECRET.encode(),
            usedforsecurity=False,
        ).digest()
        assert answer.authenticator_ismg == expected
        # no upstream: a permitted submit is answered 8 (flow control), in the version
        client.send(submit_pdu(7, (JANE,)))
        raw = await asyncio.wait_for(client.reader.read(65536), 30)
        length, command_id, sequence_id = HEADER.unpack_from(raw)
        assert (command_id, sequence_id) == (SUBMIT | 0x80000000, 7)
        assert length == 12 + 8 + (1 if version == V20 else 4)
        assert raw[-1] == 8
        await client.close()

    async def consent_then(relay: CmppRelay, port: int) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        await body(relay, port)

    run(valkey_server, consent_then)


def test_failed_connects_make_every_next_connect_from_that_peer_wait(
    valkey_server: RedisProcess,
) -> None:
    """After a wrong authenticator, the peer's next CONNECT, right or wrong, is judged
    only after the back-off (0.5 s, doubling per failure); a success clears it."""

    async def attempt(port: int, secret: str) -> float:
        client = await CmppClient.open(port)
        started = time.monotonic()
        answer = await client.connect(secret=secret)
        took = time.monotonic() - started
        assert answer.status == (0 if secret == SP_SECRET else 3)
        await client.close()
        return took

    async def body(relay: CmppRelay, port: int) -> None:
        first = await attempt(port, "wrong")
        second = await attempt(port, "wrong")
        right = await attempt(port, SP_SECRET)
        after = await attempt(port, "wrong")
        assert first < 0.5
        assert second >= 0.45
        assert right >= 0.95
        assert after < 0.5

    run(valkey_server, body)


def test_messages_before_connect_close_the_connection(valkey_server: RedisProcess) -> None:
    """A client that sends anything but CMPP_CONNECT first is closed, unanswered; a
    CONNECT the codec cannot read is answered Status 1 and closed."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        client.send(submit_pdu(1, (JANE,)))
        assert await client.closed()
        assert client.received == []
        await client.close()
        broken = await CmppClient.open(port)
        broken.writer.write(HEADER.pack(12 + 5, 0x00000001, 9) + b"90000")  # body cut short
        answer = await broken.read()
        assert isinstance(answer, ConnectResp)
        assert (answer.sequence_id, answer.status) == (9, 1)
        assert await broken.closed()
        await broken.close()

    run(valkey_server, body)


def test_active_test_terminate_and_a_second_connect(valkey_server: RedisProcess) -> None:
    """CMPP_ACTIVE_TEST is answered; a second CONNECT on a logged-in session gets Status
    5 and the session goes on; CMPP_TERMINATE is answered and the connection closes."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        assert (await client.connect()).status == 0
        client.send(ActiveTest(41))
        assert await client.read() == ActiveTestResp(41)
        client.send(connect_pdu(42, SP_ID, SP_SECRET, V30))
        again = await client.read()
        assert isinstance(again, ConnectResp)
        assert (again.sequence_id, again.status) == (42, 5)
        client.send(Terminate(43))
        assert await client.read() == TerminateResp(43)
        assert await client.closed()
        await client.close()

    run(valkey_server, body)


def test_server_sends_active_test_to_a_quiet_client_and_closes_a_dead_one(
    valkey_server: RedisProcess,
) -> None:
    """After half the idle timeout without traffic the server sends CMPP_ACTIVE_TEST; a
    client that never answers is closed at the idle timeout."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        assert (await client.connect()).status == 0
        started = time.monotonic()
        probe = await client.read(10)
        assert isinstance(probe, ActiveTest)
        assert 0.5 <= time.monotonic() - started < 5
        assert await client.closed(10)  # no answer, nothing else sent: closed
        assert 1.0 <= time.monotonic() - started < 10
        await client.close()

    run(valkey_server, body, limits=limits(idle_s=2.0))


def test_window_full_answers_flow_control(valkey_server: RedisProcess) -> None:
    """With cmpp.window = 1 and the ISMG not answering, a second submit in flight gets
    Result 8 at once."""
    ismg = FakeIsmg().start()
    ismg.answer_submits = False

    async def body(relay: CmppRelay, port: int) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        client = await CmppClient.open(port)
        assert (await client.connect()).status == 0
        client.send(submit_pdu(1, (JANE,)))
        await asyncio.to_thread(ismg.wait_submits, 1)
        client.send(submit_pdu(2, (JANE,)))
        answer = await client.read()
        assert answer == SubmitResp(2, msg_id=0, result=8)
        await client.close()

    try:
        run(valkey_server, body, ismg=ismg, drain_s=0.5, window=1)
    finally:
        ismg.shutdown()


def test_status_report_in_the_other_layout_is_rewritten(valkey_server: RedisProcess) -> None:
    """A status report handed to a 2.0 session in the 3.0 layout (71 octets) reaches the
    client in the 2.0 layout (60 octets), the same report; forward() finds the account's
    live connection, and no connection of another account."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        assert (await client.connect(version=V20)).status == 0
        report = StatusReport(77, "DELIVRD", "2612071000", "2612071001", JANE, 5)
        deliver = report_deliver(report, V30, sequence_id=0, msg_id=99, dest_id="10690001")
        assert len(deliver.msg_content) == 71
        assert not relay.forward("900002", deliver)
        assert relay.forward(SP_ID, deliver)
        got = await client.read()
        assert isinstance(got, Deliver)
        assert len(got.msg_content) == 60
        assert decode_report(got.msg_content, V20) == report
        assert got.msg_content == encode_report(report, V20)
        await client.close()

    run(valkey_server, body)


def test_connect_with_a_version_below_2_is_refused(valkey_server: RedisProcess) -> None:
    """A right login asking for Version 0x10 gets Status 5 and is closed."""

    async def body(relay: CmppRelay, port: int) -> None:
        client = await CmppClient.open(port)
        client.send(connect_pdu(1, SP_ID, SP_SECRET, 0x10))
        answer = await client.read()
        assert isinstance(answer, ConnectResp)
        assert answer.status == 5
        assert await client.closed()
        await client.close()

    run(valkey_server, body)
