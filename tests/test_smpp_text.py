"""SMS text handling (filterd/smpp/text.py): data_coding, GSM 03.38, UCS2, UDH,
concatenation keys, and splitting long texts into parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.errors import FilterdError
from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import DataSm, DeliverSm, SubmitSm
from filterd.smpp.text import (
    GSM_BASIC,
    GSM_EXTENSION,
    Alphabet,
    Concat,
    ConcatKey,
    Message,
    SmsTextError,
    coding_of,
    concat_from_udh,
    concat_key,
    concat_of,
    cut_udh,
    decode_gsm,
    decode_text,
    decode_ucs2,
    encode_gsm,
    encode_text,
    gsm_septets,
    message_text,
    parse_udh,
    sms_count,
    split_sms,
    split_udh,
    user_data_limit,
)

GSM_CHARS = [c for c in GSM_BASIC if c != "\x1b"] + list(GSM_EXTENSION.values())
GSM_TEXT = st.text(st.sampled_from(GSM_CHARS), max_size=400)
CHINESE = "退订回复TD，谢谢您的支持！本店周年庆全场八折，详情请访问我们的网站或到店咨询。" * 3
SOURCE, DEST = "8613800138000", "10690001"


# -- GSM 03.38 -------------------------------------------------------------------------


def test_gsm_table_shape() -> None:
    """The default table has 128 septets and the extension table the 10 characters of 03.38."""
    assert len(GSM_BASIC) == 128
    assert len(set(GSM_BASIC)) == 128
    assert sorted(GSM_EXTENSION.values()) == sorted("\f^{}\\[~]|€")


@pytest.mark.parametrize(
    ("char", "septets"),
    [
        ("@", b"\x00"),
        ("£", b"\x01"),
        ("$", b"\x02"),
        ("¥", b"\x03"),
        ("\n", b"\x0a"),
        ("\r", b"\x0d"),
        ("_", b"\x11"),
        ("Δ", b"\x10"),
        (" ", b"\x20"),
        ("¤", b"\x24"),
        ("¡", b"\x40"),
        ("A", b"\x41"),
        ("§", b"\x5f"),
        ("¿", b"\x60"),
        ("à", b"\x7f"),
        ("€", b"\x1b\x65"),
        ("^", b"\x1b\x14"),
        ("{", b"\x1b\x28"),
        ("}", b"\x1b\x29"),
        ("\\", b"\x1b\x2f"),
        ("[", b"\x1b\x3c"),
        ("~", b"\x1b\x3d"),
        ("]", b"\x1b\x3e"),
        ("|", b"\x1b\x40"),
        ("\f", b"\x1b\x0a"),
    ],
)
def test_gsm_characters(char: str, septets: bytes) -> None:
    """Each character has its GSM 03.38 septet(s), both ways; @ is 0x00 and € is ESC 0x65."""
    assert encode_gsm(char) == septets
    assert decode_gsm(septets) == char
    assert gsm_septets(char) == len(septets)


def test_gsm_at_sign_and_euro_in_text() -> None:
    """@ (0x00) inside a message is a character, not an end: '@home 5€' round-trips."""
    septets = encode_gsm("@home 5€")
    assert septets == b"\x00home 5\x1b\x65"
    assert decode_gsm(septets) == "@home 5€"
    assert decode_text(0x00, septets) == "@home 5€"


@given(GSM_TEXT)
@settings(max_examples=300)
def test_gsm_round_trip(text: str) -> None:
    """decode_gsm(encode_gsm(t)) == t for any text in the GSM alphabet; septets count escapes."""
    septets = encode_gsm(text)
    assert decode_gsm(septets) == text
    assert gsm_septets(text) == len(septets)
    assert max(septets, default=0) <= 0x7F


@pytest.mark.parametrize("text", ["退订", "ç", "`", "ÿ", "😀", "a\x00"])
def test_gsm_refuses_characters_outside_the_alphabet(text: str) -> None:
    """A character outside the alphabet raises SmsTextError (a ValueError and a FilterdError)."""
    assert gsm_septets(text) is None
    with pytest.raises(SmsTextError, match=r"not in the GSM 03\.38 alphabet"):
        encode_gsm(text)
    assert issubclass(SmsTextError, ValueError)
    assert issubclass(SmsTextError, FilterdError)


@pytest.mark.parametrize(
    ("septets", "text"),
    [
        (b"\x1b\x41", "A"),  # unknown extension code: the default-table character
        (b"ab\x1b", "ab "),  # trailing escape: a space
        (b"\x1b\x1b\x41", " A"),  # escape to a further table: a space
    ],
)
def test_gsm_decode_odd_escapes(septets: bytes, text: str) -> None:
    """Escapes outside the extension table decode as TS 23.038 says receivers show them."""
    assert decode_gsm(septets) == text


@pytest.mark.parametrize("septets", [b"\x80", b"abc\xff", b"\x1b\x90"])
def test_gsm_decode_refuses_octets_over_0x7f(septets: bytes) -> None:
    """Unpacked septets are 0x00-0x7F; a larger octet raises SmsTextError."""
    with pytest.raises(SmsTextError, match=r"not a GSM 03\.38 septet"):
        decode_gsm(septets)


# -- UCS2 ------------------------------------------------------------------------------


def test_ucs2_chinese_unsubscribe() -> None:
    """退订 in UCS2 is 90 00 8B A2 (UTF-16BE, no BOM), both ways."""
    assert "退订".encode("utf-16-be") == bytes.fromhex("90008ba2")
    assert decode_ucs2(bytes.fromhex("90008ba2")) == "退订"
    assert decode_text(0x08, bytes.fromhex("90008ba2")) == "退订"
    assert encode_text("退订") == (0x08, bytes.fromhex("90008ba2"))


def test_ucs2_surrogate_pairs_are_accepted() -> None:
    """Handsets send emoji as UTF-16 surrogate pairs inside 'UCS2'; they decode."""
    assert decode_ucs2(bytes.fromhex("d83dde00")) == "😀"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"\x90\x00\x8b", "odd length 3"), (b"\xd8\x3d", "bad UTF-16"), (b"\xdc\x00\x00a", "bad")],
)
def test_ucs2_malformed(data: bytes, reason: str) -> None:
    """Odd-length UCS2 and lone surrogates raise SmsTextError."""
    with pytest.raises(SmsTextError, match=reason):
        decode_ucs2(data)
    with pytest.raises(SmsTextError):
        decode_text(0x08, data)


@given(st.text(max_size=100).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
@settings(max_examples=200)
def test_encode_text_round_trip(text: str) -> None:
    """encode_text picks GSM when every character fits, else UCS2, and decodes back to the text."""
    data_coding, data = encode_text(text)
    assert data_coding == (0x00 if gsm_septets(text) is not None else 0x08)
    assert decode_text(data_coding, data) == text


# -- data_coding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_coding", "alphabet", "message_class"),
    [
        (0x00, Alphabet.GSM, None),
        (0x01, Alphabet.ASCII, None),
        (0x02, Alphabet.BINARY, None),
        (0x03, Alphabet.LATIN1, None),
        (0x04, Alphabet.BINARY, None),
        (0x05, Alphabet.BINARY, None),
        (0x06, Alphabet.CYRILLIC, None),
        (0x07, Alphabet.HEBREW, None),
        (0x08, Alphabet.UCS2, None),
        (0x0E, Alphabet.BINARY, None),
        (0x10, Alphabet.GSM, 0),
        (0x11, Alphabet.GSM, 1),
        (0x14, Alphabet.BINARY, 0),
        (0x18, Alphabet.UCS2, 0),
        (0x19, Alphabet.UCS2, 1),
        (0x1A, Alphabet.UCS2, 2),
        (0x1C, Alphabet.BINARY, 0),
        (0x20, Alphabet.BINARY, None),
        (0x38, Alphabet.BINARY, None),
        (0x40, Alphabet.GSM, None),
        (0x48, Alphabet.UCS2, None),
        (0x58, Alphabet.UCS2, 0),
        (0x68, Alphabet.BINARY, None),
        (0x80, Alphabet.BINARY, None),
        (0xB8, Alphabet.BINARY, None),
        (0xC0, Alphabet.GSM, None),
        (0xD8, Alphabet.GSM, None),
        (0xE0, Alphabet.UCS2, None),
        (0xF0, Alphabet.GSM, 0),
        (0xF1, Alphabet.GSM, 1),
        (0xF3, Alphabet.GSM, 3),
        (0xF4, Alphabet.BINARY, 0),
        (0xF5, Alphabet.BINARY, 1),
        (0xF6, Alphabet.BINARY, 2),
    ],
)
def test_coding_of(data_coding: int, alphabet: Alphabet, message_class: int | None) -> None:
    """SMPP values below 0x10 and the GSM 03.38 groups above, message class bits included."""
    coding = coding_of(data_coding)
    assert (coding.alphabet, coding.message_class) == (alphabet, message_class)


def test_coding_of_refuses_values_over_one_octet() -> None:
    """data_coding is one octet."""
    with pytest.raises(ValueError, match="does not fit"):
        coding_of(0x100)


@pytest.mark.parametrize(
    ("data_coding", "data", "text"),
    [
        (0x18, bytes.fromhex("90008ba2"), "退订"),
        (0x08, bytes.fromhex("90008ba2"), "退订"),
        (0xE0, bytes.fromhex("90008ba2"), "退订"),
        (0xF0, b"STOP", "STOP"),
        (0xF1, b"\x00\x1b\x65", "@€"),
        (0x11, b"TD", "TD"),
        (0x01, b"STOP", "STOP"),
        (0x03, "café".encode("latin-1"), "café"),
        (0x06, "стоп".encode("iso8859-5"), "стоп"),
        (0x04, b"\x00\x01", None),
        (0x02, b"STOP", None),
        (0xF4, b"STOP", None),
        (0xF5, b"STOP", None),
        (0x24, b"STOP", None),
    ],
)
def test_decode_text(data_coding: int, data: bytes, text: str | None) -> None:
    """Text codings decode (class bits ignored); binary and compressed codings give None."""
    assert decode_text(data_coding, data) == text


def test_decode_refuses_octets_outside_the_charset() -> None:
    """IA5 (data_coding 1) is 7-bit, and ISO-8859-8 leaves 0xBF undefined: SmsTextError."""
    with pytest.raises(SmsTextError, match="octet 0xe9 at 3 is not ASCII"):
        decode_text(0x01, b"caf\xe9")
    with pytest.raises(SmsTextError, match="is not HEBREW"):
        decode_text(0x07, b"\xbf")


@given(st.integers(0, 0xFF), st.binary(max_size=40))
@settings(max_examples=400)
def test_decode_text_fuzz(data_coding: int, data: bytes) -> None:
    """Any data_coding and bytes give text, None or SmsTextError, nothing else."""
    try:
        result = decode_text(data_coding, data)
    except SmsTextError:
        return
    assert result is None or isinstance(result, str)


# -- user data header ------------------------------------------------------------------


def test_parse_udh() -> None:
    """The UDH is a length octet and IEs; parse_udh returns the IEs and the text after them."""
    data = bytes.fromhex("0b 05040b8423f0 00032a0301") + b"hi"
    assert parse_udh(data) == (((0x05, bytes.fromhex("0b8423f0")), (0x00, b"\x2a\x03\x01")), b"hi")
    assert parse_udh(b"\x00rest") == ((), b"rest")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x06\x00\x03\x2a", "runs past the 4-octet message"),
        (b"\x01\x00", "element header"),
        (b"\x03\x00\x03\x2a", "element 0x00 runs past"),
    ],
)
def test_parse_udh_malformed(data: bytes, reason: str) -> None:
    """A UDH that runs past the message, or an IE past the UDH, raises SmsTextError."""
    with pytest.raises(SmsTextError, match=reason):
        parse_udh(data)


@given(st.binary(max_size=60))
@settings(max_examples=400)
def test_parse_udh_fuzz(data: bytes) -> None:
    """Any bytes parse to IEs plus the rest, or raise SmsTextError; the lengths add up."""
    try:
        elements, rest = parse_udh(data)
    except SmsTextError:
        return
    assert 1 + sum(2 + len(value) for _, value in elements) + len(rest) == len(data)


def test_split_udh_only_with_udhi() -> None:
    """Without UDHI the whole short_message is text, even when it looks like a UDH."""
    data = bytes.fromhex("050003010201") + b"x"
    assert split_udh(0x00, data) == ((), data)
    assert split_udh(0x40, data) == (((0x00, b"\x01\x02\x01"),), b"x")


def test_cut_udh_keeps_the_udh_as_sent() -> None:
    """cut_udh returns the UDH octets (length octet first) and the text after them;
    without UDHI there is no UDH; a malformed UDH raises SmsTextError."""
    data = bytes.fromhex("050003010201") + b"x"
    assert cut_udh(0x40, data) == (bytes.fromhex("050003010201"), b"x")
    assert cut_udh(0x00, data) == (None, data)
    assert cut_udh(0x40, b"\x00") == (b"\x00", b"")
    with pytest.raises(SmsTextError, match="runs past"):
        cut_udh(0x40, b"\x05\x00")


@given(st.binary(max_size=60))
@settings(max_examples=200)
def test_cut_udh_agrees_with_split_udh(data: bytes) -> None:
    """The UDH cut_udh returns parses to the elements split_udh gives, with the same rest."""
    try:
        udh, rest = cut_udh(0x40, data)
    except SmsTextError:
        return
    assert udh is not None
    assert udh + rest == data
    assert split_udh(0x40, data) == (parse_udh(udh)[0], rest)


# -- concatenation ---------------------------------------------------------------------

PARTS = [CHINESE[i : i + 60] for i in range(0, 180, 60)]


def udh8(ref: int, total: int, seq: int) -> bytes:
    """An 8-bit-reference concatenation UDH."""
    return bytes([0x05, 0x00, 0x03, ref, total, seq])


def udh16(ref: int, total: int, seq: int) -> bytes:
    """A 16-bit-reference concatenation UDH (IE 0x08: the reference is 2 octets)."""
    return bytes([0x06, 0x08, 0x04, ref >> 8, ref & 0xFF, total, seq])


def udh_port_first(ref: int, total: int, seq: int) -> bytes:
    """A UDH whose first IE is an application port (0x05), the 8-bit concatenation second."""
    return bytes([0x0B, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x00, 0x03, ref, total, seq])


def ucs2_parts(
    build_udh: Callable[[int, int, int], bytes], ref: int, cls: type[SubmitSm | DeliverSm]
) -> list[Message]:
    """The 3 parts of CHINESE as UCS2 short messages with the given UDH builder."""
    return [
        cls(
            sequence_number=seq,
            source_addr=SOURCE,
            destination_addr=DEST,
            esm_class=0x40,
            data_coding=0x08,
            short_message=build_udh(ref, 3, seq) + part.encode("utf-16-be"),
        )
        for seq, part in enumerate(PARTS, start=1)
    ]


def sar_parts(ref: int) -> list[Message]:
    """The 3 parts of CHINESE as UCS2 submit_sm with SAR optional parameters."""
    return [
        SubmitSm(
            sequence_number=seq,
            source_addr=SOURCE,
            destination_addr=DEST,
            data_coding=0x08,
            short_message=part.encode("utf-16-be"),
            tlvs=(
                (0x020C, ref.to_bytes(2, "big")),
                (0x020E, b"\x03"),
                (0x020F, bytes([seq])),
            ),
        )
        for seq, part in enumerate(PARTS, start=1)
    ]


VARIANTS = {
    "udh8": lambda ref: ucs2_parts(udh8, ref, SubmitSm),
    "udh16": lambda ref: ucs2_parts(udh16, ref, SubmitSm),
    "ie-not-first": lambda ref: ucs2_parts(udh_port_first, ref, DeliverSm),
    "sar": sar_parts,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_three_part_chinese_message_has_one_key(variant: str) -> None:
    """All 3 parts of a UCS2 Chinese message share one key; their texts join to the message."""
    parts = VARIANTS[variant](0x2A)
    # through the wire and back, as the relay sees them
    parts = [decode(encode(p)) for p in parts]  # type: ignore[misc]
    keys = {concat_key(p) for p in parts}
    assert keys == {ConcatKey(SOURCE, DEST, 0x2A, 3)}
    assert [concat_of(p) for p in parts] == [Concat(0x2A, 3, s) for s in (1, 2, 3)]
    assert "".join(message_text(p) or "" for p in parts) == CHINESE[:180]
    assert message_text(parts[0]).startswith("退订")  # type: ignore[union-attr]


def test_16_bit_reference_is_two_octets() -> None:
    """IE 0x08 carries a 2-octet reference (0x1234), then total and sequence (not a 4-octet ref)."""
    parts = ucs2_parts(udh16, 0x1234, SubmitSm)
    assert {concat_key(p) for p in parts} == {ConcatKey(SOURCE, DEST, 0x1234, 3)}
    assert concat_of(parts[1]) == Concat(0x1234, 3, 2)


def test_different_messages_have_different_keys() -> None:
    """Another reference, another total or another destination is another message."""
    base = ucs2_parts(udh8, 7, SubmitSm)[0]
    assert isinstance(base, SubmitSm)
    others = [
        ucs2_parts(udh8, 8, SubmitSm)[0],
        replace(base, short_message=udh8(7, 4, 1) + base.short_message[6:]),
        replace(base, destination_addr="8613900139000"),
        replace(base, source_addr="10690002"),
    ]
    assert len({concat_key(p) for p in [base, *others]}) == 5


@pytest.mark.parametrize(
    "elements",
    [
        ((0x00, b"\x2a\x00\x01"),),  # total 0
        ((0x00, b"\x2a\x03\x00"),),  # sequence 0
        ((0x00, b"\x2a\x03\x04"),),  # sequence > total
        ((0x00, b"\x2a\x03"),),  # wrong IE length
        ((0x08, b"\x00\x00\x2a\x03\x01"),),  # a 16-bit IE read as 32-bit would look like this
        ((0x05, b"\x0b\x84\x23\xf0"),),  # no concatenation IE
    ],
)
def test_invalid_concatenation_elements_are_ignored(elements: tuple[tuple[int, bytes]]) -> None:
    """An IE with total 0, sequence 0 or > total, or a wrong length, is ignored (TS 23.040)."""
    assert concat_from_udh(elements) is None


def test_first_valid_concatenation_element_wins() -> None:
    """An ignored IE does not hide a valid one after it."""
    elements = ((0x00, b"\x01\x00\x01"), (0x08, b"\x01\x00\x02\x02"))
    assert concat_from_udh(elements) == Concat(0x100, 2, 2)


def test_udh_wins_over_sar() -> None:
    """A part with both a concatenation UDH and SAR parameters is keyed by its UDH."""
    part = SubmitSm(
        sequence_number=1,
        esm_class=0x40,
        short_message=udh8(5, 2, 1) + b"x",
        tlvs=((0x020C, b"\x00\x09"), (0x020E, b"\x02"), (0x020F, b"\x01")),
    )
    assert concat_of(part) == Concat(5, 2, 1)


def test_bad_udh_falls_back_to_sar() -> None:
    """A damaged UDH does not raise in concat_of; SAR parameters still count."""
    part = SubmitSm(
        sequence_number=1,
        esm_class=0x40,
        short_message=b"\x09\x00",
        tlvs=((0x020C, b"\x00\x09"), (0x020E, b"\x02"), (0x020F, b"\x02")),
    )
    assert concat_of(part) == Concat(9, 2, 2)
    with pytest.raises(SmsTextError):
        message_text(part)


def test_single_message_has_no_key() -> None:
    """A message that is not part of a concatenation has no key."""
    single = SubmitSm(sequence_number=1, data_coding=8, short_message="退订".encode("utf-16-be"))
    assert concat_key(single) is None
    assert concat_key(SubmitSm(sequence_number=1, esm_class=0x40, short_message=b"\x00hi")) is None


def test_data_sm_text_and_key_from_message_payload() -> None:
    """data_sm's user data (and its UDH) travel in message_payload."""
    pdu = DataSm(
        sequence_number=1,
        source_addr=SOURCE,
        destination_addr=DEST,
        esm_class=0x40,
        data_coding=0x08,
        tlvs=((0x0424, udh16(0x0102, 2, 1) + "退订".encode("utf-16-be")),),
    )
    assert message_text(pdu) == "退订"
    assert concat_key(pdu) == ConcatKey(SOURCE, DEST, 0x0102, 2)


