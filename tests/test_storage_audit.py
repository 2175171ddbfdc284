"""The audit stream (filterd/storage/audit.py): bounded, read back newest first."""

from __future__ import annotations

import asyncio

import redis

from filterd.model import (
    AuditEntry,
)
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from tests.helpers import (
    RedisProcess,
)


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


def test_a_since_before_1970_reads_from_the_start(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """A read whose since lies before the epoch (`filterctl audit --since 20000d` on a
    young clock, or a huge duration) reads every entry instead of failing on a
    negative stream id."""
    registry = RedisRegistry.from_url(valkey_server.url)
    event_loop_runner.run(registry.append_audit([AuditEntry(at_ms=0, event="drop", detail="x")]))
    found = event_loop_runner.run(registry.read_audit(AuditQuery(since_ms=-(10**12), limit=5)))
    assert [e.detail for e in found] == ["x"]
    event_loop_runner.run(registry.close())
