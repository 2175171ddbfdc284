"""The submit_sm path (filterd/smpp/submit.py) end to end: decisions and their statuses,
one decision for the parts of a concatenated message, carrier and registry outages; the
[compliance] rules (signature, cancel text, quiet hours) on single and concatenated
messages."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from filterd.config.load import load as load_config
from filterd.model import ALL_SENDERS, Kind
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import AnyPdu, BindTransceiver, SubmitSm, SubmitSmResp
from filterd.storage.port import AuditQuery
from tests.conftest import ServerPool
from tests.helpers import RedisProcess
from tests.smpp_relay_helpers import (
    BOB,
    CANCEL,
    CAROL,
    JANE,
    SIGNATURE,
    Client,
    Relay,
    bound_peer,
    compliance,
    config,
    free_port,
    in_process_relay,
    next_pdu,
    running_relay,
    ucs2,
    udh_parts,
)


def test_decisions(smpp_relay: Relay) -> None:
    """Consented → forwarded with a message id; refused → 0x400; no consent → 0x401;
    nothing undecided reaches the carrier."""
    smpp_relay.record(JANE, Kind.CONSENT)
    smpp_relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    client = smpp_relay.client()
    kind, message_id = client.submit(JANE)
    assert kind == "ok"
    assert message_id
    assert client.submit(BOB) == ("error", 0x400)
    assert client.submit(CAROL) == ("error", 0x401)
    [forwarded] = smpp_relay.smsc.wait_submits(1)
    assert (forwarded.destination_addr, forwarded.short_message) == (JANE, b"hello")


def test_transactional_and_invalid_destination(smpp_relay: Relay) -> None:
    """A transactional account is forwarded without consent; an invalid number → 0x0B."""
    client = smpp_relay.client("notify", "notify-1")
    assert client.submit(CAROL)[0] == "ok"
    assert client.submit("12345") == ("error", 0x0B)


def ucs2_parts(text: str, reference: bytes, sixteen_bit: bool = False) -> list[bytes]:
    """A 3-part UCS2 message with a concatenation UDH (8- or 16-bit reference)."""
    data = text.encode("utf-16-be")
    size = -(-len(data) // 3) + (-(-len(data) // 3)) % 2
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        if sixteen_bit:
            udh = b"\x06\x08\x04" + reference + bytes([len(chunks), seq])
        else:
            udh = b"\x05\x00\x03" + reference + bytes([len(chunks), seq])
        parts.append(udh + chunk)
    return parts


LONG = "尊敬的客户，您好！本店春季大促销活动现已开始，全场商品八折优惠，欢迎光临选购。" * 3


@pytest.mark.parametrize("sixteen_bit", [False, True])
def test_concatenated_ucs2_one_decision(smpp_relay: Relay, sixteen_bit: bool) -> None:
    """All parts of a 3-part UCS2 Chinese message get one decision: all rejected for a
    refused number; for a consented one all forwarded byte for byte (UDH intact), even
    when a refusal lands between the parts."""
    smpp_relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    reference = b"\x12\x34" if sixteen_bit else b"\x42"
    refused = [
        client.submit(BOB, part, esm_class=0x40, data_coding=8)
        for part in ucs2_parts(LONG, reference, sixteen_bit)
    ]
    assert refused == [("error", 0x400)] * 3
    parts = ucs2_parts(LONG, reference, sixteen_bit)
    assert client.submit(JANE, parts[0], esm_class=0x40, data_coding=8)[0] == "ok"
    smpp_relay.record(
        JANE, Kind.REFUSAL, "acme"
    )  # after the first part: same message, same decision
    for part in parts[1:]:
        assert client.submit(JANE, part, esm_class=0x40, data_coding=8)[0] == "ok"
    forwarded = smpp_relay.smsc.wait_submits(3)
    assert [p.short_message for p in forwarded] == parts
    assert {(p.esm_class, p.data_coding) for p in forwarded} == {(0x40, 8)}
    assert client.submit(JANE, b"a new message") == ("error", 0x400)


def test_parts_sent_together_share_one_decision(smpp_relay: Relay) -> None:
    """Parts of one message submitted back to back (all in flight at once) get one
    decision: all forwarded, or all refused."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    parts = ucs2_parts(LONG, b"\x77")
    for part in parts:
        client.send(JANE, part, esm_class=0x40, data_coding=8)
    answers = [client.answer() for _ in parts]
    assert [kind for kind, _ in answers] == ["ok"] * 3
    assert len(smpp_relay.smsc.wait_submits(3)) == 3


