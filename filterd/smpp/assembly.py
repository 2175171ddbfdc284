"""Holding the parts of a concatenated message until all of them are in, so that a rule
on its whole text (SPEC §7) is judged before any part reaches the carrier.

A part is held (its submit_sm_resp not sent) until every part of its message
(`filterd.smpp.text.concat_of`: same key, sequence 1 to total) has arrived; the
message is then released: its parts, in sequence order, go to the `Release`
given with its first part, and each held submit_sm is answered with the answer
for its part. A message still incomplete `hold_s` after its first part arrived
is released as it is (incomplete: `Release` refuses it), and so is every held
message once `close` is called (the relay is stopping: no more parts come).

A part whose sequence number is already held replaces it (the client sent it
again); both submit_sm get the answer of that part. A part that arrives after
its message was released starts a new message.

The parts and answers are the protocol's (SMPP submit_sm and its responses, CMPP
CMPP_SUBMIT and its): `readdress(answer, part)` gives the answer for one held
submit, under that submit's sequence number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from filterd.smpp.text import Concat

P = TypeVar("P")
"""A part: one submit of the message."""
A = TypeVar("A")
"""An answer to one submit."""

Release = Callable[[list[P], bool], Awaitable[list[A]]]
"""Judge and send one message: its parts in sequence order and whether they are all
there; the answer for each part, in the same order."""


class _Message(Generic[P, A]):
    """The parts of one message held so far and the submits waiting for an answer."""

    def __init__(self, total: int, release: Release[P, A]) -> None:
        self.total = total
        self.release = release
        self.parts: dict[int, P] = {}
        self.waiting: list[tuple[int, P, asyncio.Future[A]]] = []
        self.timer: asyncio.TimerHandle | None = None


class Assembler(Generic[P, A]):
    """The concatenated messages being gathered, by key."""

    def __init__(self, hold_s: float, readdress: Callable[[A, P], A]) -> None:
        self.hold_s = hold_s
        """How long after its first part an incomplete message is released."""
        self.readdress = readdress
        """The answer for one part, re-addressed to one held submit of that part."""
        self._messages: dict[Hashable, _Message[P, A]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        """How many messages are being gathered."""
        return len(self._messages)

    async def hold(self, key: Hashable, concat: Concat, part: P, release: Release[P, A]) -> A:
        """Hold `part` of the message `key` until the message is released; its answer.

        `release` is used when this part is the first of its message.
        """
        loop = asyncio.get_running_loop()
        message = self._messages.get(key)
        if message is None:
            message = self._messages[key] = _Message(concat.total, release)
            message.timer = loop.call_later(self.hold_s, self._release, key, message)
        message.parts[concat.sequence] = part
        answer: asyncio.Future[A] = loop.create_future()
        message.waiting.append((concat.sequence, part, answer))
        if len(message.parts) == message.total or self._closed:
            self._release(key, message)
        return await answer

    def close(self) -> None:
        """Release every message now (incomplete ones are refused), and each part that
        arrives from now on at once."""
        self._closed = True
        for key, message in list(self._messages.items()):
            self._release(key, message)

    def _release(self, key: Hashable, message: _Message[P, A]) -> None:
        """Stop gathering `message` and answer its parts (in a task of its own, so that
        no client's submit being cancelled stops the others' answers)."""
        if self._messages.get(key) is message:
            del self._messages[key]
        if message.timer is not None:
            message.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: _Message[P, A]) -> None:
        order = sorted(message.parts)
        complete = len(order) == message.total
        try:
            answers = await message.release([message.parts[n] for n in order], complete)
        except Exception as exc:  # every held submit gets it (the session answers RSYSERR)
            for _, _, future in message.waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        by_sequence = dict(zip(order, answers, strict=True))
        for sequence, part, future in message.waiting:
            if not future.done():
                future.set_result(self.readdress(by_sequence[sequence], part))
