"""CMPP message text (filterd/cmpp/text.py): Msg_Fmt 0 / 8 / 15, the UDH, concatenation
by UDH or Pk_total, and the text of a long message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.cmpp.pdu import Deliver, Submit
from filterd.cmpp.text import (
    MSG_FMT_ASCII,
    MSG_FMT_BINARY,
    MSG_FMT_CARD_WRITE,
    MSG_FMT_GBK,
    MSG_FMT_UCS2,
    concat_of,
    decode_text,
    encode_text,
    message_text,
    part_text,
    parts_of,
    split_udh,
)
from filterd.smpp.text import Concat, SmsTextError


def test_decode_each_format() -> None:
    """0 is ASCII, 8 UTF-16BE (surrogate pairs too), 15 GBK read with GB18030."""
    assert decode_text(MSG_FMT_ASCII, b"Reply T") == "Reply T"
    assert decode_text(MSG_FMT_UCS2, bytes.fromhex("9000 8ba2 d83d de00")) == "退订😀"
    assert decode_text(MSG_FMT_GBK, bytes.fromhex("c4e3 bac3")) == "你好"


def test_gbk_read_as_gb18030() -> None:
    """A four-octet GB18030 sequence (outside GBK) decodes too."""
    assert decode_text(MSG_FMT_GBK, bytes.fromhex("9030 8130")) == "\U00010000"
    assert decode_text(MSG_FMT_GBK, "€".encode("gb18030")) == "€"


@pytest.mark.parametrize(
    ("msg_fmt", "data", "message"),
    [
        (MSG_FMT_ASCII, b"caf\xe9", "ASCII text with octet 0xe9"),
        (MSG_FMT_UCS2, b"\x90\x00\x8b", "odd"),
        (MSG_FMT_UCS2, bytes.fromhex("d83d 0041"), "surrogate"),
        (MSG_FMT_GBK, bytes.fromhex("c4"), "GBK text invalid at octet 0"),
    ],
)
def test_malformed_text(msg_fmt: int, data: bytes, message: str) -> None:
    """Octets that are not valid in their format raise SmsTextError with the reason."""
    with pytest.raises(SmsTextError, match=message):
        decode_text(msg_fmt, data)


@pytest.mark.parametrize("msg_fmt", [MSG_FMT_BINARY, MSG_FMT_CARD_WRITE, 9, 255])
def test_formats_that_are_not_text(msg_fmt: int) -> None:
    """Binary, card-write and other formats are not text: None."""
    assert decode_text(msg_fmt, b"\xff\x00") is None


def test_encode_text() -> None:
    """Text is written in ASCII, UCS2 or GBK; what a format cannot hold raises SmsTextError."""
    assert encode_text("T", MSG_FMT_ASCII) == b"T"
    assert encode_text("退订", MSG_FMT_UCS2) == bytes.fromhex("9000 8ba2")
    assert encode_text("你好", MSG_FMT_GBK) == bytes.fromhex("c4e3 bac3")
    with pytest.raises(SmsTextError, match="'退' cannot be written in Msg_Fmt 0"):
        encode_text("T退订", MSG_FMT_ASCII)
    with pytest.raises(SmsTextError, match="not a text format"):
        encode_text("x", MSG_FMT_BINARY)


def test_split_udh() -> None:
    """With TP_udhi the UDH (its length octet first) is cut from the text; without, all
    octets are text; a UDH running past the content raises SmsTextError."""
    content = bytes.fromhex("050003a70201") + b"hi"
    assert split_udh(1, content) == (bytes.fromhex("050003a70201"), b"hi")
    assert split_udh(0, content) == (None, content)
    with pytest.raises(SmsTextError):
        split_udh(1, bytes.fromhex("0500"))


def test_concatenation_elements() -> None:
    """The 8-bit (IE 0x00) and 16-bit (IE 0x08) elements give (reference, total, number),
    found after other elements too; invalid numbers, no UDHI and a damaged UDH give None."""
    assert concat_of(1, bytes.fromhex("050003a70302") + b"x") == Concat(0xA7, 3, 2)
    assert concat_of(1, bytes.fromhex("09 0a0100 080412340202")) == Concat(0x1234, 2, 2)
    assert concat_of(1, bytes.fromhex("050003a70204")) is None  # part 4 of 2
    assert concat_of(0, bytes.fromhex("050003a70302")) is None
    assert concat_of(1, bytes.fromhex("09 0003a7")) is None


def test_parts_of_a_submit() -> None:
    """A SUBMIT's part numbers come from its UDH, else from Pk_total / Pk_number."""
    by_udh = Submit(1, tp_udhi=1, msg_content=bytes.fromhex("050003a70302"))
    assert parts_of(by_udh) == (3, 2)
    assert parts_of(Submit(1, pk_total=2, pk_number=2)) == (2, 2)
    assert parts_of(Submit(1, pk_total=2, pk_number=3)) is None
    assert parts_of(Submit(1)) is None


def test_part_text() -> None:
    """The text of one message has its UDH removed."""
    udh = bytes.fromhex("050003a70201")
    submit = Submit(
        1, tp_udhi=1, msg_fmt=MSG_FMT_UCS2, msg_content=udh + "退订".encode("utf-16-be")
    )
    assert part_text(submit) == "退订"
    assert part_text(Deliver(1, msg_content=b"TD")) == "TD"


def test_message_text_joins_parts_before_decoding() -> None:
    """Parts in one format are joined before decoding, so a character cut between two
    parts (a surrogate pair, a GBK character) reads as one."""
    smile = "😀".encode("utf-16-be")
    ucs2 = [
        Submit(1, tp_udhi=1, msg_fmt=8, msg_content=bytes.fromhex("050003010201") + smile[:2]),
        Submit(2, tp_udhi=1, msg_fmt=8, msg_content=bytes.fromhex("050003010202") + smile[2:]),
    ]
    assert message_text(ucs2) == "😀"
    gbk = "你好".encode("gbk")
    parts = [Submit(1, msg_fmt=15, msg_content=gbk[:1]), Submit(2, msg_fmt=15, msg_content=gbk[1:])]
    assert message_text(parts) == "你好"


def test_message_text_of_mixed_formats() -> None:
    """Parts in different formats are decoded one by one; a part that is not text makes
    the message not text."""
    mixed = [
        Submit(1, msg_fmt=0, msg_content=b"Hi "),
        Submit(2, msg_fmt=8, msg_content=b"\x90\x00"),
    ]
    assert message_text(mixed) == "Hi 退"
    binary = [Submit(1, msg_fmt=0, msg_content=b"Hi"), Submit(2, msg_fmt=4, msg_content=b"\x00")]
    assert message_text(binary) is None


@given(st.integers(0, 255), st.integers(0, 1), st.binary(max_size=160))
def test_any_content_gives_text_none_or_sms_text_error(
    msg_fmt: int, tp_udhi: int, content: bytes
) -> None:
    """Whatever a message carries, its text is a str, None (not text) or SmsTextError, and
    looking for its concatenation never raises."""
    pdu = Deliver(1, msg_fmt=msg_fmt, tp_udhi=tp_udhi, msg_content=content)
    try:
        text = part_text(pdu)
    except SmsTextError:
        text = None
    assert text is None or isinstance(text, str)
    concat = concat_of(tp_udhi, content)
    assert concat is None or 1 <= concat.sequence <= concat.total