def test_carrier_down_then_up(smpp_relay: Relay) -> None:
    """Carrier down: submits get ESME_RMSGQFUL (0x14), never dropped silently; the relay
    rebinds by itself when the carrier is back."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    smpp_relay.smsc.stop()
    assert client.submit(JANE) == ("error", 0x14)
    smpp_relay.smsc.start()
    smpp_relay.smsc.wait_bound(60)
    assert client.submit(JANE)[0] == "ok"


def test_registry_down_throttles(smpp_relay: Relay, server_pool: ServerPool) -> None:
    """Registry down: ESME_RTHROTTLED (0x58) so the client retries; back: decided again."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    smpp_relay.registry_server.kill()
    assert client.submit(JANE) == ("error", 0x58)
    server_pool.get("valkey")
    assert client.submit(JANE)[0] == "ok"


# -- [compliance]: signature, cancel text, quiet hours (SPEC §7) ---------------------------


def sent_alone(relay: Relay, client: Client, refused: list[Any]) -> SubmitSm:
    """After the submits answered `refused`, one good message: it is the only submit_sm
    the carrier ever gets (the refused ones were never forwarded)."""
    assert client.submit(JANE, ucs2(f"{SIGNATURE}check {CANCEL}"), data_coding=8)[0] == "ok"
    assert refused
    [only] = relay.smsc.wait_submits(1)
    assert len(relay.smsc.submits) == 1
    assert only.short_message == ucs2(f"{SIGNATURE}check {CANCEL}")
    return only


def test_signature_at_start_or_end_and_cancel_text_kept(valkey_server: RedisProcess) -> None:
    """A commercial message that starts or ends with the signature and carries the cancel
    text (compared after NFKC and case-folding: full-width letters match) reaches the
    carrier byte for byte, data_coding unchanged."""
    texts = [
        f"{SIGNATURE}春季大促，全场八折。{CANCEL}",
        f"春季大促，全场八折。回t退订 {SIGNATURE}",
        "【ＡＣＭＥ】spring sale 回Ｔ退订",
    ]
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        for text in texts:
            assert client.submit(JANE, ucs2(text), data_coding=8)[0] == "ok"
        forwarded = relay.smsc.wait_submits(3)
    assert [(p.data_coding, p.short_message) for p in forwarded] == [
        (8, ucs2(text)) for text in texts
    ]


def test_missing_signature_refused(valkey_server: RedisProcess) -> None:
    """A commercial message that neither starts nor ends with the signature (one in the
    middle does not count) gets 0x403; nothing reaches the carrier; the recipient is
    audited as a drop with reason no_signature."""
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        refused = [
            client.submit(JANE, ucs2(f"春季大促 {CANCEL}"), data_coding=8),
            client.submit(JANE, ucs2(f"春季大促{SIGNATURE}全场八折 {CANCEL}"), data_coding=8),
        ]
        assert refused == [("error", 0x403)] * 2
        sent_alone(relay, client, refused)
        assert relay.audit().count(("drop", "no_signature", "acme")) == 2


def test_cancel_text_appended_gsm_becomes_ucs2(valkey_server: RedisProcess) -> None:
    """Under "add", a GSM 03.38 text without the cancel text reaches the carrier with it
    appended after one space, re-encoded as UCS2 because 回T退订 is not GSM: data_coding
    0x08 and the UTF-16BE bytes of the whole text."""
    with running_relay(valkey_server, tables=compliance(signature="[Acme]")) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        gsm = b"\x1b<Acme\x1b> Spring sale: 20% off \x00 our shops"  # [ ] escaped, @ = 0x00
        assert client.submit(JANE, gsm, data_coding=0)[0] == "ok"
        [forwarded] = relay.smsc.wait_submits(1)
    assert forwarded.data_coding == 0x08
    assert forwarded.short_message == ucs2(f"[Acme] Spring sale: 20% off @ our shops {CANCEL}")
    assert (forwarded.destination_addr, forwarded.esm_class) == (JANE, 0)


def test_cancel_text_appended_in_message_payload(valkey_server: RedisProcess) -> None:
    """A UCS2 text sent in message_payload gets the cancel text appended there (no space
    after UCS2), short_message left empty."""
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        text = f"{SIGNATURE}春季大促"
        assert client.submit(JANE, b"", message_payload=ucs2(text), data_coding=8)[0] == "ok"
        [forwarded] = relay.smsc.wait_submits(1)
    assert forwarded.message_payload() == ucs2(text + CANCEL)
    assert (forwarded.short_message, forwarded.data_coding) == (b"", 8)


