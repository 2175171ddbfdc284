"""The in-memory fake (filterd/storage/memory.py): beyond the shared contract
(tests/test_storage_port.py), it can play a registry that is down."""

from __future__ import annotations

import asyncio

import pytest

from filterd.errors import RegistryUnavailable
from filterd.model import ALL_SENDERS, Fact, Kind, WriteResult
from filterd.storage.memory import MemoryRegistry
from filterd.storage.port import AuditQuery

A = bytes.fromhex("00112233445566778899")


def test_switched_off_fake_is_unavailable(event_loop_runner: asyncio.Runner) -> None:
    """With `available = False` every call raises RegistryUnavailable; switched on
    again, the facts written before are still there."""
    run = event_loop_runner.run
    registry = MemoryRegistry()
    fact = Fact(Kind.REFUSAL, ALL_SENDERS, None, 1000, "test")
    assert run(registry.record(A, fact)) is WriteResult.STORED
    registry.available = False
    for call in (
        registry.lookup("acme", [A]),
        registry.record(A, fact),
        registry.read_audit(AuditQuery()),
        registry.check_layout(),
        registry.ping(),
    ):
        with pytest.raises(RegistryUnavailable):
            run(call)
    registry.available = True
    assert [f.at_ms for f in run(registry.lookup("acme", [A]))[0]] == [1000]
