"""The raw RESP connection (filterd/storage/link.py): pipelined commands answered in
order by a real Valkey/Redis server, error replies told apart, and a peer that
breaks the stream (an unasked-for reply) or stays silent past the deadline gets
the connection closed, with the work in flight failed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from filterd.errors import RegistryUnavailable
from filterd.storage.link import RespLink, is_error
from tests.helpers import RedisProcess


class Work:
    """An item in flight, as the registry's lookup batches are."""

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.errors: list[Exception] = []

    def fail(self, error: Exception) -> None:
        """Record the failure."""
        self.errors.append(error)


async def _open(
    connect: Callable[[Callable[[], RespLink]], Awaitable[Any]], timeout_s: float = 5.0
) -> tuple[RespLink, asyncio.Future[Exception | None]]:
    """A link through `connect`, and a future set when the link is lost."""
    lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def on_lost(_link: RespLink, exc: Exception | None) -> None:
        if not lost.done():
            lost.set_result(exc)

    _, link = await connect(lambda: RespLink(on_lost, timeout_s=timeout_s))
    return link, lost


def test_pipelined_commands_are_answered_in_order(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """Commands written back to back get their replies in order, each to its own
    callback; a server error reply is recognised by is_error."""

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        link, _ = await _open(
            lambda f: loop.create_unix_connection(f, str(valkey_server.socket_path))
        )
        replies: list[Any] = []
        done = loop.create_future()
        commands: list[tuple[Any, ...]] = [
            ("SET", "fd:test:link", "v1"), ("GET", "fd:test:link"), ("ECHO", "x"),
            ("NO-SUCH-COMMAND",), ("DEL", "fd:test:link"),
        ]  # fmt: skip
        for index, command in enumerate(commands):
            last = index == len(commands) - 1

            def callback(reply: Any, last: bool = last) -> None:
                replies.append(reply)
                if last:
                    done.set_result(None)

            link.send(command, callback)
        await asyncio.wait_for(done, 10)
        link.abort()
        return replies

    replies = event_loop_runner.run(scenario())
    assert replies[:3] == [b"OK", b"v1", b"x"]
    assert is_error(replies[3])
    assert not is_error(replies[0])
    assert replies[4] == 1


def test_send_all_writes_once_and_answers_each_in_order(
    valkey_server: RedisProcess, event_loop_runner: asyncio.Runner
) -> None:
    """send_all writes several commands in one transport write; the one callback
    gets each reply in command order, error replies included."""

    async def scenario() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        link, _ = await _open(
            lambda f: loop.create_unix_connection(f, str(valkey_server.socket_path))
        )
        assert link.transport is not None
        writes = 0
        real_write = link.transport.write

        def counting(data: Any) -> None:
            nonlocal writes
            writes += 1
            real_write(data)

        link.transport.write = counting  # type: ignore[method-assign]
        replies: list[Any] = []
        done = loop.create_future()

        def take(reply: Any) -> None:
            replies.append(reply)
            if len(replies) == 4:
                done.set_result(None)

        link.send_all([("ECHO", "a"), ("NO-SUCH-COMMAND",), ("ECHO", "b"), ("PING",)], take)
        await asyncio.wait_for(done, 10)
        link.abort()
        return replies, writes

    replies, writes = event_loop_runner.run(scenario())
    assert writes == 1
    assert replies[0] == b"a"
    assert is_error(replies[1])
    assert replies[2:] == [b"b", b"PONG"]


async def _fake_peer(answer: bytes | None) -> asyncio.Server:
    """A loopback peer that sends `answer` unasked as soon as a client connects
    (None: stays silent)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_unasked_reply_closes_the_link(event_loop_runner: asyncio.Runner) -> None:
    """A reply that no command waits for means the stream is out of step: the link
    closes itself and tells its owner."""

    async def scenario() -> bool:
        server = await _fake_peer(b"+OK\r\n")
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        link, lost = await _open(lambda f: loop.create_connection(f, "127.0.0.1", port))
        await asyncio.wait_for(lost, 10)
        server.close()
        return link.closed

    assert event_loop_runner.run(scenario())


def test_work_unanswered_past_the_deadline_fails(event_loop_runner: asyncio.Runner) -> None:
    """Work in flight longer than the deadline fails with RegistryUnavailable and the
    link closes (its later replies could not be matched any more)."""

    async def scenario() -> tuple[list[Exception], bool]:
        server = await _fake_peer(None)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        link, lost = await _open(
            lambda f: loop.create_connection(f, "127.0.0.1", port), timeout_s=0.2
        )
        work = Work(loop.time())
        link.batches.add(work)
        link.send(("PING",), lambda reply: None)
        await asyncio.wait_for(lost, 10)
        server.close()
        return work.errors, link.closed

    errors, closed = event_loop_runner.run(scenario())
    assert closed
    assert len(errors) == 1
    assert isinstance(errors[0], RegistryUnavailable)
