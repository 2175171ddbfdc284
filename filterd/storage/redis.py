"""The Redis adapter of the registry port: key layout, one-round-trip reads,
durable writes, the audit stream. With cluster_registry.py (which builds on it)
the only modules that import redis.

Reads: the facts of all recipients of a message, and the ids of their senders,
are pipelined HGETs written at once on a raw connection of their own
(resp_link); lookups made in one turn of the event loop share one write.

Durability (SPEC §5): a write returns only after the server has it on disk.
On servers with WAITAOF (Redis ≥ 7.2, Valkey) each write is followed, in the
same round trip, by `WAITAOF 1 0` and the reply is checked. On older servers
the adapter requires `appendonly yes` + `appendfsync always` (then Redis
fsyncs before it replies) and refuses to write otherwise.

With `min_replicas` = N > 0 (the default under Sentinel, see from_url) a write
is also confirmed by N replicas before it is acknowledged: `WAITAOF 1 N` (on
their disks too), or on older servers `WAIT N` (in their memory) on top of the
primary's fsync-always. Fewer confirmations than asked: NotDurable.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError

from filterd.errors import ConfigError, NotDurable, RegistryUnavailable
from filterd.model import ALL_SENDERS, AuditEntry, BulkRow, Channel, Fact, Kind, WriteResult
from filterd.storage import keys
from filterd.storage.link import RespLink, is_error
from filterd.storage.port import AuditQuery
from filterd.storage.records import MAX_SIDE_BYTES, Record, pack, pack_side, unpack, unpack_side
from filterd.storage.sentinel_url import is_sentinel_url, parse_sentinel_url

# Merge facts into buckets atomically. ARGV[1]: bucket_bits; ARGV[2]: the
# items, concatenated, each:
#   consumer id (10) | check (1) | record length (1) | record | side length (2) | side
# check 1 = a consent or request without evidence: refused when a refusal that
# covers it is on record. Without KEYS the bucket keys are derived here from the
# ids (the layout of keys.py), so a batch of thousands costs one short command;
# on a Cluster every item of a call is of one bucket, whose facts and side keys
# are declared as KEYS[1] and KEYS[2].
# Returns one byte per item: "1" stored, "0" a newer fact of the slot is kept,
# "2" refused (refusal on record).
_MERGE = """
local bits, blob = tonumber(ARGV[1]), ARGV[2]
local fmt = '%0' .. math.floor((bits + 3) / 4) .. 'x}'
local scale = 2 ^ (32 - bits)
local out, pos, n = {}, 1, #blob
local fixed = #KEYS == 2
while pos <= n do
  local fkey, xkey = KEYS[1], KEYS[2]
  if not fixed then
    local b1, b2, b3, b4 = string.byte(blob, pos, pos + 3)
    local tag = string.format(fmt, math.floor((((b1 * 256 + b2) * 256 + b3) * 256 + b4) / scale))
    fkey, xkey = 'fd:r:{' .. tag, 'fd:x:{' .. tag
  end
  local field = string.sub(blob, pos + 2, pos + 9)
  local check = string.byte(blob, pos + 10)
  local rlen = string.byte(blob, pos + 11)
  local rec = string.sub(blob, pos + 12, pos + 11 + rlen)
  pos = pos + 12 + rlen
  local s1, s2 = string.byte(blob, pos, pos + 1)
  local xval = string.sub(blob, pos + 2, pos + 1 + s1 * 256 + s2)
  pos = pos + 2 + s1 * 256 + s2
  local slot = string.sub(rec, 1, 4)
  local cur = redis.call('HGET', fkey, field)
  local code = '1'
  if not cur then
    redis.call('HSET', fkey, field, rec)
    if xval ~= '' then redis.call('HSET', xkey, field .. slot, xval) end
  else
    local ts = string.sub(rec, 5, 10)
    local nchan, nscope = string.byte(rec, 1) % 16, string.sub(rec, 2, 4)
    local keep, at, refused, newer, replaced = {}, 1, false, false, false
    while at <= #cur do
      local head = string.byte(cur, at)
      local kind = math.floor(head / 16)
      local size = 12
      if kind == 2 then size = 18 end
      local r = string.sub(cur, at, at + size - 1)
      if check == 1 and kind == 3 then
        local chan, scope = head % 16, string.sub(r, 2, 4)
        if (scope == nscope or scope == '\0\0\0') and (chan == 0 or chan == nchan) then
          refused = true
        end
      end
      if string.sub(r, 1, 4) == slot then
        replaced = true
        if string.sub(r, 5, 10) > ts then newer = true end
      else
        keep[#keep + 1] = r
      end
      at = at + size
    end
    if refused then code = '2' elseif newer then code = '0' end
    if code == '1' then
      keep[#keep + 1] = rec
      redis.call('HSET', fkey, field, table.concat(keep))
      if xval ~= '' then
        redis.call('HSET', xkey, field .. slot, xval)
      elseif replaced then
        redis.call('HDEL', xkey, field .. slot)
      end
    end
  end
  out[#out + 1] = code
end
return table.concat(out)
"""

# Intern a name: KEYS name→id hash, id→name hash; ARGV name. Returns the id.
_INTERN = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return tonumber(id) end
id = redis.call('HLEN', KEYS[2]) + 1
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('HSET', KEYS[2], id, ARGV[1])
return id
"""

_SCRIPTS = {
    name: (source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())
    for name, source in (("merge", _MERGE), ("intern", _INTERN))
}

_CODES = {
    ord("1"): WriteResult.STORED,
    ord("0"): WriteResult.SUPERSEDED,
    ord("2"): WriteResult.REFUSAL_ON_RECORD,
}
_SCRIPT_ITEMS = 1000
"""Items per merge call: ~3 ms of server time, so live lookups are not held up."""
_WAITAOF_TIMEOUT_MS = 5000
_REPLICA_WAIT_MS = 2000
_ROLE_CHECK_S = 1.0
"""Under Sentinel, how often the lookup connection asks its server whether it is
still the primary."""
"""How long WAIT and WAITAOF each wait for replicas (each below the 5 s socket timeout)."""
_SENTINEL_TIMEOUT_S = 1.0
_MAX_CONNECTIONS = 64
_LOOKUP_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 2.0

_FAILED: list[Any] = []
"""The replies of a failed batch (a marker: the rest are ignored)."""

_Lookup = tuple[str, Sequence[bytes], asyncio.Future[tuple[int, list[Any]]]]


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


class _Batch:
    """Lookups sent in one write: the callers, their senders, the commands (an HGET
    of each sender's id, then one HGET per consumer; plain HGETs cost the server
    ~1 µs each where a script call costs ~20), and the replies come in."""

    __slots__ = ("attempt", "commands", "lookups", "replies", "senders", "sent_at")

    def __init__(self, lookups: list[_Lookup], bits: int) -> None:
        self.lookups = lookups
        self.senders = list(dict.fromkeys(sender for sender, _, _ in lookups))
        commands: list[tuple[Any, ...]] = [("HGET", keys.SENDERS, s) for s in self.senders]
        for _, consumers, _ in lookups:
            commands += [
                ("HGET", keys.facts_key(c, bits), keys.consumer_field(c)) for c in consumers
            ]
        self.commands = commands
        self.replies: list[Any] = []
        self.attempt = 1
        self.sent_at = 0.0  # loop.time() when (last) written

    def take(self, reply: Any) -> None:
        """One reply, in command order; the answer once all are in (an error reply
        fails the batch; the replies after it are only read off the link)."""
        if self.replies is _FAILED:
            return
        if is_error(reply):
            self.replies = _FAILED
            self.fail(RegistryUnavailable(f"registry read failed: {reply}"))
            return
        self.replies.append(reply)
        if len(self.replies) == len(self.commands):
            self.answer(self.replies)

    def answer(self, replies: Sequence[Any]) -> None:
        """Give each caller its sender's id and its consumers' values (an answer of
        the wrong shape fails them all: nobody is left waiting)."""
        wanted = len(self.senders) + sum(len(consumers) for _, consumers, _ in self.lookups)
        if len(replies) != wanted:
            self.fail(RegistryUnavailable("registry lookup answered with the wrong shape"))
            return
        try:
            ids = [int(v) if v else -1 for v in replies[: len(self.senders)]]
        except (TypeError, ValueError):
            self.fail(RegistryUnavailable("registry lookup answered with a bad sender id"))
            return
        by_sender = dict(zip(self.senders, ids, strict=True))
        at = len(self.senders)
        for sender, consumers, future in self.lookups:
            mine = list(replies[at : at + len(consumers)])
            at += len(consumers)
            if not future.done():  # its caller may have gone
                future.set_result((by_sender[sender], mine))

    def fail(self, error: Exception) -> None:
        """Every caller still waiting gets `error`."""
        for _, _, future in self.lookups:
            if not future.done():
                future.set_exception(error)


class RedisRegistry:
    """The registry on a Redis (or Valkey) server."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        bucket_bits: int = 16,
        audit_max_entries: int = 1_000_000,
        audit_retention_ms: int = 400 * 86_400_000,
        min_replicas: int = 0,
        sentinel: Sentinel | None = None,
        service: str = "",
    ) -> None:
        if min_replicas < 0:
            raise ConfigError("registry.min_replicas", f"{min_replicas} is negative")
        self._r = client
        self._replicas = min_replicas
        self._sentinel = sentinel
        self._service = service
        self._bits = bucket_bits
        self._audit_max = audit_max_entries
        self._audit_retention_ms = audit_retention_ms
        self._ids: dict[tuple[str, str], int] = {}
        self._names: dict[tuple[str, int], str] = {}
        self._durability: dict[int, str] = {}  # id(client) → "waitaof" / "fsync-always"
        self._lookups: list[_Lookup] = []
        self._flush_due = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._layout_checked = False
        self._endpoint = link_endpoint(client, sentinel is not None)
        self._link: RespLink | None = None
        self._link_loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._unsent: list[_Batch] = []

    @classmethod
    def from_url(
        cls, url: str, *, min_replicas: int | None = None, **options: Any
    ) -> RedisRegistry:
        """Connect to redis://, rediss://, unix:// or redis+sentinel:// (lazily:
        nothing is sent yet).

        The pool blocks (up to 5 s) when all its connections are busy, rather
        than failing: a burst of concurrent commands waits its turn.
        `min_replicas` (default: 1 with Sentinel, else 0) replicas must confirm
        every write before it is acknowledged.
        """
        common = pool_options()
        if is_sentinel_url(url):
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
            replicas = 1 if min_replicas is None else min_replicas
            return cls(
                client,
                min_replicas=replicas,
                sentinel=sentinel,
                service=target.service,
                **options,
            )
        pool = aioredis.BlockingConnectionPool.from_url(url, **common)
        client = aioredis.Redis.from_pool(pool)  # the client owns the pool
        return cls(client, min_replicas=min_replicas or 0, **options)

    # ---- reads -------------------------------------------------------------

    async def lookup(self, sender: str, consumers: Sequence[bytes]) -> list[list[Fact]]:
        """See Registry.lookup.

        Lookups made in one turn of the event loop (other connections' RCPTs,
        submits, policy requests) are sent as one script call at the end of
        the turn: each caller still waits for one round trip, and the
        per-command cost is shared. They travel on a connection of their own
        (RespLink), pipelined, with a 5 s deadline; a connection lost with
        lookups in flight is re-opened and they are sent once more.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, list[Any]]] = loop.create_future()
        self._lookups.append((sender, consumers, future))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self._flush_lookups)
        sender_id, values = await future
        known = self._decode_known(sender, sender_id, values)
        if known is not None:
            return known
        return await self._decode_lookup(sender, sender_id, values)

    def _flush_lookups(self) -> None:
        lookups, self._lookups, self._flush_due = self._lookups, [], False
        lookups = [item for item in lookups if not item[2].done()]  # callers gone
        if lookups:
            self._dispatch(_Batch(lookups, self._bits))

    def _dispatch(self, batch: _Batch) -> None:
        """Send on the lookup connection (opening it first if needed)."""
        loop = asyncio.get_running_loop()
        if self._endpoint is None:  # TLS: through redis-py
            self._spawn(self._lookup_via_pool(batch))
            return
        if self._link_loop is not loop:  # a new event loop: the old link is unusable
            self._link, self._connecting, self._unsent = None, None, []
            self._link_loop = loop
        link = self._link
        if link is not None and not link.closed:
            self._transmit(link, batch)
            return
        self._unsent.append(batch)
        if self._connecting is None:
            self._connecting = self._spawn(self._open_link())

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _transmit(self, link: RespLink, batch: _Batch) -> None:
        if self._sentinel is not None:
            self._check_role(link)
        link.batches.add(batch)
        if batch.attempt == 1 or not batch.sent_at:
            batch.sent_at = asyncio.get_running_loop().time()  # a resend keeps its deadline
        batch.replies = []
        wanted = len(batch.commands)

        def on_reply(reply: Any) -> None:
            if len(batch.replies) + 1 >= wanted or is_error(reply):
                link.batches.discard(batch)
            batch.take(reply)

        link.send_all(batch.commands, on_reply)

    @staticmethod
    def _check_role(link: RespLink) -> None:
        """Under Sentinel, at most once a second: ROLE ahead of the next lookup; a server
        that is no longer the primary (a failover the link did not see, as in a network
        partition) has the link dropped, so the lookups behind it are resent to the
        primary the sentinels name, never answered from a demoted server."""
        now = asyncio.get_running_loop().time()
        if now - link.role_checked < _ROLE_CHECK_S:
            return
        link.role_checked = now

        def on_role(reply: Any) -> None:
            if not (isinstance(reply, list) and reply[:1] == [b"master"]):
                link.abort()

        link.send(("ROLE",), on_role)

    def _link_lost(self, link: RespLink, exc: Exception | None) -> None:
        if self._link is link:
            self._link = None
        waiting, link.batches = list(link.batches), set()
        retry = self._link_loop is not None  # not after close()
        for batch in waiting:
            if retry and batch.attempt == 1:
                batch.attempt += 1  # sent once more on a new connection
                self._dispatch(batch)
            else:
                batch.fail(RegistryUnavailable(f"registry connection lost: {exc}"))

    async def _open_link(self) -> None:
        """Connect, authenticate, select the db; then send what waited, or fail it."""
        loop = asyncio.get_running_loop()
        try:
            link = await asyncio.wait_for(self._connect(loop), _CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, RedisError) as exc:
            if self._link_loop is loop:
                self._connecting = None
                unsent, self._unsent = self._unsent, []
                for batch in unsent:
                    batch.fail(RegistryUnavailable(f"registry unavailable: {exc}"))
            return
        if self._link_loop is not loop:  # superseded (the registry was closed)
            link.abort()
            return
        self._link, self._connecting = link, None
        unsent, self._unsent = self._unsent, []
        for batch in unsent:
            self._transmit(link, batch)

    async def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: dict[str, Any] | None = None,
        on_lost: Callable[[RespLink, Exception | None], None] | None = None,
    ) -> RespLink:
        """Open a lookup link to `endpoint` (default: this registry's server) and
        say hello (AUTH, SELECT; ROLE under Sentinel)."""
        endpoint = endpoint or self._endpoint
        assert endpoint is not None  # noqa: S101 - checked by _dispatch
        lost = on_lost or self._link_lost

        def factory() -> RespLink:
            return RespLink(lost, timeout_s=_LOOKUP_TIMEOUT_S)

        if self._sentinel is not None:  # the primary the sentinels name now
            host, port = await self._sentinel.discover_master(self._service)
            endpoint = endpoint | {"host": host, "port": port}
        if "path" in endpoint:
            _, link = await loop.create_unix_connection(factory, str(endpoint["path"]))
        else:
            _, link = await loop.create_connection(
                factory, str(endpoint["host"]), int(endpoint["port"])
            )
        hello: list[tuple[Any, ...]] = []
        if endpoint.get("password") is not None:
            user = endpoint.get("username")
            auth = ("AUTH", user, endpoint["password"]) if user else ("AUTH", endpoint["password"])
            hello.append(auth)
        if endpoint.get("db"):
            hello.append(("SELECT", endpoint["db"]))
        if self._sentinel is not None:
            hello.append(("ROLE",))
        for command in hello:
            done: asyncio.Future[Any] = loop.create_future()
            link.send(command, done.set_result)
            try:
                reply = await done
            except BaseException:
                link.abort()
                raise
            if isinstance(reply, Exception):
                link.abort()
                raise RedisError(f"{command[0]}: {reply}")
            if command[0] == "ROLE" and not (isinstance(reply, list) and reply[:1] == [b"master"]):
                link.abort()  # the sentinels' answer is stale (a failover under way)
                raise RedisError(f"{endpoint['host']}:{endpoint['port']} is not the primary")
        link.role_checked = loop.time()
        return link

    async def _lookup_via_pool(self, batch: _Batch) -> None:
        try:
            pipe = self._r.pipeline(transaction=False)
            for command in batch.commands:
                pipe.execute_command(*command)
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            batch.fail(RegistryUnavailable(f"registry read failed: {exc}"))
            return
        except BaseException:
            batch.fail(RegistryUnavailable("registry lookup interrupted"))
            raise
        batch.answer(replies)

    async def _decode_lookup(
        self, sender: str, sender_id: int, values: Sequence[Any]
    ) -> list[list[Fact]]:
        if sender_id > 0:
            self._remember("sender", sender, sender_id)
        scopes = {0: ALL_SENDERS, sender_id: sender}
        out = []
        for value in values:
            facts = []
            for record in _decode(_as_bytes(value)):
                if record.scope_id in scopes:
                    fact = self._known_fact(record, scopes)
                    facts.append(fact if fact is not None else await self._fact(record, scopes))
            out.append(facts)
        return out

    def _decode_known(
        self, sender: str, sender_id: int, values: Sequence[Any]
    ) -> list[list[Fact]] | None:
        """The facts when every name in them is cached (the usual case); else None."""
        if sender_id > 0 and self._ids.get(("sender", sender)) != sender_id:
            self._remember("sender", sender, sender_id)
        scopes = {0: ALL_SENDERS, sender_id: sender}
        out = []
        for value in values:
            facts = []
            for record in _decode(_as_bytes(value)):
                if record.scope_id in scopes:
                    fact = self._known_fact(record, scopes)
                    if fact is None:
                        return None
                    facts.append(fact)
            out.append(facts)
        return out

    def _known_fact(self, record: Record, scopes: dict[int, str]) -> Fact | None:
        """The Fact of a record whose names are cached (no round trip), else None."""
        sender = scopes.get(record.scope_id)
        source = self._names.get(("source", record.source_id))
        if sender is None or source is None:
            return None
        return Fact(
            kind=record.kind,
            sender=sender,
            channel=record.channel,
            at_ms=record.at_ms,
            source=source,
            expires_ms=record.expires_ms,
        )

    def _queue(self, pipe: Any, name: str, key_list: Sequence[str], args: Sequence[Any]) -> None:
        """Queue EVALSHA of a script (loaded on demand, see _run)."""
        pipe.execute_command("EVALSHA", _SCRIPTS[name][1], len(key_list), *key_list, *args)

    def _unavailable(self, what: str, exc: BaseException) -> RegistryUnavailable:
        """The error to raise when talking to the server failed (a Cluster also
        reads its slot map again before the next operation)."""
        return RegistryUnavailable(f"{what}: {exc}")

    async def _client(self, key: str) -> aioredis.Redis:
        """The client of the server holding `key` (one server here; a Cluster's
        node in ClusterRegistry)."""
        return self._r

    async def _run(
        self, build: Callable[[Any], None], *, durable: bool = False, key: str = keys.LAYOUT
    ) -> list[Any]:
        """Build and run a pipeline on the server holding `key` (every key the
        pipeline names must live there); load the scripts and retry once on
        NOSCRIPT.

        With `durable`, return only after the server confirms the writes on disk.
        """
        client = await self._client(key)
        if durable:
            await self._prepare_writes(client)
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            build(pipe)
            waits = self._wait_commands(client) if durable else []
            for wait in waits:
                pipe.execute_command(*wait)
            try:
                replies: list[Any] = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts(client)
                continue
            except (RedisError, OSError) as exc:
                await self._write_failed(exc, durable=durable)
                raise
            if waits:
                self._check_confirmed(client, waits[-1][0], replies[-1])
            return replies
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_failed(self, exc: RedisError | OSError, *, durable: bool) -> None:
        """After a failed pipeline: forget what was learnt of the server (a failover
        may bring another one), and raise the error it means, if more specific."""
        if durable:
            self._durability.clear()
            # ids learnt from this server may not be on the next one: ask again
            self._ids.clear()
            self._names.clear()
        if isinstance(exc, ReadOnlyError) or "READONLY" in str(exc):  # a replica now
            await self._disconnect()  # new connections ask the sentinels (or the cluster)
            raise self._unavailable("registry write reached a replica", exc) from exc
        if (
            durable
            and isinstance(exc, ResponseError)
            and ("WAIT" in str(exc) or "appendonly" in str(exc))
        ):
            raise NotDurable(f"registry write not confirmed durable: {exc}") from exc

    async def _disconnect(self) -> None:
        """Drop the pool's connections (after a write reached a replica)."""
        await self._r.connection_pool.disconnect()

    def _wait_commands(self, client: aioredis.Redis) -> list[tuple[Any, ...]]:
        """What ends a durable write pipeline (see the module doc); the last one's
        reply decides."""
        mode = self._durability.get(id(client))
        if mode == "waitaof" and not self._replicas:
            return [("WAITAOF", 1, 0, _WAITAOF_TIMEOUT_MS)]
        if mode == "waitaof":
            # WAIT first: a replica answers the primary's GETACK sent with the write
            # before its own fsync, and would only report it a second later; once
            # WAIT returns, the replica has fsynced (appendfsync always) and the
            # GETACK of WAITAOF gets the fresh offset at once
            return [
                ("WAIT", self._replicas, _REPLICA_WAIT_MS),
                ("WAITAOF", 1, self._replicas, _REPLICA_WAIT_MS),
            ]
        if self._replicas:  # fsync-always on the primary, checked by _prepare_writes
            return [("WAIT", self._replicas, _REPLICA_WAIT_MS)]
        return []

    def _check_confirmed(self, client: aioredis.Redis, command: str, reply: Any) -> None:
        """NotDurable unless the disk and replicas confirmed as many as asked."""
        try:
            if command == "WAITAOF":
                local, replicas = int(reply[0]), int(reply[1])
            else:
                local, replicas = 1, int(reply)
        except (TypeError, ValueError, IndexError):
            self._durability.pop(id(client), None)
            raise NotDurable(f"registry write: unexpected {command} reply {reply!r}") from None
        if local < 1:
            self._durability.pop(id(client), None)
            raise NotDurable("registry write not confirmed on disk (WAITAOF timed out)")
        if replicas < self._replicas:
            self._durability.pop(id(client), None)
            raise NotDurable(
                f"registry write confirmed by {replicas} of the {self._replicas} replicas "
                f"required ({command} timed out)"
            )

    async def facts(self, consumer: bytes) -> list[Fact]:
        """See Registry.facts."""
        field = keys.consumer_field(consumer)
        try:
            facts_key = keys.facts_key(consumer, self._bits)
            value = await (await self._client(facts_key)).hget(facts_key, field)
            records = _decode(_as_bytes(value))
            sides: list[Any] = []
            if records:
                sides = await (await self._client(facts_key)).hmget(
                    keys.side_key(consumer, self._bits), [field + r.slot for r in records]
                )
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry read failed", exc) from exc
        out = []
        for record, side in zip(records, sides, strict=True):
            fact = await self._fact(record, {})
            evidence, message_id = unpack_side(side)
            out.append(_with_side(fact, evidence, message_id))
        return sorted(out, key=lambda f: f.at_ms, reverse=True)

    async def _fact(self, record: Record, scopes: dict[int, str]) -> Fact:
        sender = scopes.get(record.scope_id)
        if sender is None:
            sender = (
                ALL_SENDERS
                if record.scope_id == 0
                else await self._name("sender", keys.SENDER_NAMES, record.scope_id)
            )
        source = await self._name("source", keys.SOURCE_NAMES, record.source_id)
        return Fact(
            kind=record.kind,
            sender=sender,
            channel=record.channel,
            at_ms=record.at_ms,
            source=source,
            expires_ms=record.expires_ms,
        )

    async def _name(self, space: str, names_key: str, ident: int) -> str:
        name = self._names.get((space, ident))
        if name is None:
            try:
                every = await (await self._client(names_key)).hgetall(names_key)
            except (RedisError, OSError) as exc:
                raise self._unavailable("registry read failed", exc) from exc
            for raw_id, raw_name in every.items():
                self._remember(space, _as_text(raw_name), int(raw_id))
            name = self._names.get((space, ident), f"#{ident}")
        return name

    def _remember(self, space: str, name: str, ident: int) -> None:
        self._ids[(space, name)] = ident
        self._names[(space, ident)] = name

    # ---- writes ------------------------------------------------------------

    async def record(
        self, consumer: bytes, fact: Fact, audit: AuditEntry | None = None
    ) -> WriteResult:
        """See Registry.record: the merge, then (if stored) the audit entry, both durable."""
        result = (await self._write([(consumer, fact)]))[0]
        if audit is not None and result is WriteResult.STORED:
            await self.append_audit([audit])
        return result

    async def record_many(self, rows: Sequence[BulkRow]) -> list[WriteResult]:
        """See Registry.record_many: one round trip, made durable once for all rows."""
        encoder = _BulkEncoder()
        items = []
        for row in rows:
            slot = encoder.slots.get((row.kind, row.sender, row.channel))
            if slot is None:
                scope = 0 if row.sender == ALL_SENDERS else await self._id("sender", row.sender)
                slot = encoder.slot(row.kind, row.sender, row.channel, scope)
            source = encoder.sources.get(row.source)
            if source is None:
                source = encoder.source(row.source, await self._id("source", row.source))
            items.append(encoder.item(row, slot, source))
        return await self._send(items)

    async def _write(self, items: Sequence[tuple[bytes, Fact]]) -> list[WriteResult]:
        return await self._send([await self._item(consumer, fact) for consumer, fact in items])

    async def _send(self, items: Sequence[bytes]) -> list[WriteResult]:
        """Run the merge script over encoded items; durable before returning."""
        if not items:
            return []
        return self._results(await self._merge([((), items)], key=keys.LAYOUT))

    @staticmethod
    def _results(codes: bytes) -> list[WriteResult]:
        """The merge script's result codes as WriteResults."""
        return [_CODES[code] for code in codes]

    async def _merge(
        self, groups: Sequence[tuple[Sequence[str], Sequence[bytes]]], *, key: str
    ) -> bytes:
        """Merge each group's encoded items, with the group's declared keys (none:
        the script derives them), in one durable pipeline on the server holding
        `key`; return the result codes in item order (see _MERGE)."""
        calls = self._merge_calls(groups)

        def build(pipe: Any) -> None:
            for command in calls:
                pipe.execute_command(*command)

        try:
            replies = await self._run(build, durable=True, key=key)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry write failed", exc) from exc
        return self._merge_codes(groups, replies)

    def _merge_calls(
        self, groups: Sequence[tuple[Sequence[str], Sequence[bytes]]]
    ) -> list[tuple[Any, ...]]:
        """The EVALSHA commands of a merge: each group cut into calls of at most
        _SCRIPT_ITEMS items."""
        sha = _SCRIPTS["merge"][1]
        return [
            ("EVALSHA", sha, len(declared), *declared, self._bits,
             b"".join(items[start : start + _SCRIPT_ITEMS]))
            for declared, items in groups
            for start in range(0, len(items), _SCRIPT_ITEMS)
        ]  # fmt: skip

    @staticmethod
    def _merge_codes(
        groups: Sequence[tuple[Sequence[str], Sequence[bytes]]], replies: Sequence[Any]
    ) -> bytes:
        """The result codes of _merge_calls(groups) from their replies (then any
        WAIT replies), checked: one code per item."""
        sizes = [
            min(_SCRIPT_ITEMS, len(items) - start)
            for _, items in groups
            for start in range(0, len(items), _SCRIPT_ITEMS)
        ]
        if len(replies) < len(sizes):
            raise RegistryUnavailable("registry write answered for the wrong number of calls")
        codes = []
        for size, reply in zip(sizes, replies, strict=False):
            answer = _as_bytes(reply) if isinstance(reply, bytes | str) else None
            if answer is None or len(answer) != size:
                raise RegistryUnavailable("registry write answered for the wrong number of facts")
            codes.append(answer)
        return b"".join(codes)

    @staticmethod
    async def _load_scripts(client: aioredis.Redis) -> None:
        """SCRIPT LOAD every script on the server of `client`."""
        for source, _ in _SCRIPTS.values():
            await client.script_load(source)

    async def _item(self, consumer: bytes, fact: Fact) -> bytes:
        """One item of the merge script's input (see _MERGE)."""
        scope_id = 0 if fact.sender == ALL_SENDERS else await self._id("sender", fact.sender)
        record = pack(
            Record(
                kind=fact.kind,
                channel=fact.channel,
                scope_id=scope_id,
                at_ms=fact.at_ms,
                source_id=await self._id("source", fact.source),
                expires_ms=fact.expires_ms,
            )
        )
        side = pack_side(fact.evidence, fact.message_id)
        return _encode_item(consumer, fact.kind, bool(fact.evidence), record, side)

    async def _id(self, space: str, name: str) -> int:
        """The id of a sender or source name, interning it if new.

        The interning is a durable write like a fact's: an id is cached (and
        used in facts) only once the server has confirmed its name on disk
        (and on the required replicas), so a crash or failover cannot lose the
        name and hand its id to another one while this process still uses it.
        """
        ident = self._ids.get((space, name))
        if ident is None:
            names = (keys.SENDERS, keys.SENDER_NAMES)
            if space == "source":
                names = (keys.SOURCES, keys.SOURCE_NAMES)

            def build(pipe: Any) -> None:
                self._queue(pipe, "intern", names, [name])

            try:
                ident = int((await self._run(build, durable=True, key=names[0]))[0])
            except (RedisError, OSError) as exc:
                raise self._unavailable("registry write failed", exc) from exc
            self._remember(space, name, ident)
        return ident

    async def _prepare_writes(self, client: aioredis.Redis) -> None:
        """Check once per server: the key layout matches, and the server makes
        writes durable."""
        if id(client) in self._durability:
            return
        try:
            layout = await self._client(keys.LAYOUT)
            await layout.hsetnx(keys.LAYOUT, "bucket_bits", self._bits)
            await layout.hsetnx(keys.LAYOUT, "format", keys.FORMAT_VERSION)
            info = await client.info("server")
            try:
                conf = {
                    _as_text(k): _as_text(v)
                    for k, v in (await client.config_get("append*")).items()
                }
            except ResponseError:
                conf = {}  # CONFIG disabled (managed service): WAITAOF alone decides
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry unavailable", exc) from exc
        mode = None
        if conf.get("appendonly", "yes") == "yes" and _has_waitaof(info):
            mode = "waitaof"
        elif conf.get("appendonly") == "yes" and conf.get("appendfsync") == "always":
            mode = "fsync-always"
        await self.check_layout()
        if mode is None:
            raise NotDurable(
                "the Redis server does not make writes durable: set appendonly yes and "
                "appendfsync always, or use Redis >= 7.2 / Valkey with appendonly yes"
            )
        self._durability[id(client)] = mode

    async def check_layout(self) -> None:
        """Raise ConfigError when the registry was built with other bucket_bits."""
        if self._layout_checked:
            return
        try:
            stored = await (await self._client(keys.LAYOUT)).hget(keys.LAYOUT, "bucket_bits")
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry unavailable", exc) from exc
        if stored is not None and int(stored) != self._bits:
            raise ConfigError(
                "registry.bucket_bits",
                f"the registry was created with bucket_bits = {int(stored)}, "
                f"the config says {self._bits}",
            )
        self._layout_checked = True

    # ---- audit -------------------------------------------------------------

    def _queue_audit(self, pipe: Any, entry: AuditEntry) -> None:
        fields = {k: v for k, v in _audit_fields(entry).items() if v is not None}
        pipe.xadd(keys.AUDIT, fields, maxlen=self._audit_max, approximate=True)
        oldest = int(time.time() * 1000) - self._audit_retention_ms
        pipe.xtrim(keys.AUDIT, minid=str(oldest), approximate=True)

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """See Registry.append_audit."""
        if not entries:
            return
        try:

            def build(pipe: Any) -> None:
                for entry in entries:
                    self._queue_audit(pipe, entry)

            await self._run(build, durable=True, key=keys.AUDIT)
        except (RedisError, OSError) as exc:
            raise self._unavailable("audit write failed", exc) from exc

    async def read_audit(self, query: AuditQuery) -> list[AuditEntry]:
        """See Registry.read_audit: pages backwards through the stream."""
        out: list[AuditEntry] = []
        upper: str = "+"
        try:
            while len(out) < query.limit:
                page = await (await self._client(keys.AUDIT)).xrevrange(
                    keys.AUDIT, max=upper, min=str(query.since_ms), count=1000
                )
                if not page:
                    break
                for raw_id, raw in page:
                    entry = _audit_entry(_as_text(raw_id), raw or {})
                    if query.consumer in (None, entry.consumer) and query.sender in (
                        None,
                        entry.sender,
                    ):
                        out.append(entry)
                upper = "(" + _as_text(page[-1][0])
        except (RedisError, OSError) as exc:
            raise self._unavailable("audit read failed", exc) from exc
        return out[: query.limit]

    # ---- bulk reads ----------------------------------------------------------

    async def _primaries(self) -> list[aioredis.Redis]:
        """A client of every server holding data (one here; each primary of a Cluster)."""
        return [self._r]

    async def export(self, sender: str | None = None) -> AsyncIterator[tuple[bytes, Fact]]:
        """See Registry.export: scans the buckets of every server, 200 at a time."""
        try:
            clients = await self._primaries()
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry read failed", exc) from exc
        for client in clients:
            async for item in self._export_from(client, sender):
                yield item

    async def _export_from(
        self, client: aioredis.Redis, sender: str | None
    ) -> AsyncIterator[tuple[bytes, Fact]]:
        try:
            cursor = 0
            while True:
                cursor, names = await client.scan(cursor, match=keys.FACTS_PATTERN, count=200)
                pipe = client.pipeline(transaction=False)
                for name in names:
                    pipe.hgetall(name)
                    pipe.hgetall(keys.side_key_for(_as_text(name)))
                replies = await pipe.execute()
                for index, name in enumerate(names):
                    bucket, side = replies[2 * index], replies[2 * index + 1]
                    for field, value in sorted(bucket.items()):
                        consumer = keys.consumer_from(_as_text(name), field, self._bits)
                        for record in _decode(value):
                            fact = await self._fact(record, {})
                            if sender is None or fact.sender in (sender, ALL_SENDERS):
                                extra = unpack_side(side.get(field + record.slot))
                                yield consumer, _with_side(fact, *extra)
                if cursor == 0:
                    break
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry read failed", exc) from exc

    async def stats(self) -> dict[str, int | str]:
        """See Registry.stats: counts by kind (a full scan), memory, audit size."""
        counts: dict[str, int | str] = {"consumers": 0}
        counts.update({k.value: 0 for k in Kind})
        consumers: set[bytes] = set()
        async for consumer, fact in self.export():
            consumers.add(consumer)
            counts[fact.kind.value] = int(counts[fact.kind.value]) + 1
        counts["consumers"] = len(consumers)
        try:
            clients = await self._primaries()
            used = 0
            for client in clients:
                used += int((await client.info("memory")).get("used_memory", 0))
            server = await clients[0].info("server")
            audit_len = await (await self._client(keys.AUDIT)).xlen(keys.AUDIT)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry read failed", exc) from exc
        counts["audit_entries"] = int(audit_len)
        counts["used_memory"] = used
        counts["server"] = _server_name(server)
        counts["bucket_bits"] = self._bits
        return counts

    async def remember_message(
        self, carrier_id: str, owner: str, client_id: str, ttl_s: int
    ) -> None:
        """See Registry.remember_message: one SET with an expiry."""
        try:
            key = keys.message_key(carrier_id)
            await (await self._client(key)).set(key, f"{owner}\x00{client_id}", ex=ttl_s)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry write failed", exc) from exc

    async def find_message(self, carrier_id: str) -> tuple[str, str] | None:
        """See Registry.find_message."""
        try:
            key = keys.message_key(carrier_id)
            value = await (await self._client(key)).get(key)
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry read failed", exc) from exc
        if value is None:
            return None
        owner, _, client_id = _as_text(value).partition("\x00")
        return owner, client_id

    async def ping(self) -> None:
        """See Registry.ping."""
        try:
            for client in await self._primaries():
                await client.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable("registry unavailable", exc) from exc

    async def close(self) -> None:
        """Close the lookup connection and the connection pool."""
        link, self._link, self._link_loop = self._link, None, None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        unsent, self._unsent = self._unsent, []
        for batch in unsent:
            batch.fail(RegistryUnavailable("registry closed"))
        if link is not None:
            link.abort()
        await self._r.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


