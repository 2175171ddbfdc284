"""Building the redis-py client of one server from `registry.url`: redis://,
rediss://, unix:// or redis+sentinel:// (the primary the sentinels name, asked
again for every new connection), and where the raw lookup link goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from filterd.storage.link import Endpoint
from filterd.storage.sentinel_url import is_sentinel_url, parse_sentinel_url

_SENTINEL_TIMEOUT_S = 1.0
_MAX_CONNECTIONS = 64


def pool_options() -> dict[str, Any]:
    """The connection pool settings of every client (a server's, a Cluster node's)."""
    return {
        "max_connections": _MAX_CONNECTIONS,
        "timeout": 5,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        "health_check_interval": 30,
    }


class _SentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Connections to the primary the sentinels name (asked again for every new
    connection; a READONLY reply closes the connection), waiting when all are busy
    like the pool of a plain URL."""


@dataclass(frozen=True, slots=True)
class Connection:
    """A server's client; under Sentinel also the sentinels and the service name."""

    client: aioredis.Redis
    sentinel: Sentinel | None = None
    service: str = ""

    async def locate(self) -> tuple[str, int]:
        """The host and port of the primary the sentinels name now."""
        assert self.sentinel is not None  # noqa: S101 - only asked under Sentinel
        host, port = await self.sentinel.discover_master(self.service)
        return str(host), int(port)

    async def close(self) -> None:
        """Close the pool (and the sentinels' connections)."""
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def connect(url: str) -> Connection:
    """The client of `url` (lazily: nothing is sent yet).

    The pool blocks (up to 5 s) when all its connections are busy, rather than
    failing: a burst of concurrent commands waits its turn.
    """
    common = pool_options()
    if not is_sentinel_url(url):
        pool = aioredis.BlockingConnectionPool.from_url(url, **common)
        return Connection(aioredis.Redis.from_pool(pool))  # the client owns the pool
    target = parse_sentinel_url(url)
    make: Any = Sentinel  # untyped in redis-py
    sentinel: Sentinel = make(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": _SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": _SENTINEL_TIMEOUT_S,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
        },
    )
    client = sentinel.master_for(
        target.service,
        redis_class=aioredis.Redis,
        connection_pool_class=_SentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        **common,
    )
    return Connection(client, sentinel, target.service)


def link_endpoint(client: aioredis.Redis, sentinel: bool = False) -> Endpoint | None:
    """Where the lookup connection goes (path or host/port, credentials, db);
    None for TLS, whose lookups go through redis-py's pool instead. Under
    Sentinel only the credentials and db: the host is asked at each connect."""
    pool = client.connection_pool
    params = pool.connection_kwargs
    wanted = ("path", "host", "port", "username", "password", "db")
    if sentinel:
        return {k: params[k] for k in ("username", "password", "db") if k in params}
    if pool.connection_class is aioredis.UnixDomainSocketConnection:
        return {k: params[k] for k in wanted if k in params}
    if pool.connection_class is aioredis.Connection:
        return {"host": "localhost", "port": 6379} | {k: params[k] for k in wanted if k in params}
    return None