def test_cancel_text_required(valkey_server: RedisProcess) -> None:
    """Under "require", a message without the cancel text gets 0x402, nothing is sent,
    and the recipient is audited as a drop with reason no_cancel_method."""
    with running_relay(valkey_server, tables=compliance("require")) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        refused = [client.submit(JANE, ucs2(f"{SIGNATURE}春季大促"), data_coding=8)]
        assert refused == [("error", 0x402)]
        sent_alone(relay, client, refused)
        assert relay.audit().count(("drop", "no_cancel_method", "acme")) == 1


def test_cancel_text_that_does_not_fit(valkey_server: RedisProcess) -> None:
    """Under "add", a message whose text with the cancel text would no longer fit its SMS
    (70 UCS2 characters already) gets 0x402 and nothing is sent."""
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        full = SIGNATURE + "促" * (70 - len(SIGNATURE))
        refused = [client.submit(JANE, ucs2(full), data_coding=8)]
        assert refused == [("error", 0x402)]
        sent_alone(relay, client, refused)


def test_cancel_method_off_checks_the_signature_only(valkey_server: RedisProcess) -> None:
    """Under "off" the cancel text is not looked for (a message without it is sent as it
    is) but the signature still is (0x403 without it)."""
    with running_relay(valkey_server, tables=compliance("off")) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        assert client.submit(JANE, ucs2(f"{SIGNATURE}春季大促"), data_coding=8)[0] == "ok"
        assert client.submit(JANE, ucs2("春季大促"), data_coding=8) == ("error", 0x403)
        [forwarded] = relay.smsc.wait_submits(1)
    assert forwarded.short_message == ucs2(f"{SIGNATURE}春季大促")


def test_binary_message_has_no_text(valkey_server: RedisProcess) -> None:
    """A commercial message in an 8-bit data coding has no text to check: 0x403 when the
    sender has a signature, 0x402 when it has only a cancel text."""
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        assert relay.client().submit(JANE, b"\x00\x01\x02", data_coding=4) == ("error", 0x403)
    with running_relay(valkey_server, tables=compliance(signature=None)) as relay:
        relay.record(JANE, Kind.CONSENT)
        assert relay.client().submit(JANE, b"\x00\x01\x02", data_coding=4) == ("error", 0x402)


def test_two_parts_cancel_text_appended_to_the_last(valkey_server: RedisProcess) -> None:
    """A two-part UDH message with the signature in part 1 and no cancel text, its parts
    sent in reverse order: both parts reach the carrier in sequence order, part 1 byte
    for byte, the cancel text appended to part 2 only; each part gets its own message
    id."""
    parts = udh_parts([SIGNATURE + "尊敬的客户，本店春季大促销活动现已开始，", "全场八折。"])
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        for part in reversed(parts):
            client.send(JANE, part, esm_class=0x40, data_coding=8)
        answers = [client.answer() for _ in parts]
        forwarded = relay.smsc.wait_submits(2)
    assert [kind for kind, _ in answers] == ["ok", "ok"]
    assert answers[0][1] != answers[1][1]
    assert [p.short_message for p in forwarded] == [parts[0], parts[1] + ucs2(CANCEL)]
    assert {(p.esm_class, p.data_coding) for p in forwarded} == {(0x40, 8)}


def test_two_parts_without_signature(valkey_server: RedisProcess) -> None:
    """A two-part message whose text lacks the signature: neither part reaches the
    carrier, both get 0x403, one audit entry no_signature for the message."""
    parts = udh_parts(["尊敬的客户，本店春季大促销活动现已开始，", f"全场八折。{CANCEL}"])
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        for part in parts:
            client.send(JANE, part, esm_class=0x40, data_coding=8)
        refused = [client.answer() for _ in parts]
        assert refused == [("error", 0x403)] * 2
        sent_alone(relay, client, refused)
        assert relay.audit().count(("drop", "no_signature", "acme")) == 1


def test_held_message_decided_once(valkey_server: RedisProcess) -> None:
    """The parts of a held message to a recipient who refused get 0x400 together, and
    nothing is sent (the decision is made once, when the message is whole)."""
    parts = udh_parts([SIGNATURE + "尊敬的客户，", f"全场八折。{CANCEL}"], reference=0x99)
    with running_relay(valkey_server, tables=compliance()) as relay:
        relay.record(BOB, Kind.REFUSAL, ALL_SENDERS)
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        for part in parts:
            client.send(BOB, part, esm_class=0x40, data_coding=8)
        refused = [client.answer() for _ in parts]
        assert refused == [("error", 0x400)] * 2
        sent_alone(relay, client, refused)