class _BulkEncoder:
    """Encodes bulk rows for the merge script, with per-batch caches of the
    slot bytes (kind, channel, scope) and source-id bytes."""

    def __init__(self) -> None:
        self.slots: dict[tuple[Kind, str, Channel | None], bytes] = {}
        self.sources: dict[str, bytes] = {}

    def slot(self, kind: Kind, sender: str, channel: Channel | None, scope_id: int) -> bytes:
        """Remember and return the 4 slot bytes."""
        record = Record(kind, channel, scope_id, 0, 1, 0 if kind is Kind.REQUEST else None)
        slot = self.slots[(kind, sender, channel)] = record.slot
        return slot

    def source(self, name: str, source_id: int) -> bytes:
        """Remember and return the 2 source-id bytes."""
        encoded = self.sources[name] = source_id.to_bytes(2, "big")
        return encoded

    @staticmethod
    def item(row: BulkRow, slot: bytes, source: bytes) -> bytes:
        """One merge-script item for `row` (same bytes as records.pack)."""
        record = slot + row.at_ms.to_bytes(6, "big") + source
        if row.kind is Kind.REQUEST:
            record += (row.expires_ms or 0).to_bytes(6, "big")
        side = pack_side(row.evidence, None)
        return _encode_item(row.consumer, row.kind, bool(row.evidence), record, side)


