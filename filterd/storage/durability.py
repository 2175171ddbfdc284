"""Durability (SPEC §5): a write returns only after the server has it on disk.

On servers with WAITAOF (Redis ≥ 7.2, Valkey) each write is followed, in the
same round trip, by `WAITAOF 1 0` and the reply is checked. On older servers
the registry requires `appendonly yes` + `appendfsync always` (then Redis
fsyncs before it replies) and refuses to write otherwise.

With `min_replicas` = N > 0 (the default under Sentinel and on a Cluster) a
write is also confirmed by N replicas before it is acknowledged: `WAITAOF 1 N`
(on their disks too), or on older servers `WAIT N` (in their memory) on top of
the primary's fsync-always. Fewer confirmations than asked: NotDurable.

`Durability` probes each server once (`probe`, `learn`), says what ends a
durable pipeline on it (`wait_commands`) and checks the last reply (`confirm`).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from filterd.errors import ConfigError, NotDurable
from filterd.storage.replies import as_text

WAITAOF_TIMEOUT_MS = 5000
REPLICA_WAIT_MS = 2000
"""How long WAIT and WAITAOF each wait for replicas (each below the 5 s socket timeout)."""

Mode = str
"""How a server makes writes durable: "waitaof" or "fsync-always"."""


class Durability:
    """What makes a write durable on each server, learnt once per server (by the
    identity of its client) and forgotten after a failed write (a failover may
    bring another server)."""

    def __init__(self, min_replicas: int) -> None:
        if min_replicas < 0:
            raise ConfigError("registry.min_replicas", f"{min_replicas} is negative")
        self.replicas = min_replicas
        self._modes: dict[int, Mode] = {}  # id(client) → mode

    def knows(self, client: aioredis.Redis) -> bool:
        """Whether the server of `client` was probed (and found durable)."""
        return id(client) in self._modes

    @staticmethod
    async def probe(client: aioredis.Redis) -> Mode | None:
        """How the server makes writes durable, or None when it does not (RedisError
        or OSError when it cannot be asked)."""
        info = await client.info("server")
        try:
            conf = {as_text(k): as_text(v) for k, v in (await client.config_get("append*")).items()}
        except ResponseError:
            conf = {}  # CONFIG disabled (managed service): WAITAOF alone decides
        if conf.get("appendonly", "yes") == "yes" and has_waitaof(info):
            return "waitaof"
        if conf.get("appendonly") == "yes" and conf.get("appendfsync") == "always":
            return "fsync-always"
        return None

    def learn(self, client: aioredis.Redis, mode: Mode | None) -> None:
        """Remember the probed mode; NotDurable when there is none."""
        if mode is None:
            raise NotDurable(
                "the Redis server does not make writes durable: set appendonly yes and "
                "appendfsync always, or use Redis >= 7.2 / Valkey with appendonly yes"
            )
        self._modes[id(client)] = mode

    def forget(self) -> None:
        """Probe every server again before its next write."""
        self._modes.clear()

    def wait_commands(self, client: aioredis.Redis) -> list[tuple[Any, ...]]:
        """What ends a durable write pipeline (see the module doc); the last one's
        reply decides."""
        mode = self._modes.get(id(client))
        if mode == "waitaof" and not self.replicas:
            return [("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)]
        if mode == "waitaof":
            # WAIT first: a replica answers the primary's GETACK sent with the write
            # before its own fsync, and would only report it a second later; once
            # WAIT returns, the replica has fsynced (appendfsync always) and the
            # GETACK of WAITAOF gets the fresh offset at once
            return [
                ("WAIT", self.replicas, REPLICA_WAIT_MS),
                ("WAITAOF", 1, self.replicas, REPLICA_WAIT_MS),
            ]
        if self.replicas:  # fsync-always on the primary, checked by the probe
            return [("WAIT", self.replicas, REPLICA_WAIT_MS)]
        return []

    def confirm(self, client: aioredis.Redis, command: str, reply: Any) -> None:
        """NotDurable unless the disk and replicas confirmed as many as asked."""
        try:
            if command == "WAITAOF":
                local, replicas = int(reply[0]), int(reply[1])
            else:
                local, replicas = 1, int(reply)
        except (TypeError, ValueError, IndexError):
            self._modes.pop(id(client), None)
            raise NotDurable(f"registry write: unexpected {command} reply {reply!r}") from None
        if local < 1:
            self._modes.pop(id(client), None)
            raise NotDurable("registry write not confirmed on disk (WAITAOF timed out)")
        if replicas < self.replicas:
            self._modes.pop(id(client), None)
            raise NotDurable(
                f"registry write confirmed by {replicas} of the {self.replicas} replicas "
                f"required ({command} timed out)"
            )


def has_waitaof(info: dict[str, Any]) -> bool:
    """Whether a server (its INFO server section) has WAITAOF: Valkey, Redis ≥ 7.2."""
    if "valkey_version" in info:
        return True
    parts = str(info.get("redis_version", "0")).split(".")
    version = tuple(int(p) for p in parts[:2] if p.isdigit())
    return version >= (7, 2)