def test_message_text_of_binary_is_none() -> None:
    """A binary message (data_coding 4) has no text; the relay treats it as opaque."""
    assert message_text(DeliverSm(sequence_number=1, data_coding=4, short_message=b"\x01")) is None


# -- splitting -------------------------------------------------------------------------


def test_short_gsm_text_is_one_message() -> None:
    """Up to 160 GSM septets go as one message, no UDH."""
    parts = split_sms("Reply STOP to opt out @ 0€", reference=1)
    assert (parts.data_coding, parts.esm_class) == (0x00, 0x00)
    assert parts.messages == (encode_gsm("Reply STOP to opt out @ 0€"),)
    assert len(split_sms("x" * 160, 1).messages) == 1


def test_long_gsm_text_is_split_into_153_septet_parts() -> None:
    """161 septets need two parts of at most 153 septets, each with the UDH 05 00 03 ref n i."""
    parts = split_sms("a" * 161, reference=0xAB)
    assert (parts.data_coding, parts.esm_class) == (0x00, 0x40)
    assert parts.messages == (
        bytes.fromhex("050003ab0201") + b"a" * 153,
        bytes.fromhex("050003ab0202") + b"a" * 8,
    )


def test_gsm_escape_is_never_split() -> None:
    """A € that would straddle the part boundary moves whole into the next part."""
    parts = split_sms("a" * 152 + "€" + "b" * 10, reference=1)
    first, second = (m[6:] for m in parts.messages)
    assert first == b"a" * 152
    assert second == b"\x1b\x65" + b"b" * 10


