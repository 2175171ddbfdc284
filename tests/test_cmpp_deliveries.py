"""What the ISMG delivers (filterd/cmpp/deliveries.py): status reports routed back with
the client's Msg_Id, consumers' replies (MO) to a service number and its extensions
acted on durably before the CMPP_DELIVER_RESP, confirmed and passed to the SP. A real
ISMG link to the fake ISMG and a real registry; the relay's client side is a stand-in
that records what would go to each SP's connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from filterd.cmpp.deliveries import Deliveries, confirmation, number_for, rewrite_report
from filterd.cmpp.header import V20, V30
from filterd.cmpp.ismg import IsmgClient, route_id
from filterd.cmpp.pdu import Deliver
from filterd.cmpp.report import StatusReport, decode_report, encode_report
from filterd.cmpp.text import concat_of
from filterd.identity import ConsumerHasher
from filterd.keywords import Keywords
from filterd.model import MessageClass
from filterd.normalize import normalize
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import (
    CmppAccount,
    CmppNumber,
    CmppSettings,
    CmppUpstream,
    Confirmations,
    KeywordSettings,
)
from filterd.storage.redis import RedisRegistry
from tests.cmpp_ismg import FakeIsmg
from tests.helpers import RedisProcess

SECRET = "ef" * 32
JANE = "8613800138000"
NUMBER = "10690001"
ACCOUNTS = (
    CmppAccount("900001", "chg-me", "acme", MessageClass.COMMERCIAL),
    CmppAccount("900002", "chg-me", "beta", MessageClass.COMMERCIAL),
)
NUMBERS = (CmppNumber(NUMBER, "acme"), CmppNumber(NUMBER + "9", "beta"))


@dataclass
class StandIn:
    """The relay as the deliveries see it; `forward` records what each SP would get."""

    settings: CmppSettings
    keywords: Keywords
    carrier: IsmgClient | None = None
    forwarded: list[tuple[str, Deliver]] = field(default_factory=list)
    connected: set[str] = field(default_factory=lambda: {"900001", "900002"})

    @property
    def accounts(self) -> dict[str, CmppAccount]:
        """The accounts by sp_id."""
        return {a.sp_id: a for a in self.settings.accounts}

    @property
    def numbers(self) -> dict[str, str]:
        """The sender of each number."""
        return {n.address: n.sender for n in self.settings.numbers}

    def forward(self, sp_id: str, deliver: Deliver) -> bool:
        """Record `deliver` for `sp_id`; False when that SP has no connection."""
        if sp_id not in self.connected:
            return False
        self.forwarded.append((sp_id, deliver))
        return True


@dataclass
class Setup:
    """A running ISMG link with its deliveries, over a real registry."""

    ismg: FakeIsmg
    relay: StandIn
    registry: RedisRegistry
    hasher: ConsumerHasher

    async def facts(self, number: str) -> list[tuple[str, str, str]]:
        """(kind, sender, source) of the facts on record for +number."""
        facts = await self.registry.facts(self.hasher.consumer_id(normalize("+" + number)))
        return [(f.kind.value, f.sender, f.source) for f in facts]

    async def call(self, function: Callable[..., object], *args: object, **kw: object) -> object:
        """Run one of the fake ISMG's blocking calls off the event loop."""
        return await asyncio.to_thread(function, *args, **kw)


@contextlib.asynccontextmanager
async def linked(
    ismg: FakeIsmg, registry_url: str, version: int = V30, confirm: bool = True, workers: int = 1
) -> AsyncIterator[Setup]:
    """An IsmgClient logged in to `ismg` whose deliveries go to `Deliveries`."""
    upstream = CmppUpstream("127.0.0.1", ismg.port, "901234", "secret", version)
    settings = CmppSettings(
        listen=("127.0.0.1", 0), upstream=upstream, accounts=ACCOUNTS, numbers=NUMBERS,
        confirmations=Confirmations(enabled=confirm), workers=workers,
    )  # fmt: skip
    kw = KeywordSettings()
    relay = StandIn(settings, Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help))
    registry = RedisRegistry.from_url(registry_url)
    hasher = ConsumerHasher(bytes.fromhex(SECRET))
    service = Service(registry, hasher, request_ttl_s=3600)
    deliveries = Deliveries(relay, service, RouteBook(registry, "cmpp"), default_region=None)
    relay.carrier = IsmgClient(upstream, deliveries.handle)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.carrier.run(stop))
    try:
        await asyncio.wait_for(relay.carrier.wait_connected(), 30)
        yield Setup(ismg, relay, registry, hasher)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await service.close()
        await registry.close()


@pytest.fixture
def ismg() -> AsyncIterator[FakeIsmg]:  # type: ignore[misc]
    """A fake ISMG."""
    server = FakeIsmg().start()
    yield server
    server.shutdown()


