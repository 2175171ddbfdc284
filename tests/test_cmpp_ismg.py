"""The ISMG link (filterd as an SP) against a fake ISMG on loopback, in both versions."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from filterd.cmpp import ismg as ismg_module
from filterd.cmpp.decode import decode
from filterd.cmpp.encode import encode
from filterd.cmpp.header import HEADER, V20, V30
from filterd.cmpp.ismg import IsmgClient, IsmgUnavailable, route_id, with_sequence
from filterd.cmpp.pdu import Deliver, Submit, SubmitResp
from filterd.settings import CmppUpstream
from tests.cmpp_ismg import FakeIsmg


@pytest.fixture
def ismg() -> Iterator[FakeIsmg]:
    """A fake ISMG."""
    server = FakeIsmg().start()
    yield server
    server.shutdown()


def upstream(
    port: int,
    version: int = V30,
    secret: str = "secret",  # noqa: S107
    **extra: float,
) -> CmppUpstream:
    """Link settings for the fake ISMG (`extra`: window, rate, active_test_s)."""
    return CmppUpstream("127.0.0.1", port, "901234", secret, version, **extra)  # type: ignore[arg-type]


def submit(destination: str = "8613800138000") -> Submit:
    """A one-destination CMPP_SUBMIT."""
    return Submit(
        sequence_id=0, msg_src="900001", src_id="10690001",
        dest_terminal_ids=(destination,), msg_content=b"hello",
    )  # fmt: skip


async def no_deliveries(pdu: Deliver) -> int:
    """A handler for tests that expect no CMPP_DELIVER."""
    raise AssertionError(pdu)


Body = Callable[[IsmgClient], Awaitable[object]]


def with_client(settings: CmppUpstream, body: Body, on_deliver=no_deliveries) -> object:  # type: ignore[no-untyped-def]
    """Run a client until `body(client)` returns (after it logged in), then stop it."""

    async def run() -> object:
        stop = asyncio.Event()
        client = IsmgClient(settings, on_deliver)
        task = asyncio.create_task(client.run(stop))
        try:
            await asyncio.wait_for(client.wait_connected(), 30)
            return await body(client)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    return asyncio.run(run())


@pytest.mark.parametrize("version", [V20, V30])
def test_logs_in_submits_and_terminates(ismg: FakeIsmg, version: int) -> None:
    """The client logs in with the SP's secret in the configured version, submits (many at
    once, within its window) and gets the ISMG's Msg_Ids; at stop it sends CMPP_TERMINATE."""

    async def body(client: IsmgClient) -> list[SubmitResp]:
        numbers = [f"861380013800{i}" for i in range(10)]
        return list(await asyncio.gather(*(client.submit(submit(n)) for n in numbers)))

    answers = with_client(upstream(ismg.port, version, window=4), body)
    assert isinstance(answers, list)
    assert sorted(a.msg_id for a in answers) == sorted(ismg.msg_ids)
    assert all(a.result == 0 for a in answers)
    destinations = sorted(s.dest_terminal_ids[0] for s in ismg.submits)
    assert destinations == [f"861380013800{i}" for i in range(10)]
    assert ismg.logins == 1
    assert ismg.refused_logins == []
    ismg.wait_for(lambda: ismg.terminates == 1)


def test_a_refused_submit_gets_the_ismg_result(ismg: FakeIsmg) -> None:
    """A Result other than 0 from the ISMG comes back to the caller as it is."""
    ismg.submit_result = 8

    async def body(client: IsmgClient) -> SubmitResp:
        return await client.submit(submit())

    answer = with_client(upstream(ismg.port), body)
    assert isinstance(answer, SubmitResp)
    assert answer.result == 8