def test_ucs2_split_70_and_67() -> None:
    """UCS2: 70 characters fit one message; 71 need parts of 67 characters (134 octets)."""
    assert len(split_sms("订" * 70, 1).messages) == 1
    parts = split_sms("订" * 71, reference=9)
    assert (parts.data_coding, parts.esm_class) == (0x08, 0x40)
    assert [len(m) for m in parts.messages] == [6 + 134, 6 + 8]


def test_ucs2_surrogate_pair_is_never_split() -> None:
    """An emoji (a surrogate pair) at the boundary moves whole into the next part."""
    text = "订" * 66 + "😀" + "订" * 10
    parts = split_sms(text, reference=1)
    assert len(parts.messages[0]) == 6 + 132
    assert "".join(decode_ucs2(m[6:]) for m in parts.messages) == text


def test_split_limits() -> None:
    """More than 255 parts, or a reference over one octet, is refused with ValueError."""
    with pytest.raises(ValueError, match="parts"):
        split_sms("a" * 153 * 256, reference=1)
    with pytest.raises(ValueError, match="reference"):
        split_sms("hi", reference=256)


@pytest.mark.parametrize(
    ("data_coding", "udh_octets", "limit"),
    [
        (0x00, 0, 160),
        (0x00, 6, 153),  # 05 00 03 ref total seq
        (0x00, 7, 152),  # 06 08 04 ref ref total seq
        (0x00, 12, 146),
        (0xF1, 6, 153),
        (0x08, 0, 140),
        (0x08, 6, 134),
        (0x08, 7, 132),  # 133 octets rounded down to even
        (0x18, 7, 132),
        (0x03, 0, 140),
        (0x03, 7, 133),
        (0x01, 6, 134),
        (0x04, 6, 134),
    ],
)
def test_user_data_limit(data_coding: int, udh_octets: int, limit: int) -> None:
    """One SMS holds 140 octets with the UDH: GSM septets with the UDH's fill bits
    counted, UCS2 octets rounded down to even, other codings octets."""
    assert user_data_limit(data_coding, udh_octets) == limit