def run(ismg: FakeIsmg, registry: RedisProcess, body: Callable[[Setup], Awaitable[None]],
        **options: object) -> None:  # fmt: skip
    """Run `body` against a linked setup."""

    async def main() -> None:
        async with linked(ismg, registry.url, **options) as setup:  # type: ignore[arg-type]
            await body(setup)

    asyncio.run(main())


@pytest.mark.parametrize("version", [V20, V30])
def test_status_report_goes_back_with_the_client_msg_id(
    ismg: FakeIsmg, valkey_server: RedisProcess, version: int
) -> None:
    """A status report on a forwarded submit reaches the submitting SP with filterd's
    Msg_Id in place of the ISMG's, in the layout it came in; stat and number unchanged."""

    async def body(s: Setup) -> None:
        await s.registry.remember_message(route_id(77), "900002", "123456789", 60)
        assert await s.call(ismg.send_report, 77, JANE, "DELIVRD") == 0
        [(sp_id, deliver)] = s.relay.forwarded
        assert sp_id == "900002"
        report = decode_report(deliver.msg_content, version)
        assert (report.msg_id, report.stat, report.dest_terminal_id) == (
            123456789, "DELIVRD", JANE,
        )  # fmt: skip
        assert deliver.registered_delivery == 1

    run(ismg, valkey_server, body, version=version)


def test_with_workers_a_report_waits_for_another_process_route(
    ismg: FakeIsmg, valkey_server: RedisProcess
) -> None:
    """With workers, a report whose route is not yet written (the submitting process
    writes it behind its answer) is looked up again a moment later and delivered."""

    async def body(s: Setup) -> None:
        report = asyncio.create_task(s.call(ismg.send_report, 78, JANE, "DELIVRD"))
        await asyncio.sleep(0.3)
        assert s.relay.forwarded == []
        await s.registry.remember_message(route_id(78), "900002", "4242", 60)
        assert await report == 0
        [(sp_id, deliver)] = s.relay.forwarded
        assert sp_id == "900002"
        assert decode_report(deliver.msg_content, V30).msg_id == 4242

    run(ismg, valkey_server, body, workers=2)


def test_reports_that_cannot_be_routed_are_accepted(
    ismg: FakeIsmg, valkey_server: RedisProcess
) -> None:
    """A report on an unknown Msg_Id, one whose SP has no connection, and one whose
    content is not a report are answered Result 0 (nothing to retry) and go nowhere."""

    async def body(s: Setup) -> None:
        assert await s.call(ismg.send_report, 5, JANE) == 0
        await s.registry.remember_message(route_id(6), "900003", "42", 60)
        assert await s.call(ismg.send_report, 6, JANE) == 0
        broken = Deliver(0, msg_id=1, dest_id=NUMBER, registered_delivery=1, msg_content=b"x")
        assert await s.call(ismg.deliver, broken) == 0
        assert s.relay.forwarded == []

    run(ismg, valkey_server, body)


@pytest.mark.parametrize(
    ("text", "msg_fmt"),
    [("TD", 0), ("退订", 8), ("ＴＤ", 8), ("退订", 15), ("Stop please", 0)],
)
def test_opt_out_is_durable_before_the_answer_and_confirmed(
    ismg: FakeIsmg, valkey_server: RedisProcess, text: str, msg_fmt: int
) -> None:
    """An opt-out reply to a service number's extension records a refusal for that
    number's sender before the ISMG gets Result 0; a confirmation goes back to the
    consumer from the number reached; the MO is passed to the sender's SP."""
    codec = {0: "ascii", 8: "utf-16-be", 15: "gbk"}[msg_fmt]

    async def body(s: Setup) -> None:
        mo = text.encode(codec)
        assert await s.call(ismg.send_mo, JANE, NUMBER + "1234", mo, msg_fmt) == 0
        assert await s.facts(JANE) == [("refusal", "acme", "sms-keyword")]
        [reply] = await s.call(ismg.wait_submits, 1)
        assert (reply.src_id, reply.dest_terminal_ids) == (NUMBER + "1234", (JANE,))
        assert reply.msg_fmt in (0, 8)
        assert [(sp, d.msg_content) for sp, d in s.relay.forwarded] == [("900001", mo)]

    run(ismg, valkey_server, body)


def test_longest_number_wins_and_opt_in_records_consent(
    ismg: FakeIsmg, valkey_server: RedisProcess
) -> None:
    """A reply to 106900019… belongs to that longer number's sender (beta), not to the
    shorter 10690001's; START records a consent; help records nothing."""

    async def body(s: Setup) -> None:
        assert await s.call(ismg.send_mo, JANE, NUMBER + "9", b"START") == 0
        assert await s.call(ismg.send_mo, JANE, NUMBER + "9", b"HELP") == 0
        assert await s.facts(JANE) == [("consent", "beta", "sms-keyword")]
        assert [sp for sp, _ in s.relay.forwarded] == ["900002", "900002"]

    run(ismg, valkey_server, body, confirm=False)


