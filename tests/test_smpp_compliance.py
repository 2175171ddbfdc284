"""SPEC §7 for SMPP, the pure part (filterd/smpp/compliance.py): which rules apply to a
sender, and the verdict on a message's parts (signature, cancel text kept, appended or
refused)."""

from __future__ import annotations

from filterd.model import Reason
from filterd.settings import CancelMethod, ComplianceSettings, SenderCompliance
from filterd.smpp.compliance import KEEP, SmsRules, Verdict, joined_text, judge
from filterd.smpp.pdu import SubmitSm
from filterd.smpp.tlv import (
    TAG_MESSAGE_PAYLOAD,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
)

SIGNATURE = "【Acme】"
CANCEL = "回T退订"
BOTH = SmsRules(SIGNATURE, CANCEL, add=True)


def sm(data: bytes, data_coding: int = 8, esm_class: int = 0, **kw: object) -> SubmitSm:
    """A submit_sm carrying `data` in short_message."""
    return SubmitSm(
        sequence_number=7, destination_addr="8613800138000", data_coding=data_coding,
        esm_class=esm_class, short_message=data, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def ucs2(text: str) -> bytes:
    """UTF-16BE."""
    return text.encode("utf-16-be")


def two_parts(first: bytes, second: bytes, data_coding: int = 8) -> list[SubmitSm]:
    """A two-part UDH message (8-bit reference 0x33)."""
    return [
        sm(b"\x05\x00\x03\x33\x02" + bytes([seq]) + data, data_coding, esm_class=0x40)
        for seq, data in ((1, first), (2, second))
    ]


def sar_tlvs(sequence: int) -> tuple[tuple[int, bytes], ...]:
    """The SAR optional parameters of part `sequence` of 2 (reference 5)."""
    return (
        (TAG_SAR_MSG_REF_NUM, b"\x00\x05"),
        (TAG_SAR_TOTAL_SEGMENTS, b"\x02"),
        (TAG_SAR_SEGMENT_SEQNUM, bytes([sequence])),
    )


def settings(method: CancelMethod, signature: str | None, cancel: str | None) -> ComplianceSettings:
    """[compliance] with one sender table, for acme."""
    return ComplianceSettings(method, senders=(SenderCompliance("acme", signature, cancel),))


def test_rules_of_a_sender() -> None:
    """A sender's rules: its signature and cancel text (add / require); none without a
    [compliance] table or a table for the sender; under "off" the cancel text is not
    checked, so a sender with only a cancel text has nothing to check."""
    assert SmsRules.of(None, "acme") is None
    assert SmsRules.of(settings(CancelMethod.ADD, SIGNATURE, CANCEL), "other") is None
    add = SmsRules.of(settings(CancelMethod.ADD, SIGNATURE, CANCEL), "acme")
    assert add == SmsRules(SIGNATURE, CANCEL, add=True)
    require = SmsRules.of(settings(CancelMethod.REQUIRE, None, CANCEL), "acme")
    assert require == SmsRules(None, CANCEL, add=False)
    off = SmsRules.of(settings(CancelMethod.OFF, SIGNATURE, CANCEL), "acme")
    assert off == SmsRules(SIGNATURE, None, add=False)
    assert SmsRules.of(settings(CancelMethod.OFF, None, CANCEL), "acme") is None
    assert SmsRules.of(settings(CancelMethod.ADD, None, None), "acme") is None


def test_unchecked_reason() -> None:
    """A text that cannot be checked fails the signature first, else the cancel text."""
    assert BOTH.unchecked is Reason.NO_SIGNATURE
    assert SmsRules(None, CANCEL, add=True).unchecked is Reason.NO_CANCEL_METHOD


def test_signature_at_the_start_or_the_end() -> None:
    """The text must start or end with the signature (NFKC and case-folded; spaces around
    ignored); in the middle, or missing, it is refused no_signature."""
    rules = SmsRules(SIGNATURE, None, add=False)
    for text in (f"{SIGNATURE}sale", f"  sale {SIGNATURE} ", "【ＡＣＭＥ】sale", "【acme】sale"):
        assert judge([sm(ucs2(text))], rules) == KEEP, text
    for text in ("sale", f"big {SIGNATURE} sale", "【Acm】sale"):
        assert judge([sm(ucs2(text))], rules) == Verdict(Reason.NO_SIGNATURE), text


def test_signature_checked_before_the_cancel_text() -> None:
    """A text missing both is refused for the signature."""
    assert judge([sm(ucs2("sale"))], BOTH) == Verdict(Reason.NO_SIGNATURE)


def test_cancel_text_present_keeps_the_message() -> None:
    """A text that contains the cancel text (folded: 回ｔ退订) is kept as it is."""
    for text in (f"{SIGNATURE}sale {CANCEL}", f"{SIGNATURE}回ｔ退订 sale"):
        assert judge([sm(ucs2(text))], BOTH) == KEEP


def test_cancel_text_required() -> None:
    """Under "require" a text without the cancel text is refused no_cancel_method."""
    rules = SmsRules(SIGNATURE, CANCEL, add=False)
    assert judge([sm(ucs2(f"{SIGNATURE}sale"))], rules) == Verdict(Reason.NO_CANCEL_METHOD)


def test_cancel_text_appended_to_ucs2() -> None:
    """Under "add" a UCS2 text gets the cancel text right after it (no space); every
    other field of the PDU unchanged."""
    part = sm(ucs2(f"{SIGNATURE}sale"), registered_delivery=1)
    verdict = judge([part], BOTH)
    assert verdict.refused is None
    assert verdict.last is not None
    assert verdict.last.short_message == ucs2(f"{SIGNATURE}sale{CANCEL}")
    assert verdict.last.data_coding == 8
    assert (verdict.last.registered_delivery, verdict.last.sequence_number) == (1, 7)


def test_gsm_text_reencoded_as_ucs2() -> None:
    """A GSM 03.38 text (data_coding 0) whose cancel text is not GSM becomes UCS2, with
    one space before the cancel text; a GSM cancel text keeps it GSM."""
    gsm = b"\x1b<Acme\x1b> 20% off \x00 shops"
    verdict = judge([sm(gsm, 0)], SmsRules("[Acme]", CANCEL, add=True))
    assert verdict.last is not None
    assert (verdict.last.data_coding, verdict.last.short_message) == (
        8,
        ucs2(f"[Acme] 20% off @ shops {CANCEL}"),
    )
    stays = judge([sm(gsm, 0)], SmsRules("[Acme]", "Reply STOP", add=True))
    assert stays.last is not None
    assert (stays.last.data_coding, stays.last.short_message) == (0, gsm + b" Reply STOP")


def test_latin1_text_gets_a_space() -> None:
    """A Latin-1 text (data_coding 3) gets one space and the cancel text in Latin-1."""
    verdict = judge([sm("Acme: soldes été".encode("latin-1"), 3)], SmsRules("Acme:", "STOP", True))
    assert verdict.last is not None
    assert verdict.last.short_message == "Acme: soldes été STOP".encode("latin-1")


def test_cancel_text_that_does_not_fit() -> None:
    """A text that would no longer fit its SMS with the cancel text is refused
    no_cancel_method; a GSM text of 160 septets cannot become UCS2 either."""
    full = SIGNATURE + "促" * (70 - len(SIGNATURE))
    assert judge([sm(ucs2(full))], BOTH) == Verdict(Reason.NO_CANCEL_METHOD)
    gsm = b"Acme " + b"x" * 155
    assert judge([sm(gsm, 0)], SmsRules("Acme", CANCEL, True)) == Verdict(Reason.NO_CANCEL_METHOD)


def test_text_not_checkable() -> None:
    """8-bit data, odd-length UCS2 or a broken UDH have no text to check: refused for the
    first rule the sender has."""
    only_cancel = SmsRules(None, CANCEL, add=True)
    for part in (sm(b"\x00\x01", 4), sm(b"\x00\x41\x00", 8), sm(b"\x09\x00", 8, esm_class=0x40)):
        assert judge([part], BOTH) == Verdict(Reason.NO_SIGNATURE)
        assert judge([part], only_cancel) == Verdict(Reason.NO_CANCEL_METHOD)


def test_message_payload_rewritten_in_place() -> None:
    """A text in message_payload gets the cancel text there; short_message stays empty and
    the other optional parameters keep their order."""
    tlvs = ((0x0204, b"\x00\x01"), (TAG_MESSAGE_PAYLOAD, ucs2(f"{SIGNATURE}sale")), (0x1400, b"x"))
    verdict = judge([sm(b"", tlvs=tlvs)], BOTH)
    assert verdict.last is not None
    assert verdict.last.short_message == b""
    assert verdict.last.tlvs == (
        (0x0204, b"\x00\x01"),
        (TAG_MESSAGE_PAYLOAD, ucs2(f"{SIGNATURE}sale{CANCEL}")),
        (0x1400, b"x"),
    )


def test_parts_judged_together() -> None:
    """The text of all parts counts: the signature leading part 1 or ending part 2, the
    cancel text in either part; the cancel text is appended to the last part only, its
    UDH kept in front."""
    parts = two_parts(ucs2(f"{SIGNATURE}big "), ucs2(f"sale {CANCEL}"))
    assert judge(parts, BOTH) == KEEP
    parts = two_parts(ucs2(f"big {CANCEL}"), ucs2(f"sale{SIGNATURE}"))
    assert judge(parts, BOTH) == KEEP
    parts = two_parts(ucs2(f"{SIGNATURE}big "), ucs2("sale"))
    verdict = judge(parts, BOTH)
    assert verdict.last is not None
    assert verdict.last.short_message == parts[1].short_message + ucs2(CANCEL)
    assert judge(two_parts(ucs2("big "), ucs2("sale")), BOTH) == Verdict(Reason.NO_SIGNATURE)


def test_last_part_keeps_its_coding() -> None:
    """The GSM last part of a multi-part message is not re-encoded as UCS2 for a
    non-GSM cancel text: refused no_cancel_method."""
    parts = two_parts(b"Acme big ", b"sale", data_coding=0)
    assert judge(parts, SmsRules("Acme", CANCEL, True)) == Verdict(Reason.NO_CANCEL_METHOD)
    verdict = judge(parts, SmsRules("Acme", "Reply STOP", True))
    assert verdict.last is not None
    assert verdict.last.short_message == parts[1].short_message + b" Reply STOP"


def test_sar_last_part_counted_with_the_smsc_udh() -> None:
    """A SAR part (no UDH) holds 132 UCS2 octets (the SMSC adds a 7-octet UDH): a last part
    of 60 characters takes the cancel text, one of 64 does not."""
    first = sm(ucs2(f"{SIGNATURE}big "), tlvs=sar_tlvs(1))
    sar = sar_tlvs(2)
    fits = judge([first, sm(ucs2("促" * 60), tlvs=sar)], BOTH)
    assert fits.last is not None
    assert fits.last.tlvs == sar
    assert judge([first, sm(ucs2("促" * 64), tlvs=sar)], BOTH) == Verdict(Reason.NO_CANCEL_METHOD)


def test_joined_text_across_parts() -> None:
    """Parts with one coding are decoded joined (a GSM escape cut between parts reads as
    one character); parts with different codings each on their own; None when a part is
    not text."""
    assert joined_text(two_parts(b"price 5\x1b", b"e", data_coding=0)) == "price 5€"
    mixed = [*two_parts(b"Acme ", b"x", data_coding=0)[:1], two_parts(b"", ucs2("促"))[1]]
    assert joined_text(mixed) == "Acme 促"
    assert joined_text(two_parts(b"Acme ", b"\x00\x01", data_coding=4)) is None
