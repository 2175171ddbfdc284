"""SPEC §7 on CMPP messages (filterd/cmpp/rules.py, pure): the signature and cancel
instruction judged on the text of all parts, the instruction appended by Msg_Fmt
within one SMS, and messages without text."""

from __future__ import annotations

from filterd.cmpp.pdu import Submit
from filterd.cmpp.rules import KEEP, judge, with_cancel_text
from filterd.cmpp.text import MSG_FMT_ASCII, MSG_FMT_BINARY, MSG_FMT_GBK, MSG_FMT_UCS2
from filterd.model import Reason
from filterd.smpp.compliance import SmsRules

ADD = SmsRules("【Acme】", "回T退订", add=True)
REQUIRE = SmsRules("【Acme】", "回T退订", add=False)
ENGLISH = SmsRules(None, "Reply T to stop", add=True)


def part(content: bytes, msg_fmt: int = MSG_FMT_UCS2, udh: bytes | None = None) -> Submit:
    """A submit of `content` (after `udh`, if any) in `msg_fmt`."""
    return Submit(
        1,
        tp_udhi=1 if udh else 0,
        msg_fmt=msg_fmt,
        dest_terminal_ids=("13800138000",),
        msg_content=(udh or b"") + content,
    )


def ucs2(text: str) -> bytes:
    """UTF-16BE."""
    return text.encode("utf-16-be")


def test_signature_at_the_start_or_the_end() -> None:
    """The signature may lead or end the text (full-width forms fold); elsewhere, or
    missing, the message is refused no_signature."""
    with_cancel = "回T退订"
    assert judge([part(ucs2("【Acme】特卖" + with_cancel))], ADD) == KEEP
    assert judge([part(ucs2("特卖" + with_cancel + "【ＡＣＭＥ】"))], ADD) == KEEP
    assert (
        judge([part(ucs2("特卖【Acme】" + with_cancel + "!"))], ADD).refused is Reason.NO_SIGNATURE
    )
    assert judge([part(ucs2("特卖"))], REQUIRE).refused is Reason.NO_SIGNATURE


def test_cancel_text_appended_or_required() -> None:
    """Under "add" the instruction is appended to UCS2 text with no space; under
    "require" its absence refuses no_cancel_method."""
    verdict = judge([part(ucs2("【Acme】特卖"))], ADD)
    assert verdict.last is not None
    assert verdict.last.msg_content == ucs2("【Acme】特卖回T退订")
    assert judge([part(ucs2("【Acme】特卖"))], REQUIRE).refused is Reason.NO_CANCEL_METHOD


def test_text_of_all_parts_together() -> None:
    """A long message is judged on its parts joined (the signature in the first part,
    the instruction in the last); the last part gets the instruction, keeping its UDH."""
    first = part(ucs2("【Acme】春季"), udh=bytes([5, 0, 3, 1, 2, 1]))
    last = part(ucs2("特卖"), udh=bytes([5, 0, 3, 1, 2, 2]))
    verdict = judge([first, last], ADD)
    assert verdict.last is not None
    assert verdict.last.msg_content == bytes([5, 0, 3, 1, 2, 2]) + ucs2("特卖回T退订")
    assert judge([first, part(ucs2("特卖回T退订"), udh=bytes([5, 0, 3, 1, 2, 2]))], ADD) == KEEP


def test_ascii_gets_a_space_or_becomes_ucs2() -> None:
    """ASCII text gets one space and an ASCII instruction; a Chinese instruction turns a
    single-part ASCII message into UCS2 (Msg_Fmt 8) when it still fits one SMS."""
    english = with_cancel_text(part(b"Sale today", MSG_FMT_ASCII), "Reply T to stop",
                               concatenated=False)  # fmt: skip
    assert english is not None
    assert (english.msg_fmt, english.msg_content) == (MSG_FMT_ASCII, b"Sale today Reply T to stop")
    chinese = with_cancel_text(part(b"Sale", MSG_FMT_ASCII), "回T退订", concatenated=False)
    assert chinese is not None
    assert (chinese.msg_fmt, chinese.msg_content) == (MSG_FMT_UCS2, ucs2("Sale 回T退订"))


def test_gbk_appends_in_gbk() -> None:
    """GBK text (Msg_Fmt 15) gets the instruction in GBK, no space."""
    appended = with_cancel_text(part("特卖".encode("gbk"), MSG_FMT_GBK), "回T退订",
                                concatenated=False)  # fmt: skip
    assert appended is not None
    assert (appended.msg_fmt, appended.msg_content) == (MSG_FMT_GBK, "特卖回T退订".encode("gbk"))


def test_instruction_that_does_not_fit_refuses() -> None:
    """A part that would pass 140 octets with the instruction is refused under "add"."""
    full = part(ucs2("【Acme】" + "特" * 64))
    assert len(full.msg_content) == 140
    assert with_cancel_text(full, "回T退订", concatenated=False) is None
    assert judge([full], ADD).refused is Reason.NO_CANCEL_METHOD


def test_no_text_cannot_carry_the_rules() -> None:
    """Binary content, or text malformed for its format, is refused as unchecked: the
    signature's reason when one is configured, else the cancel method's."""
    assert judge([part(b"\x01\x02", MSG_FMT_BINARY)], ADD).refused is Reason.NO_SIGNATURE
    assert judge([part(b"\xff", MSG_FMT_ASCII)], ENGLISH).refused is Reason.NO_CANCEL_METHOD
    assert judge([part(b"\x00", MSG_FMT_UCS2)], ENGLISH).refused is Reason.NO_CANCEL_METHOD