def test_mo_to_an_unknown_number_or_without_keyword(
    ismg: FakeIsmg, valkey_server: RedisProcess
) -> None:
    """An MO to a number filterd does not serve is accepted and dropped; one without a
    keyword records nothing but still reaches the SP; neither is confirmed."""

    async def body(s: Setup) -> None:
        assert await s.call(ismg.send_mo, JANE, "10659999", b"TD") == 0
        assert await s.call(ismg.send_mo, JANE, NUMBER, b"hello there") == 0
        assert await s.facts(JANE) == []
        assert [(sp, d.msg_content) for sp, d in s.relay.forwarded] == [("900001", b"hello there")]
        assert ismg.submits == []

    run(ismg, valkey_server, body)


def test_pseudo_terminal_is_not_acted_on(ismg: FakeIsmg, valkey_server: RedisProcess) -> None:
    """A 3.0 MO from a pseudo terminal (Src_terminal_type 1) names no phone number: its
    keyword records nothing, and it still reaches the SP."""

    async def body(s: Setup) -> None:
        mo = Deliver(0, msg_id=9, dest_id=NUMBER, src_terminal_id=JANE, src_terminal_type=1,
                     msg_content=b"TD")  # fmt: skip
        assert await s.call(ismg.deliver, mo) == 0
        assert await s.facts(JANE) == []
        assert len(s.relay.forwarded) == 1

    run(ismg, valkey_server, body)


def test_registry_down_answers_8_and_the_resend_is_recorded(
    ismg: FakeIsmg, private_server: RedisProcess
) -> None:
    """With the registry down an opt-out and a status report get Result 8 (the ISMG sends
    them again) and nothing is passed on; once it is back, the resent opt-out is recorded."""

    async def body(s: Setup) -> None:
        await asyncio.to_thread(private_server.stop)
        assert await s.call(ismg.send_mo, JANE, NUMBER, b"TD") == 8
        assert await s.call(ismg.send_report, 5, JANE) == 8
        assert s.relay.forwarded == []
        await asyncio.to_thread(private_server.start)
        for _ in range(300):  # the registry client reconnects on its own
            if await s.call(ismg.send_mo, JANE, NUMBER, b"TD") == 0:
                break
            await asyncio.sleep(0.1)
        assert await s.facts(JANE) == [("refusal", "acme", "sms-keyword")]

    run(ismg, private_server, body, confirm=False)


def test_number_for_takes_the_longest_prefix() -> None:
    """The number a Dest_Id reached is the longest configured address it starts with."""
    numbers = {"1069": "a", "10690001": "b", "106900011": "c"}
    assert number_for(numbers, "106900011234") == "106900011"
    assert number_for(numbers, "10690001") == "10690001"
    assert number_for(numbers, "106901") == "1069"
    assert number_for(numbers, "1065") is None


def test_confirmation_is_split_with_a_udh_when_long() -> None:
    """A short confirmation is one ASCII submit; a long Chinese one is UCS2 parts with an
    8-bit concatenation UDH, Pk_total / Pk_number set, each within 140 octets."""
    mo = Deliver(0, dest_id="106900011", src_terminal_id=JANE, service_id="MO")
    [short] = confirmation("You are unsubscribed.", 7, mo, "901234")
    assert (short.msg_fmt, short.tp_udhi, short.msg_content) == (0, 0, b"You are unsubscribed.")
    assert (short.src_id, short.dest_terminal_ids, short.msg_src) == (
        "106900011",
        (JANE,),
        "901234",
    )
    parts = confirmation("退" * 100, 7, mo, "901234")
    assert [(p.pk_total, p.pk_number, p.msg_fmt, p.tp_udhi) for p in parts] == [
        (2, 1, 8, 1), (2, 2, 8, 1),
    ]  # fmt: skip
    assert all(len(p.msg_content) <= 140 for p in parts)
    concat = concat_of(1, parts[1].msg_content)
    assert concat is not None
    assert (concat.reference, concat.total, concat.sequence) == (7, 2, 2)
    text = b"".join(p.msg_content[6:] for p in parts).decode("utf-16-be")
    assert text == "退" * 100


def test_rewrite_report_keeps_the_layout() -> None:
    """Only the report's Msg_Id changes; the 2.0 layout stays 60 octets."""
    report = StatusReport(5, "REJECTD", "2612071000", "2612071001", JANE, 3)
    deliver = Deliver(0, msg_id=1, registered_delivery=1, msg_content=encode_report(report, V20))
    rewritten = rewrite_report(deliver, 99)
    assert len(rewritten.msg_content) == 60
    assert decode_report(rewritten.msg_content, V20) == StatusReport(
        99, "REJECTD", "2612071000", "2612071001", JANE, 3
    )
