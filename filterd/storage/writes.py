"""The write path: a durable pipeline on the server holding a key.

`Writer.run` builds a pipeline, ends it with the server's WAITAOF/WAIT
(durability.py) and checks the reply; before the first write to a server it
fixes the key layout (bucket_bits, format) and probes the server once. A
NOSCRIPT reply loads the scripts and sends the pipeline once more. A failed
write forgets what was learnt of the server (a failover may bring another one)
and is raised as the error it means: READONLY (a replica now) → unavailable,
a refused WAIT or appendonly → NotDurable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError

from filterd.errors import ConfigError, NotDurable
from filterd.storage import keys, scripts
from filterd.storage.durability import Durability

if TYPE_CHECKING:
    from filterd.storage.router import Router


class Writer:
    """Durable pipelines through a router; the layout check; what a failed write means."""

    def __init__(
        self, router: Router, durability: Durability, bucket_bits: int, forget: Callable[[], None]
    ) -> None:
        self.router = router
        self.durability = durability
        self.bits = bucket_bits
        self._forget = forget
        """Forget what is cached of the server's data (the interned names)."""
        self._layout_checked = False

    async def run(
        self, build: Callable[[Any], None], *, durable: bool = False, key: str = keys.LAYOUT
    ) -> list[Any]:
        """Build and run a pipeline on the server holding `key` (every key the
        pipeline names must live there); load the scripts and retry once on
        NOSCRIPT. With `durable`, return only after the server confirms the
        writes on disk. RedisError or OSError when the server fails."""
        client = await self.router.client(key)
        if durable:
            await self.prepare(client)
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            build(pipe)
            waits = self.durability.wait_commands(client) if durable else []
            for wait in waits:
                pipe.execute_command(*wait)
            try:
                replies: list[Any] = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                await load_scripts(client)
                continue
            except (RedisError, OSError) as exc:
                await self.failed(exc, durable=durable)
                raise
            if waits:
                self.durability.confirm(client, waits[-1][0], replies[-1])
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def merge(self, groups: scripts.Groups, *, key: str) -> bytes:
        """Merge each group's encoded items (with its declared keys) in one durable
        pipeline on the server holding `key`; the result codes in item order."""
        calls = scripts.merge_calls(groups, self.bits)

        def build(pipe: Any) -> None:
            for command in calls:
                pipe.execute_command(*command)

        try:
            replies = await self.run(build, durable=True, key=key)
        except (RedisError, OSError) as exc:
            raise self.router.unavailable("registry write failed", exc) from exc
        return scripts.merge_codes(groups, replies)

    async def intern(self, names: tuple[str, str], name: str) -> int:
        """The id of `name` in the name→id / id→name hashes `names`, interned durably."""

        def build(pipe: Any) -> None:
            pipe.execute_command(*scripts.intern_call(names, name))

        try:
            return int((await self.run(build, durable=True, key=names[0]))[0])
        except (RedisError, OSError) as exc:
            raise self.router.unavailable("registry write failed", exc) from exc

    async def prepare(self, client: aioredis.Redis) -> None:
        """Check once per server: the key layout matches, and the server makes
        writes durable."""
        if self.durability.knows(client):
            return
        try:
            layout = await self.router.client(keys.LAYOUT)
            await layout.hsetnx(keys.LAYOUT, "bucket_bits", self.bits)
            await layout.hsetnx(keys.LAYOUT, "format", keys.FORMAT_VERSION)
            mode = await self.durability.probe(client)
        except (RedisError, OSError) as exc:
            raise self.router.unavailable("registry unavailable", exc) from exc
        await self.check_layout()
        self.durability.learn(client, mode)

    async def check_layout(self) -> None:
        """Raise ConfigError when the registry was built with other bucket_bits."""
        if self._layout_checked:
            return
        try:
            stored = await (await self.router.client(keys.LAYOUT)).hget(keys.LAYOUT, "bucket_bits")
        except (RedisError, OSError) as exc:
            raise self.router.unavailable("registry unavailable", exc) from exc
        if stored is not None and int(stored) != self.bits:
            raise ConfigError(
                "registry.bucket_bits",
                f"the registry was created with bucket_bits = {int(stored)}, "
                f"the config says {self.bits}",
            )
        self._layout_checked = True

    async def failed(self, exc: RedisError | OSError, *, durable: bool) -> None:
        """After a failed pipeline: forget what was learnt of the server (a failover
        may bring another one), and raise the error it means, if more specific."""
        self.router.stale()
        if durable:
            self.durability.forget()
            self._forget()  # ids learnt from this server may not be on the next one
        if isinstance(exc, ReadOnlyError) or "READONLY" in str(exc):  # a replica now
            await self.router.disconnect()  # new connections ask the sentinels (or the cluster)
            raise self.router.unavailable("registry write reached a replica", exc) from exc
        if (
            durable
            and isinstance(exc, ResponseError)
            and ("WAIT" in str(exc) or "appendonly" in str(exc))
        ):
            raise NotDurable(f"registry write not confirmed durable: {exc}") from exc


async def load_scripts(client: aioredis.Redis) -> None:
    """SCRIPT LOAD every script on the server of `client`."""
    for source, _ in scripts.SCRIPTS.values():
        await client.script_load(source)
