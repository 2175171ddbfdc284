"""Interned names (filterd/storage/names.py): a new sender or source name is on
disk before its id is used in a fact."""

from __future__ import annotations

import asyncio

from filterd.model import (
    Fact,
    Kind,
    WriteResult,
)
from filterd.storage.redis import RedisRegistry
from tests.helpers import (
    RedisProcess,
)
from tests.test_storage_redis import A, _commandstats, refusal


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
