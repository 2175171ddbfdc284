"""One policy connection (filterd/policy_connection.py) against a real Valkey registry,
over real sockets: answers in request order however the requests arrive, a client
that half-closes, and a client that pipelines far ahead without reading its replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from filterd.accounts import AccountBook
from filterd.identity import ConsumerHasher
from filterd.model import FactRequest, Kind, MessageClass
from filterd.normalize import normalize
from filterd.policy_connection import MAX_WAITING
from filterd.policy_service import start_policy_server
from filterd.service import Service
from filterd.settings import SmtpAccount
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess
from tests.policy_helpers import BOB, CAROL, JANE, request

TIMEOUT = 20.0
ACCOUNTS = AccountBook(
    [SmtpAccount("newsletter", "acme", MessageClass.COMMERCIAL, password="pw")]  # noqa: S106
)
REPLIES = {
    JANE: b"action=DUNNO\n\n",
    BOB: f"action=550 5.7.1 <{BOB}>: recipient has refused commercial messages\n\n".encode(),
    CAROL: f"action=550 5.7.1 <{CAROL}>: no consent or request on record\n\n".encode(),
}


@pytest.fixture
def port(valkey_server: RedisProcess, event_loop_runner: asyncio.Runner) -> Iterator[int]:
    """A policy server (jane consented, bob refused, carol nothing); its port."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = Service(registry, ConsumerHasher(b"p" * 32), request_ttl_s=3600)
    run = event_loop_runner.run
    for address, kind in ((JANE, Kind.CONSENT), (BOB, Kind.REFUSAL)):
        fact = FactRequest(normalize(address), kind, "acme", normalize(address).channel, "t")
        run(service.record(fact, origin="test"))
    server = run(start_policy_server(("127.0.0.1", 0), service, ACCOUNTS, default_region=None))
    yield server.sockets[0].getsockname()[1]
    server.close()
    run(asyncio.wait_for(server.wait_closed(), TIMEOUT))
    run(service.close())
    run(registry.close())


def test_half_closed_client_gets_its_answers(port: int, event_loop_runner: asyncio.Runner) -> None:
    """A client that sends its requests and closes its sending side (as `nc -N` does) gets
    every answer, in order, then the server closes."""
    order = [BOB, JANE, CAROL]

    async def go() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(request(r) for r in order))
        writer.write_eof()
        answers = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        return answers

    assert event_loop_runner.run(go()) == b"".join(REPLIES[r] for r in order)


def test_far_pipelined_requests_unread_replies_all_answered_in_order(
    port: int, event_loop_runner: asyncio.Runner
) -> None:
    """Thousands of requests written in one go (far more than MAX_WAITING, lookups and
    ready answers mixed), their replies left unread for a while (the server stops
    reading while it is that far behind): nothing is lost, every reply comes in order."""
    order = [JANE, BOB, CAROL, "not-an-address"] * (10 * MAX_WAITING)
    data = b"".join(request(r) for r in order) + b"\n" * 500
    expected = [REPLIES.get(r, b"") for r in order]

    async def go() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await asyncio.sleep(0.5)  # replies pile up unread
        replies = [
            await asyncio.wait_for(reader.readuntil(b"\n\n"), TIMEOUT)
            for _ in range(len(order) + 500)
        ]
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        return replies

    replies = event_loop_runner.run(go())
    assert [r for r, e in zip(replies, expected, strict=False) if e] == [e for e in expected if e]
    assert all(
        r.startswith(b"action=553 5.1.3 <not-an-address>") for r in replies[3 : len(order) : 4]
    )
    assert replies[len(order) :] == [b"action=DUNNO\n\n"] * 500
