"""The write path (filterd/storage/writes.py): the key layout fixed at the first
write and checked before the next."""

from __future__ import annotations

import asyncio

import pytest

from filterd.errors import FilterdError
from filterd.storage.redis import RedisRegistry
from tests.helpers import (
    RedisProcess,
)
from tests.test_storage_redis import A, refusal


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
