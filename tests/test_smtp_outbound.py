"""The upstream connection pool against a real SMTP server (aiosmtpd sink)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiosmtplib.email import quote_address
from hypothesis import example, given
from hypothesis import strategies as st

from filterd.smtp.outbound import _PLAIN_ADDRESS, UpstreamConnection, UpstreamPool, UpstreamReply
from tests.helpers import SinkServer


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    """A recording SMTP server on loopback."""
    server = SinkServer().start()
    yield server
    server.shutdown()


async def transaction(pool: UpstreamPool, recipient: str) -> UpstreamConnection:
    """One whole transaction; the connection is released and returned."""
    connection = await pool.acquire()
    assert isinstance(connection, UpstreamConnection)
    assert (await connection.mail("s@x.test", [], False)).ok
    assert (await connection.rcpt(recipient, False)).ok
    assert (await connection.data(b"Subject: t\r\n\r\nbody\r\n")).ok
    await pool.release(connection)
    return connection


def test_connection_is_reused(sink: SinkServer) -> None:
    """Two transactions in a row go over one pooled connection."""

    async def run() -> tuple[UpstreamConnection, UpstreamConnection]:
        pool = UpstreamPool("127.0.0.1", sink.port)
        first = await transaction(pool, "a@x.test")
        second = await transaction(pool, "b@x.test")
        await pool.close()
        return first, second

    first, second = asyncio.run(run())
    assert first is second
    assert [m[1] for m in sink.handler.messages] == [["a@x.test"], ["b@x.test"]]


def test_connection_retired_after_max_uses(sink: SinkServer) -> None:
    """A connection used max_uses times is closed, not reused."""

    async def run() -> tuple[UpstreamConnection, UpstreamConnection]:
        pool = UpstreamPool("127.0.0.1", sink.port, max_uses=1)
        first = await transaction(pool, "a@x.test")
        second = await transaction(pool, "b@x.test")
        await pool.close()
        return first, second

    first, second = asyncio.run(run())
    assert first is not second
    assert not first.client.is_connected


def test_refusals_come_back_as_replies(sink: SinkServer) -> None:
    """An upstream 5xx to RCPT or DATA is returned as that reply, not raised."""
    sink.handler.refuse_rcpt["no@x.test"] = "550 5.1.1 unknown user"
    sink.handler.data_reply = "554 5.7.1 spam"

    async def run() -> tuple[UpstreamReply, UpstreamReply]:
        pool = UpstreamPool("127.0.0.1", sink.port)
        connection = await pool.acquire()
        assert isinstance(connection, UpstreamConnection)
        await connection.mail("s@x.test", [], False)
        refused = await connection.rcpt("no@x.test", False)
        await connection.rcpt("ok@x.test", False)
        data = await connection.data(b"Subject: t\r\n\r\nb\r\n")
        connection.close()
        return refused, data

    refused, data = asyncio.run(run())
    assert (refused.code, refused.message, refused.ok) == (550, "5.1.1 unknown user", False)
    assert data.line() == "554 5.7.1 spam"


def test_unreachable_upstream_is_a_temporary_reply() -> None:
    """No upstream listening: acquire() gives a 451 4.4.1 reply, no exception."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    async def run() -> UpstreamConnection | UpstreamReply:
        return await UpstreamPool("127.0.0.1", port, timeout=5).acquire()

    reply = asyncio.run(run())
    assert isinstance(reply, UpstreamReply)
    assert reply.code == 451
    assert reply.message.startswith("4.4.1")


def test_dropped_connection_is_not_reused(sink: SinkServer) -> None:
    """A pooled connection the upstream dropped is not handed out again: the next
    transaction gets a fresh connection and succeeds."""

    async def run() -> tuple[UpstreamConnection, UpstreamConnection]:
        pool = UpstreamPool("127.0.0.1", sink.port)
        first = await transaction(pool, "a@x.test")
        await asyncio.to_thread(sink.stop)
        await asyncio.to_thread(sink.start)
        second = await transaction(pool, "b@x.test")
        await pool.close()
        return first, second

    first, second = asyncio.run(run())
    assert first is not second
    assert len(sink.handler.messages) == 2


@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
@example("1rcpt@example.com")
@example("a.b+c_d-e@x-y.example")
def test_plain_recipients_are_sent_as_aiosmtplib_quotes_them(address: str) -> None:
    """For every address the pool writes itself (`RCPT TO:<address>`, skipping
    aiosmtplib's address parsing) aiosmtplib would have sent exactly those bytes."""
    assert quote_address(address) == f"<{address}>"


def test_plain_and_other_recipients_reach_the_upstream_as_given(sink: SinkServer) -> None:
    """A plain address (written by the pool itself) and one aiosmtplib quotes (a
    quoted local part; an SMTPUTF8 one) both arrive as given; the upstream's refusal
    of a plain one comes back as its reply, and the transaction goes on."""
    sink.handler.refuse_rcpt["gone@x.test"] = "550 5.1.1 unknown user"

    async def run() -> list[UpstreamReply]:
        pool = UpstreamPool("127.0.0.1", sink.port)
        connection = await pool.acquire()
        assert isinstance(connection, UpstreamConnection)
        await connection.mail("s@x.test", ["SMTPUTF8"], True)
        replies = [
            await connection.rcpt(address, True)
            for address in ("a.b+c@x.test", "gone@x.test", '"odd name"@x.test', "jö@x.test")
        ]
        replies.append(await connection.data(b"Subject: t\r\n\r\nb\r\n"))
        await pool.release(connection)
        await pool.close()
        return replies

    replies = asyncio.run(run())
    assert [r.code for r in replies] == [250, 550, 250, 250, 250]
    assert replies[1].message == "5.1.1 unknown user"
    assert [m[1] for m in sink.handler.messages] == [
        ["a.b+c@x.test", '"odd name"@x.test', "jö@x.test"]
    ]
