"""Ending a client's connection without losing the answers on their way (the SMPP and
CMPP sessions).

A client may still be sending when its session ends (it broke the framing, or
unbound / terminated mid-burst). Closing a socket with unread input makes the
kernel send a reset, and a reset can destroy answers still on their way to the
client. So `finish` lets the requests in flight get their answers (`drain_s` at
most), follows the answers with a FIN (write_eof), reads and drops what the client
still sends until it closes too (at most LINGER_S and LINGER_BYTES), then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection

LINGER_S = 2.0
"""At the end of a session, how long the client's remaining input is read and dropped."""
LINGER_BYTES = 1 << 20
"""... and how much of it at most."""


def _nothing() -> None:
    """No last step before the FIN."""


async def finish(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    in_flight: Collection[asyncio.Task[None]],
    drain_s: float,
    before_eof: Callable[[], None] = _nothing,
) -> None:
    """Wait for `in_flight` (drain_s at most), call `before_eof` (the session writes what
    it has queued, and nothing after), send the FIN, drop the client's input until it
    closes (bounded), close."""
    if in_flight:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*in_flight), drain_s)
    with contextlib.suppress(OSError, RuntimeError, TimeoutError):
        if not writer.is_closing():
            before_eof()
            if writer.can_write_eof():
                writer.write_eof()
                await asyncio.wait_for(_discard_input(reader), LINGER_S)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _discard_input(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends, until it closes or LINGER_BYTES."""
    left = LINGER_BYTES
    while left > 0:
        data = await reader.read(min(left, 65536))
        if not data:
            return
        left -= len(data)