@pytest.mark.parametrize("version", [V20, V30])
def test_wrong_secret_never_logs_in(ismg: FakeIsmg, version: int) -> None:
    """A refused login (Status 3) leaves the link down, submit() fails at once, and the
    login is retried with back-off, not given up."""

    async def run() -> None:
        stop = asyncio.Event()
        client = IsmgClient(upstream(ismg.port, version, "wrong"), no_deliveries)
        task = asyncio.create_task(client.run(stop))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.wait_connected(), 1.5)
        with pytest.raises(IsmgUnavailable):
            await client.submit(submit())
        await asyncio.to_thread(ismg.wait_for, lambda: len(ismg.refused_logins) >= 2)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(run())
    assert ismg.logins == 0
    assert ismg.refused_logins[:2] == [3, 3]


def test_unavailable_while_down_and_reconnects(ismg: FakeIsmg) -> None:
    """With the ISMG gone, submit() fails with IsmgUnavailable; the client logs in again by
    itself when the ISMG is back."""

    async def body(client: IsmgClient) -> SubmitResp:
        await asyncio.to_thread(ismg.stop)
        with pytest.raises(IsmgUnavailable):  # gone: failed at once or in flight
            await client.submit(submit())
        await asyncio.to_thread(ismg.start)
        await asyncio.wait_for(client.wait_connected(), 60)
        return await client.submit(submit())

    answer = with_client(upstream(ismg.port), body)
    assert isinstance(answer, SubmitResp)
    assert answer.result == 0
    assert ismg.logins == 2


def test_submits_in_flight_fail_when_the_link_drops(ismg: FakeIsmg) -> None:
    """Submits beyond the window wait for a slot; when the link drops, those sent and
    unanswered fail with IsmgUnavailable instead of hanging."""
    ismg.answer_submits = False

    async def body(client: IsmgClient) -> list[object]:
        tasks = [asyncio.create_task(client.submit(submit())) for _ in range(5)]
        await asyncio.to_thread(ismg.wait_submits, 2)
        await asyncio.sleep(0.3)
        sent = len(ismg.submits)  # the window holds the other three back
        await asyncio.to_thread(ismg.stop)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [sent, *results]

    sent, *results = with_client(upstream(ismg.port, window=2), body)  # type: ignore[misc]
    assert sent == 2
    assert all(isinstance(r, IsmgUnavailable) for r in results)


