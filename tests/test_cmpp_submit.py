"""The CMPP_SUBMIT path (filterd/cmpp/submit.py) end to end: an SP client over loopback,
the relay in this process, the fake ISMG and a real registry. One decision per
destination; forwarded with the permitted ones only and Result 0 with filterd's Msg_Id,
mapped to the ISMG's; REFUSED / NOCONST reports when asked; Results 64 / 65 / 8 / 13;
long messages one decision; the text rules and quiet hours (Result 66 / 67 / 8)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator

import pytest

from filterd.admission import Refused, phone_recipient
from filterd.cmpp.header import V20, V30
from filterd.cmpp.ismg import route_id
from filterd.cmpp.pdu import Deliver
from filterd.cmpp.report import decode_report
from filterd.cmpp.result import (
    ALL_REFUSED,
    BAD_DEST_TERMINAL_ID,
    CANCEL_TEXT_MISSING,
    FLOW_CONTROL,
    NONE_PERMITTED,
    SIGNATURE_MISSING,
)
from filterd.cmpp.server import CmppRelay
from filterd.cmpp.submit import terminal_address
from filterd.cmpp.text import MSG_FMT_UCS2
from filterd.model import Kind
from filterd.quiet_hours import parse_window
from filterd.settings import CancelMethod, ComplianceSettings, SenderCompliance
from tests.cmpp_ismg import FakeIsmg
from tests.cmpp_relay_helpers import (
    BOB,
    CAROL,
    JANE,
    NOTIFY_ID,
    NOTIFY_SECRET,
    SP_ID,
    CmppClient,
    in_process_relay,
    record,
    record_all,
    settings,
    submit_pdu,
)
from tests.helpers import RedisProcess

Body = Callable[[CmppRelay, CmppClient], Awaitable[None]]
SIGNATURE, CANCEL = "【Acme】", "回T退订"


@pytest.fixture
def ismg() -> Iterator[FakeIsmg]:
    """A fake ISMG."""
    server = FakeIsmg().start()
    yield server
    server.shutdown()


def run(
    registry: RedisProcess,
    ismg: FakeIsmg | None,
    body: Body,
    *,
    version: int = V30,
    sp: tuple[str, str] | None = None,
    **options: object,
) -> None:
    """Run `body(relay, client)`: the client logged in (as SP_ID, in `version`) to an
    in-process relay linked to `ismg` (CmppRelay keyword `options`)."""

    async def main() -> None:
        cmpp = settings(ismg)
        async with in_process_relay(cmpp, registry.url, **options) as (relay, port):
            client = await CmppClient.open(port)
            login = await client.connect(*(sp or ()), version=version)
            assert login.status == 0
            try:
                await body(relay, client)
            finally:
                await client.close()

    asyncio.run(main())


async def reports(client: CmppClient, count: int) -> list[tuple[str, str, int]]:
    """(destination, Stat, reported Msg_Id) of the next `count` status reports."""
    found = []
    while len(found) < count:
        if client.received:
            pdu = client.received.pop(0)
        else:
            pdu = await client.read()
        assert isinstance(pdu, Deliver), pdu
        assert pdu.registered_delivery == 1
        report = decode_report(pdu.msg_content, client.version)
        assert pdu.src_terminal_id == report.dest_terminal_id
        found.append((report.dest_terminal_id, report.stat, report.msg_id))
    return found


@pytest.mark.parametrize("version", [V20, V30])
def test_permitted_destinations_only_are_forwarded_with_reports_for_the_others(
    valkey_server: RedisProcess, ismg: FakeIsmg, version: int
) -> None:
    """Consent for Jane, a refusal from Bob, nothing for Carol: the submit goes to the
    ISMG with Jane alone (Msg_src filterd's SP code), the client gets Result 0 with
    filterd's Msg_Id, mapped in the registry to the ISMG's, and status reports REFUSED
    (Bob) and NOCONST (Carol) carrying that Msg_Id."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        await record(valkey_server.url, BOB, Kind.REFUSAL)
        answer = await client.submit(JANE, BOB, CAROL, registered_delivery=1)
        assert answer.result == 0
        [sent] = ismg.submits
        assert sent.dest_terminal_ids == (JANE,)
        assert sent.msg_src == ismg.sp_id
        assert sent.msg_content == b"hello"
        assert answer.msg_id != ismg.msg_ids[0]
        await relay.routes.settle(30)  # the route is written behind the answer
        route = await relay.registry.find_message(route_id(ismg.msg_ids[0]))
        assert route == (SP_ID, str(answer.msg_id))
        got = sorted(await reports(client, 2))
        assert got == [(BOB, "REFUSED", answer.msg_id), (CAROL, "NOCONST", answer.msg_id)]

    run(valkey_server, ismg, body, version=version)


@pytest.mark.parametrize("version", [V20, V30])
def test_a_submit_forwarded_whole_keeps_every_field(
    valkey_server: RedisProcess, ismg: FakeIsmg, version: int
) -> None:
    """Every destination permitted: the ISMG gets the client's submit field for field
    but for Msg_Id (0) and Msg_src (filterd's SP code), whether it is passed on as
    its own octets (the client speaks the link's version, 3.0) or encoded afresh (2.0)."""
    fields = {
        "msg_id": 77,
        "registered_delivery": 1,
        "msg_level": 3,
        "service_id": "SVC9",
        "fee_usertype": 2,
        "fee_terminal_id": "13900000000",
        "fee_type": "02",
        "fee_code": "000010",
        "valid_time": "261231235959032+",
        "src_id": "1069000199",
        **({"link_id": "LINK-1", "dest_terminal_type": 0} if version == V30 else {}),
    }

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        answer = await client.submit(JANE, text=b"whole", **fields)
        assert answer.result == 0
        [sent] = ismg.submits
        expected = submit_pdu(sent.sequence_id, (JANE,), b"whole", **fields)
        assert sent == dataclasses.replace(expected, msg_id=0, msg_src=ismg.sp_id)

    run(valkey_server, ismg, body, version=version)


def test_no_reports_unless_asked(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """Without Registered_Delivery the removed destinations get no status report."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        assert (await client.submit(JANE, CAROL)).result == 0
        assert (await client.submit(JANE)).result == 0  # the next answer follows at once
        assert client.received == []
        assert [s.dest_terminal_ids for s in ismg.submits] == [(JANE,), (JANE,)]

    run(valkey_server, ismg, body)


def test_none_permitted_results(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """Every destination refused: Result 64; none with consent: 65; refusals mixed with
    no consent: 65; nothing reaches the ISMG and no report is sent."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.REFUSAL)
        await record(valkey_server.url, BOB, Kind.REFUSAL)
        assert (await client.submit(JANE, BOB, registered_delivery=1)).result == ALL_REFUSED
        assert (await client.submit(CAROL, registered_delivery=1)).result == NONE_PERMITTED
        assert (await client.submit(JANE, CAROL)).result == NONE_PERMITTED
        assert ismg.submits == []
        assert client.received == []

    run(valkey_server, ismg, body)


def test_transactional_account_is_not_checked(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """A transactional account's submit goes to every destination, refusals or not."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.REFUSAL)
        assert (await client.submit(JANE, CAROL)).result == 0
        assert ismg.submits[0].dest_terminal_ids == (JANE, CAROL)

    run(valkey_server, ismg, body, sp=(NOTIFY_ID, NOTIFY_SECRET))


def test_destination_that_is_not_a_number(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """A Dest_terminal_Id that is no phone number fails the whole submit with Result 13;
    `86…` and national numbers are both read in China."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        assert (await client.submit(JANE, "12ab")).result == BAD_DEST_TERMINAL_ID
        assert ismg.submits == []
        assert (await client.submit("86" + JANE)).result == 0

    run(valkey_server, ismg, body)


def test_registry_down_answers_flow_control(private_server: RedisProcess, ismg: FakeIsmg) -> None:
    """With the registry unreachable a commercial submit gets Result 8 (sent again later),
    nothing forwarded."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(private_server.url, JANE, Kind.CONSENT)
        private_server.stop()
        assert (await client.submit(JANE)).result == FLOW_CONTROL
        assert ismg.submits == []

    run(private_server, ismg, body)


def test_ismg_down_answers_flow_control(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """With the ISMG link down a permitted submit gets Result 8; the ISMG's own Result
    is passed on."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        ismg.submit_result = 13
        assert (await client.submit(JANE)).result == 13
        ismg.stop()
        await _until(lambda: relay.carrier is not None and not relay.carrier.connected)
        assert (await client.submit(JANE)).result == FLOW_CONTROL

    run(valkey_server, ismg, body)


def test_long_message_gets_one_decision(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """The parts of a long message (UDH reference, or Pk_total alone) share the first
    part's decision: a refusal recorded between two parts does not stop the second; a
    part number seen again starts a new message, decided afresh."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        first = await client.submit(JANE, text=_udh(7, 2, 1) + b"part one", tp_udhi=1)
        assert first.result == 0
        await record(valkey_server.url, JANE, Kind.REFUSAL)
        second = await client.submit(JANE, text=_udh(7, 2, 2) + b"part two", tp_udhi=1)
        assert second.result == 0
        assert first.msg_id != second.msg_id
        again = await client.submit(JANE, text=_udh(7, 2, 1) + b"part one", tp_udhi=1)
        assert again.result == ALL_REFUSED
        assert len(ismg.submits) == 2
        pk = await client.submit(JANE, pk_total=2, pk_number=1)
        assert pk.result == ALL_REFUSED

    run(valkey_server, ismg, body)


def _compliance(
    method: CancelMethod = CancelMethod.ADD, quiet: str | None = None
) -> ComplianceSettings:
    """[compliance] with acme's signature and cancel text."""
    return ComplianceSettings(
        cancel_method=method,
        quiet_hours=parse_window(quiet) if quiet else None,
        senders=(SenderCompliance("acme", SIGNATURE, CANCEL),),
    )


def test_signature_missing(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """A commercial message without its sender's signature is refused (the signature
    Result), nothing forwarded; with it, the cancel text is appended under "add"."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        plain = await client.submit(JANE, text=_ucs2("春季特卖"), msg_fmt=MSG_FMT_UCS2)
        assert plain.result == SIGNATURE_MISSING
        assert ismg.submits == []
        signed = await client.submit(JANE, text=_ucs2(SIGNATURE + "春季特卖"), msg_fmt=MSG_FMT_UCS2)
        assert signed.result == 0
        assert ismg.submits[0].msg_content == _ucs2(SIGNATURE + "春季特卖" + CANCEL)

    run(valkey_server, ismg, body, compliance=_compliance())


def test_cancel_text_required(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """Under "require" a signed message without the cancel text is refused (the cancel
    Result); one with it is forwarded as it is."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        bare = await client.submit(JANE, text=_ucs2(SIGNATURE + "特卖"), msg_fmt=MSG_FMT_UCS2)
        assert bare.result == CANCEL_TEXT_MISSING
        full = _ucs2(SIGNATURE + "特卖" + CANCEL)
        assert (await client.submit(JANE, text=full, msg_fmt=MSG_FMT_UCS2)).result == 0
        assert ismg.submits[0].msg_content == full

    run(valkey_server, ismg, body, compliance=_compliance(CancelMethod.REQUIRE))


def test_long_message_held_and_judged_whole(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """Under text rules the parts of a long message are held until all are in, judged on
    their joined text (signature in the first, cancel text appended to the last) and
    forwarded in part order, each part answered with its own Msg_Id."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        one = _udh(9, 2, 1) + _ucs2(SIGNATURE + "春季")
        two = _udh(9, 2, 2) + _ucs2("特卖")
        second = submit_pdu(client.sequence(), (JANE,), two, tp_udhi=1, msg_fmt=MSG_FMT_UCS2)
        first = submit_pdu(client.sequence(), (JANE,), one, tp_udhi=1, msg_fmt=MSG_FMT_UCS2)
        client.send(second)  # the last part first: nothing is sent until both are in
        client.send(first)
        answers = [await client.answer(first.sequence_id), await client.answer(second.sequence_id)]
        assert [a.result for a in answers] == [0, 0]
        assert answers[0].msg_id != answers[1].msg_id
        assert [s.msg_content for s in ismg.submits] == [one, two + _ucs2(CANCEL)]

    run(valkey_server, ismg, body, compliance=_compliance())


def test_quiet_hours_defer(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """Inside the recipient's quiet hours a permitted commercial submit gets Result 8
    (sent again later), nothing forwarded."""

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        text = _ucs2(SIGNATURE + "特卖" + CANCEL)
        assert (await client.submit(JANE, text=text, msg_fmt=MSG_FMT_UCS2)).result == FLOW_CONTROL
        assert ismg.submits == []

    run(valkey_server, ismg, body, compliance=_compliance(quiet="00:00-23:59"))


def _udh(reference: int, total: int, number: int) -> bytes:
    """The 8-bit concatenation UDH of part `number` of `total`."""
    return bytes([5, 0, 3, reference, total, number])


def _ucs2(text: str) -> bytes:
    """UCS2 text (Msg_Fmt 8)."""
    return text.encode("utf-16-be")


async def _until(check: Callable[[], bool]) -> None:
    """Return once `check()` holds (polled; 30 s at most)."""
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not in 30 s")


def test_hundred_destinations_in_one_submit(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """A submit to 100 destinations, every other one with consent, goes to the ISMG once
    with the 50 permitted ones in their order; the other 50 get NOCONST reports."""
    numbers = [f"139{n:08d}" for n in range(100)]

    async def body(relay: CmppRelay, client: CmppClient) -> None:
        await record_all(valkey_server.url, numbers[::2], Kind.CONSENT)
        answer = await client.submit(*numbers, registered_delivery=1)
        assert answer.result == 0
        [sent] = ismg.submits
        assert sent.dest_terminal_ids == tuple(numbers[::2])
        got = await reports(client, 50)
        assert sorted(got) == [(n, "NOCONST", answer.msg_id) for n in numbers[1::2]]

    run(valkey_server, ismg, body)


@pytest.mark.parametrize(
    "raw",
    ["13800138000", "8613800138000", "+8613800138000", "10690001", "12345678901",
     "8612345678901", "01012345678", "1380013800", "138 0013 8000", "2125550100"],
)  # fmt: skip
def test_terminal_ids_read_as_national_parsing_reads_them(raw: str) -> None:
    """A terminal id names the same number (or is refused) as a national number of the
    region would: the fast forms (86 + 11 digits; 11 digits from 1 in China) agree with
    the phone-number library's national parsing, in CN and in another region."""
    for region in ("CN", "US"):
        fast = terminal_address(raw, region)
        slow = phone_recipient(raw, 0, region)
        assert isinstance(fast, Refused) == isinstance(slow, Refused), (raw, region)
        if not isinstance(fast, Refused):
            assert fast == slow