def quiet_window(start_h: int, end_h: int) -> str:
    """A quiet_hours window from now + start_h to now + end_h hours, Beijing time."""
    now = datetime.datetime.now(ZoneInfo("Asia/Shanghai"))
    start, end = (now + datetime.timedelta(hours=h) for h in (start_h, end_h))
    return f"{start:%H:%M}-{end:%H:%M}"


def test_quiet_hours_defer(valkey_server: RedisProcess) -> None:
    """Inside the quiet hours of a +86 recipient (Asia/Shanghai) a commercial message that
    passes every other rule gets 0x404, nothing is sent, and the recipient is audited as
    a deferral with reason quiet_hours."""
    with running_relay(valkey_server, tables=compliance(quiet=quiet_window(-1, 1))) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        text = ucs2(f"{SIGNATURE}春季大促 {CANCEL}")
        assert client.submit(JANE, text, data_coding=8) == ("error", 0x404)
        assert relay.audit() == [("defer", "quiet_hours", "acme"), ("consent", None, "acme")]
        assert relay.smsc.submits == []


def test_outside_quiet_hours_delivered(valkey_server: RedisProcess) -> None:
    """Outside the quiet-hours window (it starts in an hour) the message is delivered."""
    with running_relay(valkey_server, tables=compliance(quiet=quiet_window(1, 2))) as relay:
        relay.record(JANE, Kind.CONSENT)
        client = relay.client()
        text = ucs2(f"{SIGNATURE}春季大促 {CANCEL}")
        assert client.submit(JANE, text, data_coding=8)[0] == "ok"
        [forwarded] = relay.smsc.wait_submits(1)
    assert forwarded.short_message == text


def test_transactional_never_checked(valkey_server: RedisProcess) -> None:
    """A transactional account's messages are never checked: no signature, no cancel text,
    each part of a concatenated message forwarded as it arrives (not held), all as
    received."""
    parts = udh_parts(["您的验证码是", "123456"])
    with running_relay(valkey_server, tables=compliance("require")) as relay:
        client = relay.client("notify", "notify-1")
        assert client.submit(CAROL, ucs2("您的验证码是123456"), data_coding=8)[0] == "ok"
        assert client.submit(CAROL, parts[0], esm_class=0x40, data_coding=8)[0] == "ok"
        forwarded = relay.smsc.wait_submits(2)
    assert [p.short_message for p in forwarded] == [ucs2("您的验证码是123456"), parts[0]]


def test_without_compliance_nothing_checked(smpp_relay: Relay) -> None:
    """Without a [compliance] table a commercial message is sent as it is (no signature,
    no cancel text added), and a part of a concatenated message is forwarded as it
    arrives."""
    smpp_relay.record(JANE, Kind.CONSENT)
    client = smpp_relay.client()
    parts = udh_parts(["春季大促", "全场八折"])
    assert client.submit(JANE, ucs2("春季大促"), data_coding=8)[0] == "ok"
    assert client.submit(JANE, parts[0], esm_class=0x40, data_coding=8)[0] == "ok"
    forwarded = smpp_relay.smsc.wait_submits(2)
    assert [p.short_message for p in forwarded] == [ucs2("春季大促"), parts[0]]


def test_incomplete_message_refused_at_the_deadline(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """A held part whose message never gets its other parts is answered once `hold_s` has
    passed after it: 0x403 (the text cannot be checked for the signature), audited as a
    drop no_signature, never forwarded (this relay has no carrier: a forwarded part would
    get 0x14)."""
    settings = load_config(
        config(tmp_path, valkey_server.url, free_port(), tables=compliance("require"))
    )
    assert settings.smpp is not None
    smpp = settings.smpp
    first = udh_parts([SIGNATURE + "尊敬的客户，", "全场八折。"])[0]

    async def scenario() -> tuple[AnyPdu, list[tuple[str, str | None]]]:
        options = {"compliance": settings.compliance, "hold_s": 0.2}
        async with in_process_relay(smpp, valkey_server.url, **options) as (relay, port):
            peer = await bound_peer(port, BindTransceiver)
            submit = SubmitSm(sequence_number=2, dest_addr_ton=1, destination_addr=JANE,
                              esm_class=0x40, data_coding=8, short_message=first)  # fmt: skip
            await asyncio.get_running_loop().sock_sendall(peer, encode(submit))
            answer = await next_pdu(peer, Framer())
            peer.close()
            await relay.service.flush_audit()
            entries = await relay.registry.read_audit(AuditQuery(limit=10))
        return answer, [(e.event, e.reason) for e in entries]

    answer, audit = asyncio.run(scenario())
    assert isinstance(answer, SubmitSmResp)
    assert (answer.sequence_number, answer.command_status) == (2, 0x403)
    assert audit == [("drop", "no_signature")]
