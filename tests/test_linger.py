"""Ending a connection without losing answers (filterd/linger.py), over loopback: the
answers in flight are written, then the FIN; the client's remaining input is read and
dropped (so no reset destroys the answers); a client that keeps sending is cut after
the linger time."""

from __future__ import annotations

import asyncio
import time

from filterd.linger import LINGER_S, finish


async def _server(
    handler_done: asyncio.Future[float], answers: int, late_s: float
) -> tuple[asyncio.Server, int]:
    """A server that, once a client connects, answers `answers` requests late_s from now
    (tasks in flight) and then finishes the connection; its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queued: list[bytes] = []

        async def answer(n: int) -> None:
            await asyncio.sleep(late_s)
            queued.append(b"answer %d\n" % n)

        tasks = {asyncio.create_task(answer(n)) for n in range(answers)}

        def last_write() -> None:
            writer.write(b"".join(sorted(queued)))

        started = time.monotonic()
        await finish(reader, writer, tasks, 30.0, last_write)
        handler_done.set_result(time.monotonic() - started)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_answers_in_flight_then_fin_while_the_client_still_sends() -> None:
    """A client still sending when its session ends gets every answer in flight and
    then EOF (no reset), and the server closes once the client closes."""

    async def main() -> None:
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        server, port = await _server(done, answers=3, late_s=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * 100_000)  # the server never reads these as requests
        received = await asyncio.wait_for(reader.read(), 10)  # up to EOF: no reset
        assert received == b"answer 0\nanswer 1\nanswer 2\n"
        writer.close()
        took = await asyncio.wait_for(done, 10)
        assert took < LINGER_S
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_a_client_that_keeps_sending_is_cut_after_the_linger_time() -> None:
    """A client that never stops sending is closed LINGER_S after the FIN."""

    async def main() -> None:
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        server, port = await _server(done, answers=0, late_s=0.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def flood() -> None:
            while not done.done():
                writer.write(b"y" * 1000)
                await asyncio.sleep(0.01)

        flooding = asyncio.create_task(flood())
        assert await asyncio.wait_for(reader.read(), 10) == b""
        took = await asyncio.wait_for(done, 10)
        assert LINGER_S * 0.9 <= took < LINGER_S + 2
        await flooding
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
