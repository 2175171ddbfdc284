"""The Lua scripts (filterd/storage/scripts.py): loaded again when the server
forgot them; the bytes they read and answer."""

from __future__ import annotations

import asyncio

import pytest

from filterd.errors import RegistryUnavailable
from filterd.model import BulkRow, Channel, Fact, Kind, WriteResult
from filterd.storage import scripts
from filterd.storage.redis import RedisRegistry
from tests.helpers import RedisProcess
from tests.test_storage_redis import A, refusal


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


def test_bulk_row_and_fact_encode_to_the_same_item() -> None:
    """A bulk row and the equal Fact give the merge script the same bytes (so
    record_many and record store the same), and the check byte asks for a refusal
    check only for a consent without evidence."""
    consumer = bytes(range(10))
    row = BulkRow(consumer, Kind.CONSENT, "acme", Channel.SMS, 1000, "form")
    encoder = scripts.BulkEncoder()
    slot = encoder.slot(row.kind, row.sender, row.channel, 7)
    item = encoder.item(row, slot, encoder.source(row.source, 3))
    fact = Fact(Kind.CONSENT, "acme", Channel.SMS, 1000, "form")
    assert item == scripts.fact_item(consumer, fact, 7, 3)
    assert item[10] == 1  # consent without evidence: checked against refusals
    refusal_item = scripts.fact_item(consumer, Fact(Kind.REFUSAL, "*", None, 1, "t"), 0, 3)
    assert refusal_item[10] == 0


def test_merge_answers_are_checked() -> None:
    """merge_calls cuts a group into calls of SCRIPT_ITEMS items; merge_codes reads one
    code per item back and refuses an answer of the wrong size (RegistryUnavailable)."""
    items = [bytes(12)] * (scripts.SCRIPT_ITEMS + 1)
    groups = [((), items)]
    calls = scripts.merge_calls(groups, 16)
    assert len(calls) == 2
    answer = [b"1" * scripts.SCRIPT_ITEMS, b"0"]
    codes = scripts.merge_codes(groups, answer)
    assert scripts.results(codes)[-2:] == [WriteResult.STORED, WriteResult.SUPERSEDED]
    with pytest.raises(RegistryUnavailable):
        scripts.merge_codes(groups, [b"1" * scripts.SCRIPT_ITEMS])
    with pytest.raises(RegistryUnavailable):
        scripts.merge_codes(groups, [b"1", b"0"])
