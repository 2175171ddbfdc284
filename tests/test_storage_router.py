"""The one-server router (filterd/storage/router.py): every key on its one server,
reads of (key, field) pairs with the sender's id in one round trip."""

from __future__ import annotations

import asyncio

from filterd.storage import keys
from filterd.storage.connection import connect
from filterd.storage.router import ServerRouter
from tests.helpers import RedisProcess


def test_one_server_holds_every_key(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """client() is the same client for any key and primaries() is that one; read()
    gives the sender's id (-1 when it has none) and each field's value, in order."""

    async def scenario() -> list[object]:
        router = ServerRouter(connect(valkey_server.url))
        try:
            client = await router.client(keys.AUDIT)
            assert client is await router.client(keys.facts_key(bytes(10), 16))
            assert await router.primaries() == [client]
            await client.hset(keys.SENDERS, "acme", 7)
            await client.hset("fd:r:{0000}", b"f1", b"v1")
            known = await router.read("acme", [("fd:r:{0000}", b"f1"), ("fd:r:{0000}", b"f2")])
            unknown = await router.read("other", [])
            return [known, unknown]
        finally:
            await router.close()

    known, unknown = event_loop_runner.run(scenario())
    assert known == (7, [b"v1", None])
    assert unknown == (-1, [])
