"""Lookups (filterd/storage/lookups.py): batched per loop turn on a link of their
own, re-opened when lost, failing closed (RegistryUnavailable) on a deadline,
no server, or an answer of the wrong shape."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from filterd.errors import RegistryUnavailable
from filterd.model import (
    BulkRow,
    Channel,
    Fact,
    Kind,
)
from filterd.storage import lookups
from filterd.storage.redis import RedisRegistry
from tests.conftest import SERVERS
from tests.helpers import (
    RedisProcess,
    aof_args,
)
from tests.test_storage_redis import A, _commandstats, refusal


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
    monkeypatch.setattr(lookups, "LOOKUP_TIMEOUT_S", 0.05)

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


def test_a_callback_that_raises_leaves_the_others_answered(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Lookups of one batch whose first callback raises: the error goes to the event
    loop's exception handler, and the other callers still get their facts."""
    registry = RedisRegistry.from_url(valkey_server.url)
    run = event_loop_runner.run
    run(registry.record(A, refusal()))
    reported: list[object] = []
    answers: list[object] = []

    def broken(outcome: object) -> None:
        raise RuntimeError(f"callback bug ({outcome!r})")

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        try:
            registry.lookup_soon("acme", [A], broken)
            registry.lookup_soon("acme", [A], answers.append)
            waited = asyncio.gather(registry.lookup("acme", [A]))
            answers.append((await waited)[0])
        finally:
            asyncio.get_running_loop().set_exception_handler(None)

    run(go())
    [facts_soon, facts] = answers
    assert facts_soon == facts
    assert [f.kind for f in facts[0]] == [Kind.REFUSAL]  # type: ignore[index]
    assert [type(c["exception"]) for c in reported] == [RuntimeError]  # type: ignore[index]
    run(registry.close())
