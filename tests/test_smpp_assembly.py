"""Holding the parts of a concatenated message (filterd/smpp/assembly.py): released
once whole, in sequence order; at the deadline or on close as they are; each held
submit answered with its own part's answer (a unit test of the coordination; the relay
end to end is in tests/test_smpp_submit.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from filterd.smpp.assembly import Assembler
from filterd.smpp.pdu import Pdu, SubmitSm, SubmitSmResp, response_to
from filterd.smpp.status import ESME_ROK
from filterd.smpp.text import Concat

KEY = ("promo", "message-1")


def part(sequence: int, total: int = 3, client_sequence: int | None = None) -> SubmitSm:
    """Part `sequence` of `total`, sent by the client with `client_sequence` (10 + sequence)."""
    udh = bytes([5, 0, 3, 0x42, total, sequence])
    return SubmitSm(
        sequence_number=client_sequence or 10 + sequence, esm_class=0x40, short_message=udh
    )


def concat(sequence: int, total: int = 3) -> Concat:
    """The concatenation of part `sequence` of `total`."""
    return Concat(0x42, total, sequence)


class Releases:
    """A Release that records its calls and answers each part with id m<part number>."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], bool]] = []

    async def __call__(self, parts: list[SubmitSm], complete: bool) -> list[Pdu]:
        """Record (the client sequence numbers in order, complete); answer every part."""
        self.calls.append(([p.sequence_number for p in parts], complete))
        return [response_to(p, ESME_ROK, message_id=f"m{p.short_message[5]}") for p in parts]


def assembler_of(hold_s: float) -> Assembler[SubmitSm, Pdu]:
    """An assembler of submit_sm, each held submit answered under its sequence number."""
    return Assembler(
        hold_s, lambda answer, p: dataclasses.replace(answer, sequence_number=p.sequence_number)
    )


def ids(answers: list[Pdu]) -> list[tuple[int, str]]:
    """(sequence number, message id) of each answer."""
    return [(a.sequence_number, a.message_id) for a in answers if isinstance(a, SubmitSmResp)]


def test_parts_held_until_the_message_is_whole() -> None:
    """Parts arriving out of order wait until the last one is in; the message is then
    released once, its parts in sequence order, and each held submit gets its own
    part's answer."""

    async def scenario() -> tuple[bool, list[Pdu], Releases, int]:
        assembler, release = assembler_of(3600), Releases()
        first = [
            asyncio.create_task(assembler.hold(KEY, concat(n), part(n), release)) for n in (3, 1)
        ]
        await asyncio.sleep(0)  # one loop turn: both parts are held
        waiting = not any(task.done() for task in first) and release.calls == []
        last = await assembler.hold(KEY, concat(2), part(2), release)
        return waiting, [*(await asyncio.gather(*first)), last], release, len(assembler)

    waiting, answers, release, left = asyncio.run(scenario())
    assert waiting
    assert release.calls == [([11, 12, 13], True)]
    assert ids(answers) == [(13, "m3"), (11, "m1"), (12, "m2")]
    assert left == 0


def test_incomplete_message_released_at_the_deadline() -> None:
    """A message still missing parts `hold_s` after its first part is released as it is
    (complete False); a part arriving later starts a new message."""

    async def scenario() -> tuple[list[Pdu], Releases, int]:
        assembler, release = assembler_of(0.05), Releases()
        answer = await assembler.hold(KEY, concat(1, 2), part(1, 2), release)
        held = asyncio.create_task(assembler.hold(KEY, concat(2, 2), part(2, 2), release))
        await asyncio.sleep(0)  # one loop turn: the late part is held
        started_again = len(assembler)
        return [answer, await held], release, started_again

    answers, release, started_again = asyncio.run(scenario())
    assert release.calls == [([11], False), ([12], False)]
    assert ids(answers) == [(11, "m1"), (12, "m2")]
    assert started_again == 1


def test_close_releases_every_message_now() -> None:
    """close() releases the held messages at once (incomplete), and a part that arrives
    afterwards is released at once too."""

    async def scenario() -> tuple[list[Pdu], Releases]:
        assembler, release = assembler_of(3600), Releases()
        held = asyncio.create_task(assembler.hold(KEY, concat(1), part(1), release))
        await asyncio.sleep(0)  # one loop turn: the part is held
        assembler.close()
        late = await assembler.hold(("promo", "message-2"), concat(2), part(2), release)
        return [await held, late], release

    answers, release = asyncio.run(scenario())
    assert release.calls == [([11], False), ([12], False)]
    assert ids(answers) == [(11, "m1"), (12, "m2")]


def test_part_sent_again_replaces_the_held_one() -> None:
    """A part whose number is already held replaces it (the later copy is sent on);
    both submits get that part's answer, each with its own sequence number."""

    async def scenario() -> tuple[list[Pdu], Releases]:
        assembler, release = assembler_of(3600), Releases()
        first = asyncio.create_task(assembler.hold(KEY, concat(1, 2), part(1, 2), release))
        again = asyncio.create_task(
            assembler.hold(KEY, concat(1, 2), part(1, 2, client_sequence=21), release)
        )
        await asyncio.sleep(0)  # one loop turn: both copies are held
        last = await assembler.hold(KEY, concat(2, 2), part(2, 2), release)
        return [await first, await again, last], release

    answers, release = asyncio.run(scenario())
    assert release.calls == [([21, 12], True)]
    assert ids(answers) == [(11, "m1"), (21, "m1"), (12, "m2")]


def test_release_failure_reaches_every_part() -> None:
    """When releasing fails, every held submit gets the error (the session answers
    ESME_RSYSERR)."""

    async def failing(parts: list[SubmitSm], complete: bool) -> list[Pdu]:
        raise ValueError("broken")

    async def scenario() -> list[BaseException | Pdu]:
        assembler = assembler_of(3600)
        held = asyncio.create_task(assembler.hold(KEY, concat(1, 2), part(1, 2), failing))
        await asyncio.sleep(0)  # one loop turn: the part is held
        last = asyncio.create_task(assembler.hold(KEY, concat(2, 2), part(2, 2), failing))
        return await asyncio.gather(held, last, return_exceptions=True)

    results = asyncio.run(scenario())
    assert [str(r) for r in results] == ["broken", "broken"]
    assert all(isinstance(r, ValueError) for r in results)


def test_a_cancelled_part_does_not_stop_the_others() -> None:
    """A held submit cancelled (its client gone) leaves the message to be released and
    the other parts answered."""

    async def scenario() -> tuple[Pdu, Releases]:
        assembler, release = assembler_of(3600), Releases()
        gone = asyncio.create_task(assembler.hold(KEY, concat(1, 2), part(1, 2), release))
        await asyncio.sleep(0)  # one loop turn: the part is held
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await assembler.hold(KEY, concat(2, 2), part(2, 2), release), release

    answer, release = asyncio.run(scenario())
    assert release.calls == [([11, 12], True)]
    assert ids([answer]) == [(12, "m2")]