@pytest.mark.parametrize(
    ("data_coding", "data", "count"),
    [
        (0x00, b"", 1),
        (0x00, b"a" * 160, 1),
        (0x00, b"a" * 161, 2),
        (0x00, b"a" * 306, 2),
        (0x00, b"a" * 307, 3),
        (0x00, b"a" * 152 + b"\x1b\x65" + b"a" * 152, 3),  # the escape pair moves whole
        (0x08, b"\x8b\xa2" * 70, 1),
        (0x08, b"\x8b\xa2" * 71, 2),
        (0x08, b"\x8b\xa2" * 134, 2),
        (0x08, b"\x8b\xa2" * 135, 3),
        (0x03, b"a" * 140, 1),
        (0x03, b"a" * 268, 2),
        (0x03, b"a" * 269, 3),
    ],
)
def test_sms_count(data_coding: int, data: bytes, count: int) -> None:
    """A whole message takes one SMS up to 160 septets / 140 octets, else parts of 153
    septets / 134 octets, a GSM escape pair or UTF-16 surrogate pair never split."""
    assert sms_count(data_coding, data) == count


@given(st.one_of(GSM_TEXT, st.text(max_size=400)))
@settings(max_examples=200)
def test_sms_count_matches_split_sms(text: str) -> None:
    """sms_count of an encoded text is the number of parts split_sms makes of it."""
    text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
    assert sms_count(*encode_text(text)) == len(split_sms(text, 1).messages)


@given(st.one_of(GSM_TEXT, st.text(max_size=400)), st.integers(0, 255))
@settings(max_examples=200)
def test_split_parts_reassemble(text: str, reference: int) -> None:
    """Every part fits an SMS, carries a valid UDH, shares one key, and the texts rejoin."""
    text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
    parts = split_sms(text, reference)
    pdus = [
        SubmitSm(
            sequence_number=1,
            source_addr=SOURCE,
            destination_addr=DEST,
            esm_class=parts.esm_class,
            data_coding=parts.data_coding,
            short_message=message,
        )
        for message in parts.messages
    ]
    assert "".join(message_text(p) or "" for p in pdus) == text
    if len(pdus) == 1:
        assert parts.esm_class == 0
        return
    assert {concat_key(p) for p in pdus} == {ConcatKey(SOURCE, DEST, reference, len(pdus))}
    for p in pdus:
        body = p.short_message[6:]
        limit = 153 if parts.data_coding == 0 else 134
        assert len(body) <= limit