def test_unanswered_submits_fail_after_the_response_timeout(
    ismg: FakeIsmg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit the ISMG never answers fails with IsmgUnavailable after the response
    timeout, and so does one sent later; the link stays up for the next."""
    monkeypatch.setattr(ismg_module, "RESPONSE_TIMEOUT_S", 0.3)
    ismg.answer_submits = False

    async def body(client: IsmgClient) -> list[object]:
        first = asyncio.create_task(client.submit(submit()))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(client.submit(submit()))
        results = await asyncio.gather(first, second, return_exceptions=True)
        ismg.answer_submits = True
        return [*results, await client.submit(submit())]

    *failed, answer = with_client(upstream(ismg.port), body)  # type: ignore[misc]
    assert [str(f) for f in failed] == ["the ISMG did not answer in time"] * 2
    assert isinstance(answer, SubmitResp)
    assert answer.result == 0


def test_rate_limits_submits(ismg: FakeIsmg) -> None:
    """With `rate` set, submits leave no faster than that many per second."""

    async def body(client: IsmgClient) -> float:
        started = time.monotonic()
        await asyncio.gather(*(client.submit(submit()) for _ in range(6)))
        return time.monotonic() - started

    elapsed = with_client(upstream(ismg.port, rate=10.0), body)
    assert isinstance(elapsed, float)
    assert elapsed >= 0.45


@pytest.mark.parametrize("version", [V20, V30])
def test_answers_deliveries_with_the_handler_result(ismg: FakeIsmg, version: int) -> None:
    """A CMPP_DELIVER from the ISMG goes to the handler; its Result is sent back in the
    CMPP_DELIVER_RESP with the DELIVER's Msg_Id; a handler that fails answers 8."""
    delivered: list[Deliver] = []

    async def on_deliver(pdu: Deliver) -> int:
        delivered.append(pdu)
        if pdu.msg_content == b"boom":
            raise RuntimeError("handler failed")
        return 9

    async def body(client: IsmgClient) -> list[int]:
        first = await asyncio.to_thread(ismg.send_mo, "8613800138000", "106900011", b"TD")
        second = await asyncio.to_thread(ismg.send_mo, "8613800138000", "106900011", b"boom")
        return [first, second]

    results = with_client(upstream(ismg.port, version), body, on_deliver)
    assert results == [9, 8]
    assert [(d.src_terminal_id, d.dest_id, d.msg_content) for d in delivered] == [
        ("8613800138000", "106900011", b"TD"),
        ("8613800138000", "106900011", b"boom"),
    ]


def test_active_test_both_ways(ismg: FakeIsmg) -> None:
    """The client answers the ISMG's CMPP_ACTIVE_TEST, and probes a link quiet for
    `active_test_s` with its own."""

    async def body(client: IsmgClient) -> bool:
        answered = await asyncio.to_thread(ismg.active_test)
        await asyncio.to_thread(ismg.wait_for, lambda: ismg.active_tests >= 2, 10)
        return answered

    assert with_client(upstream(ismg.port, active_test_s=1), body) is True
    assert ismg.logins == 1  # the probes kept the one link


def test_terminate_from_the_ismg_is_answered_and_the_link_comes_back(ismg: FakeIsmg) -> None:
    """The ISMG's CMPP_TERMINATE gets its response and the link closes; the client logs in
    again with back-off."""

    async def body(client: IsmgClient) -> SubmitResp:
        assert await asyncio.to_thread(ismg.terminate)
        await asyncio.to_thread(ismg.wait_logged_in, 30, 1, 2)
        await asyncio.wait_for(client.wait_connected(), 30)
        return await client.submit(submit())

    answer = with_client(upstream(ismg.port), body)
    assert isinstance(answer, SubmitResp)
    assert answer.result == 0


def test_bad_messages_from_the_ismg(ismg: FakeIsmg) -> None:
    """An unknown command and a response nobody waits for keep the link; a Total_Length
    beyond the cap drops it (framing is lost) and the client logs in again."""

    async def body(client: IsmgClient) -> SubmitResp:
        ismg.send_raw(HEADER.pack(12, 0x00000077, 5))  # unknown command
        ismg.send_raw(HEADER.pack(13, 0x80000008, 999) + b"\0")  # ACTIVE_TEST_RESP for nothing
        first = await client.submit(submit())
        assert first.result == 0
        assert ismg.logins == 1
        ismg.send_raw(HEADER.pack(1 << 20, 0x00000005, 6))
        await asyncio.to_thread(ismg.wait_logged_in, 30, 1, 2)
        await asyncio.wait_for(client.wait_connected(), 30)
        return await client.submit(submit())

    answer = with_client(upstream(ismg.port), body)
    assert isinstance(answer, SubmitResp)
    assert answer.result == 0


def test_route_id_keeps_cmpp_ids_apart() -> None:
    """A Msg_Id's key in the message-route map is its decimal value, prefixed so that it
    cannot meet an SMPP carrier's id."""
    assert route_id(12345) == "cmpp:12345"
    assert route_id(12345) != "12345"


@pytest.mark.parametrize("version", [V20, V30])
def test_with_sequence_sets_only_the_sequence_id(version: int) -> None:
    """A message re-numbered for the link is the encoding of the same message with that
    Sequence_Id, octet for octet."""
    pdu = Submit(7, msg_src="901001", src_id="1065", dest_terminal_ids=("13800138000",),
                 msg_content=b"hi")  # fmt: skip
    renumbered = with_sequence(encode(pdu, version), 0xFEDCBA98)
    expected = dataclasses.replace(pdu, sequence_id=0xFEDCBA98)
    assert renumbered == encode(expected, version)
    assert decode(renumbered, version) == expected