def _encode_item(
    consumer: bytes, kind: Kind, has_evidence: bool, record: bytes, side: bytes
) -> bytes:
    if len(side) > MAX_SIDE_BYTES:
        raise ValueError(f"evidence and message id exceed {MAX_SIDE_BYTES} bytes")
    check = b"\x01" if kind is not Kind.REFUSAL and not has_evidence else b"\x00"
    return b"".join(
        (consumer, check, bytes((len(record),)), record, len(side).to_bytes(2, "big"), side)
    )


def link_endpoint(client: aioredis.Redis, sentinel: bool = False) -> dict[str, Any] | None:
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


def _decode(value: bytes | None) -> list[Record]:
    if not value:
        return []
    try:
        return unpack(value)
    except ValueError as exc:
        raise RegistryUnavailable(f"damaged registry value: {exc}") from exc


def _with_side(fact: Fact, evidence: str | None, message_id: str | None) -> Fact:
    return Fact(
        kind=fact.kind,
        sender=fact.sender,
        channel=fact.channel,
        at_ms=fact.at_ms,
        source=fact.source,
        evidence=evidence,
        message_id=message_id,
        expires_ms=fact.expires_ms,
    )


def _has_waitaof(info: dict[str, Any]) -> bool:
    if "valkey_version" in info:
        return True
    parts = str(info.get("redis_version", "0")).split(".")
    version = tuple(int(p) for p in parts[:2] if p.isdigit())
    return version >= (7, 2)


def _server_name(info: dict[str, Any]) -> str:
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


_AUDIT_FIELDS = (
    "event",
    "sender",
    "consumer",
    "channel",
    "reason",
    "source",
    "origin",
    "message_id",
    "detail",
)


def _audit_fields(entry: AuditEntry) -> dict[str, str | None]:
    return {name: getattr(entry, name) for name in _AUDIT_FIELDS}


def _as_text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _audit_entry(raw_id: str, raw: dict[Any, Any]) -> AuditEntry:
    values = {_as_text(k): _as_text(v) for k, v in raw.items()}
    at_ms = int(raw_id.split("-", maxsplit=1)[0])
    return AuditEntry(
        at_ms=at_ms,
        event=values.get("event", "?"),
        **{name: values.get(name) for name in _AUDIT_FIELDS if name != "event"},
    )
