"""The message routes of forwarded submits (filterd/routebook.py): found in memory at
once, written to the registry behind the answer with their expiry, tried again while
the registry is down, bounded, and given their chance to land at shutdown."""

from __future__ import annotations

import asyncio

from filterd.routebook import RouteBook
from filterd.storage import keys
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess, until


def test_a_route_is_found_at_once_and_then_stored(valkey_server: RedisProcess) -> None:
    """A route added is found in the same turn (from memory), then lands in the
    registry with its expiry and leaves the book."""

    async def main() -> None:
        registry = RedisRegistry.from_url(valkey_server.url)
        book = RouteBook(registry, "cmpp")
        for i in range(50):
            book.add(f"cmpp:{i}", "900001", str(1000 + i), 600)
        assert await book.find("cmpp:7") == ("900001", "1007")
        assert book.pending == 50
        await until("routes written", lambda: book.pending == 0)
        assert await registry.find_message("cmpp:49") == ("900001", "1049")
        assert await book.find("cmpp:7") == ("900001", "1007")
        assert await book.find("cmpp:99") is None
        await registry.close()

    asyncio.run(main())
    ttl = valkey_server.command(f"TTL {keys.message_key('cmpp:3')}".encode())
    assert ttl is not None
    assert 0 < int(ttl.lstrip(b":")) <= 600


def test_a_failed_write_is_tried_again_and_the_route_kept(
    private_server: RedisProcess,
) -> None:
    """While the registry is down the route stays in memory (reports find it) and its
    write is tried again; once the registry is back the route is stored."""

    async def main() -> None:
        registry = RedisRegistry.from_url(private_server.url)
        await registry.remember_message("warm", "sp", "0", 60)  # the link is open
        private_server.stop()
        book = RouteBook(registry, "cmpp")
        book.add("cmpp:5", "900001", "42", 600)
        await asyncio.sleep(0.5)  # a few tries fail
        assert book.pending == 1
        assert await book.find("cmpp:5") == ("900001", "42")
        await asyncio.to_thread(private_server.start)
        await until("route written", lambda: book.pending == 0)
        assert await registry.find_message("cmpp:5") == ("900001", "42")
        await registry.close()

    asyncio.run(main())


def test_routes_past_the_limit_are_not_kept(valkey_server: RedisProcess) -> None:
    """With `limit` routes pending, one more is neither kept nor written (logged as not
    mapped): the book's memory is bounded while the registry is slow or down."""

    async def main() -> None:
        registry = RedisRegistry.from_url(valkey_server.url)
        book = RouteBook(registry, "cmpp", limit=2)
        for i in range(3):
            book.add(f"cmpp:{i}", "900001", str(i), 600)
        assert book.pending == 2
        await until("routes written", lambda: book.pending == 0)
        assert await book.find("cmpp:1") == ("900001", "1")
        assert await book.find("cmpp:2") is None
        await registry.close()

    asyncio.run(main())


def test_settle_lets_pending_writes_land_then_gives_up(private_server: RedisProcess) -> None:
    """At shutdown the pending writes land; with the registry down, settle returns after
    its timeout and the routes still pending are dropped."""

    async def main() -> None:
        registry = RedisRegistry.from_url(private_server.url)
        book = RouteBook(registry, "cmpp")
        book.add("cmpp:1", "900001", "1", 600)
        await book.settle(30)
        assert book.pending == 0
        assert await registry.find_message("cmpp:1") == ("900001", "1")
        private_server.stop()
        book.add("cmpp:2", "900001", "2", 600)
        await book.settle(0.3)
        assert book.pending == 0
        await registry.close()

    asyncio.run(main())


def test_each_relay_s_keys_are_stored_as_the_registry_holds_them(
    valkey_server: RedisProcess,
) -> None:
    """An SMPP carrier's message id and a CMPP `cmpp:<Msg_Id>` are written under the
    registry's message key of that id (routes written before stay readable), and a
    book of either relay finds the other's once stored."""

    async def main() -> None:
        registry = RedisRegistry.from_url(valkey_server.url)
        smpp, cmpp = RouteBook(registry, "smpp"), RouteBook(registry, "cmpp")
        smpp.add("4f2a0c", "promo", "9c1e5d7a3b2f4e6d", 600)
        cmpp.add("cmpp:77", "900002", "123456789", 600)
        await smpp.settle(30)
        await cmpp.settle(30)
        assert await cmpp.find("4f2a0c") == ("promo", "9c1e5d7a3b2f4e6d")
        assert await smpp.find("cmpp:77") == ("900002", "123456789")
        await registry.close()

    asyncio.run(main())
    for carrier_id in ("4f2a0c", "cmpp:77"):
        assert valkey_server.command(f"EXISTS {keys.message_key(carrier_id)}".encode()) == b":1"
