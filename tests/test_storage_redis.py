"""The Redis adapter beyond the shared contract: privacy, the packed layout,
round trips per operation, recovery, each against a real server process."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
import redis

from filterd.errors import RegistryUnavailable
from filterd.identity import ConsumerHasher
from filterd.model import (
    ALL_SENDERS,
    BulkRow,
    Channel,
    Fact,
    FactRequest,
    Kind,
    WriteResult,
)
from filterd.normalize import normalize
from filterd.service import Service
from filterd.storage import keys
from filterd.storage.embedded import EmbeddedServer
from filterd.storage.redis import RedisRegistry
from tests.conftest import ServerPool, flush
from tests.helpers import (
    RedisProcess,
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


T = 1_700_000_000_000


def test_registry_written_before_voice_reads_unchanged(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """A bucket as a registry wrote it before the voice channel (raw bytes and names: an
    email consent with evidence, an sms request, a refusal of every sender on every
    channel, an sms refusal) reads back as the same facts; a voice refusal written
    beside them is appended and leaves their bytes as they were."""
    client = redis.Redis(unix_socket_path=str(valkey_server.socket_path))
    client.hset(keys.LAYOUT, mapping={"bucket_bits": 16, "format": "1"})
    client.hset(keys.SENDERS, mapping={"acme": 1, "beta": 2})
    client.hset(keys.SENDER_NAMES, mapping={1: "acme", 2: "beta"})
    client.hset(keys.SOURCES, mapping={"cli": 1, "import:a.csv": 2, "phone call": 3})
    client.hset(keys.SOURCE_NAMES, mapping={1: "cli", 2: "import:a.csv", 3: "phone call"})
    legacy = bytes.fromhex(
        "11 000001 018bcfe56800 0001"
        "22 000002 018bcfe56801 0002 0274a48a7801"
        "30 000000 018bcfe56802 0003"
        "32 000002 018bcfe56803 0001"
    )
    field = keys.consumer_field(A)
    client.hset(keys.facts_key(A, 16), field, legacy)
    client.hset(keys.side_key(A, 16), field + b"\x11\x00\x00\x01", b"form #1\x00")
    expires = T + 1 + 10**12
    before = [
        Fact(Kind.REFUSAL, "beta", Channel.SMS, T + 3, "cli"),
        Fact(Kind.REFUSAL, ALL_SENDERS, None, T + 2, "phone call"),
        Fact(Kind.REQUEST, "beta", Channel.SMS, T + 1, "import:a.csv", expires_ms=expires),
        Fact(Kind.CONSENT, "acme", Channel.EMAIL, T, "cli", evidence="form #1"),
    ]
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    assert run(registry.facts(A)) == before
    voice = Fact(Kind.REFUSAL, "acme", Channel.VOICE, T + 4, "cli")
    assert run(registry.record(A, voice)) is WriteResult.STORED
    assert run(registry.facts(A)) == [voice, *before]
    run(registry.close())
    stored = client.hget(keys.facts_key(A, 16), field)
    client.close()
    assert stored == legacy + bytes.fromhex("33 000001 018bcfe56804 0001")
