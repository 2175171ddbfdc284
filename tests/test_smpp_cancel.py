"""SMS compliance text (filterd/smpp/cancel.py): the signature and cancel-text checks
on the whole text, and appending the cancel text to a message's last part."""

from __future__ import annotations

import operator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.smpp.cancel import (
    Appended,
    append_cancel_text,
    fold,
    has_cancel_text,
    signature_ok,
)
from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import SubmitSm
from filterd.smpp.text import (
    GSM_BASIC,
    GSM_EXTENSION,
    SmsTextError,
    cut_udh,
    decode_text,
    encode_gsm,
    gsm_septets,
    message_text,
    sms_count,
)

CANCEL_ZH = "回T退订"
CANCEL_ZH_UCS2 = bytes.fromhex("56de 0054 9000 8ba2")
PROMO_ZH = "【Acme】双十一大促，全场五折"
PROMO_ZH_UCS2 = bytes.fromhex(
    "3010 0041 0063 006d 0065 3011"  # 【Acme】
    " 53cc 5341 4e00 5927 4fc3 ff0c 5168 573a 4e94 6298"  # 双十一大促，全场五折
)
UDH8 = bytes.fromhex("050003 2a 02 02")
UDH16 = bytes.fromhex("060804 1234 02 02")


def append(
    data_coding: int,
    payload: bytes,
    cancel_text: str,
    udh: bytes | None = None,
    *,
    concatenated: bool = False,
    in_message_payload: bool = False,
) -> Appended | None:
    """append_cancel_text with the single-message defaults."""
    return append_cancel_text(
        data_coding,
        udh,
        payload,
        cancel_text,
        concatenated=concatenated,
        in_message_payload=in_message_payload,
    )


# -- signature ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("【Acme】双十一大促，全场五折 回T退订", True),
        ("双十一大促，全场五折 回T退订【Acme】", True),
        ("  【Acme】双十一大促  ", True),
        ("\u3000双十一大促【Acme】\n", True),
        ("【ＡＣＭＥ】双十一大促", True),
        ("【acme】双十一大促", True),
        ("双十一大促【Acme】全场五折", False),
        ("双十一大促，全场五折 回T退订", False),
        ("[Acme]双十一大促", False),
        ("【Acme 】双十一大促", False),
        ("", False),
    ],
)
def test_signature_at_start_or_end(text: str, expected: bool) -> None:
    """The whole text must start or end with the signature, after NFKC and case-folding
    (full-width and lower-case letters match); whitespace around the text is ignored;
    a signature in the middle, or absent, does not count; [ ] are not 【 】."""
    assert signature_ok(text, "【Acme】") is expected


def test_signature_nfkc_on_both_sides() -> None:
    """Full-width square brackets and letters in either the text or the configured
    signature fold to the same characters; whitespace around the signature is ignored."""
    assert signature_ok("［ＡＣＭＥ］ Big sale", "[Acme]")
    assert signature_ok("Big sale [acme]", " ［Ａｃｍｅ］ ")
    assert not signature_ok("Big sale [acme] today", "[Acme]")


def test_empty_signature_asks_nothing() -> None:
    """An empty signature is satisfied by any text."""
    assert signature_ok("anything", "")


# -- cancel text check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cancel_text", "expected"),
    [
        ("Big sale! reply stop to end", "Reply STOP", True),
        ("Big sale! REPLY STOP to end", "reply stop", True),
        ("【Acme】双十一大促，全场五折 回T退订", CANCEL_ZH, True),
        ("【Acme】双十一大促，全场五折 回Ｔ退订", CANCEL_ZH, True),
        ("【Acme】双十一大促，全场五折 回t退订", CANCEL_ZH, True),
        ("【Acme】双十一大促，全场五折", CANCEL_ZH, False),
        ("Big sale! reply stop", "Reply STOP to end", False),
        ("Straße STOP", "STRASSE stop", True),
    ],
)
def test_cancel_text_contained(text: str, cancel_text: str, expected: bool) -> None:
    """The whole text must contain the cancel text anywhere, both sides NFKC-normalised
    and case-folded (full-width T U+FF34, lower-case t and ß → ss all match)."""
    assert has_cancel_text(text, cancel_text) is expected


def test_fold_is_nfkc_and_casefold() -> None:
    """fold: NFKC, then case-folding, then NFKC again (stable on its own output)."""
    assert fold("ＲＥＰＬＹ Stop") == "reply stop"
    assert fold("ﬁ") == "fi"
    assert fold(fold("ǅ ẞ Ω")) == fold("ǅ ẞ Ω")


# -- append: codings -----------------------------------------------------------------------


def test_gsm_text_gets_gsm_cancel_text_after_one_space() -> None:
    """A GSM 03.38 text (data_coding 0) gets one space and the cancel text, in GSM
    septets, the coding unchanged; '@' stays septet 0x00."""
    result = append(0x00, encode_gsm("50% off @ shop"), "STOP to end")
    assert result == Appended(0x00, b"50% off \x00 shop STOP to end")


def test_gsm_text_with_chinese_cancel_text_becomes_ucs2() -> None:
    """A GSM text whose cancel text is outside the alphabet is re-encoded as UCS2
    (data_coding 8), the space kept: 'Sale 回T退订' in UTF-16BE."""
    result = append(0x00, b"Sale", CANCEL_ZH)
    assert result == Appended(0x08, bytes.fromhex("0053 0061 006c 0065 0020") + CANCEL_ZH_UCS2)


def test_ucs2_text_gets_cancel_text_without_space() -> None:
    """A UCS2 text gets the cancel text appended directly, no space, bytes kept as sent."""
    result = append(0x08, PROMO_ZH_UCS2, CANCEL_ZH)
    assert result == Appended(0x08, PROMO_ZH_UCS2 + CANCEL_ZH_UCS2)
    assert decode_text(0x08, result.payload) == PROMO_ZH + CANCEL_ZH


def test_latin1_text_stays_latin1_or_becomes_ucs2() -> None:
    """Latin-1 (data_coding 3) gets one space and a cancel text it can hold in Latin-1;
    a Chinese one turns the part into UCS2 with the space."""
    assert append(0x03, b"Caf\xe9 sale", "STOP to end") == Appended(
        0x03, b"Caf\xe9 sale STOP to end"
    )
    assert append(0x03, b"Caf\xe9", CANCEL_ZH) == Appended(
        0x08, bytes.fromhex("0043 0061 0066 00e9 0020") + CANCEL_ZH_UCS2
    )


def test_ia5_text_becomes_ucs2_for_a_non_ascii_cancel_text() -> None:
    """IA5 (data_coding 1) holds ASCII only: 'Désabonner' needs UCS2; 'STOP' stays IA5."""
    assert append(0x01, b"Sale", "STOP") == Appended(0x01, b"Sale STOP")
    assert append(0x01, b"Sale", "D\xe9sabonner") == Appended(
        0x08, "Sale Désabonner".encode("utf-16-be")
    )


@pytest.mark.parametrize(
    ("data_coding", "ucs2"),
    [
        (0x00, 0x08),  # SMSC default alphabet
        (0x01, 0x08),  # IA5
        (0x03, 0x08),  # Latin-1
        (0x06, 0x08),  # ISO-8859-5
        (0x07, 0x08),  # ISO-8859-8
        (0x10, 0x18),  # general group, GSM, class 0
        (0x11, 0x19),  # general group, GSM, class 1
        (0x40, 0x48),  # automatic deletion, GSM, no class
        (0x53, 0x5B),  # automatic deletion, GSM, class 3
        (0xF0, 0x18),  # GSM class 0 (flash) -> UCS2 class 0
        (0xF1, 0x19),
        (0xF3, 0x1B),
        (0xFA, 0x1A),  # reserved bit 3 set: still GSM class 2
        (0xD8, 0xE8),  # message waiting, store, GSM -> the UCS2 store group
        (0xC8, None),  # message waiting, discard: no UCS2 form
    ],
)
def test_reencoding_keeps_the_dcs_meaning(data_coding: int, ucs2: int | None) -> None:
    """Re-encoding as UCS2 keeps the message class and group of the data_coding;
    a message-waiting 'discard' part cannot be re-encoded (None)."""
    result = append(data_coding, b"Sale", CANCEL_ZH)
    if ucs2 is None:
        assert result is None
    else:
        assert result == Appended(ucs2, "Sale 回T退订".encode("utf-16-be"))


@pytest.mark.parametrize("data_coding", [0x02, 0x04, 0x05, 0x15, 0x24, 0xF4, 0x90])
def test_non_text_codings_get_none(data_coding: int) -> None:
    """Binary, 8-bit data, compressed and reserved codings have no text to append to."""
    assert append(data_coding, b"\x01\x02", "STOP") is None


def test_gsm_odd_escape_is_written_canonically() -> None:
    """A GSM part is rewritten from its decoded text: an escape before a non-extension
    code (read as that code's own character) comes back as the plain septet."""
    assert append(0x00, b"a\x1bA", "STOP") == Appended(0x00, b"aA STOP")


# -- append: limits ------------------------------------------------------------------------


def test_gsm_single_message_limit_is_160_septets() -> None:
    """Without UDH a GSM SMS holds 160 septets: 148 + ' STOP to end' (12) fits exactly;
    149 does not, and a text already at 160 septets gets None."""
    assert append(0x00, b"a" * 148, "STOP to end") == Appended(0x00, b"a" * 148 + b" STOP to end")
    assert append(0x00, b"a" * 149, "STOP to end") is None
    assert append(0x00, b"a" * 160, "T") is None


def test_escape_characters_count_two_septets() -> None:
    """'€' and '[' take two septets each (escape + code), in the text and in the cancel
    text alike."""
    text = encode_gsm("a" * 146 + "€")
    assert text == b"a" * 146 + b"\x1b\x65"
    assert append(0x00, text, "STOP to end") == Appended(0x00, text + b" STOP to end")
    assert append(0x00, encode_gsm("a" * 145 + "€["), "STOP to end") is None
    assert append(0x00, b"a" * 151, "[STOP]") == Appended(
        0x00, b"a" * 151 + b" \x1b\x3cSTOP\x1b\x3e"
    )
    assert append(0x00, b"a" * 152, "[STOP]") is None


def test_ucs2_single_message_limit_is_140_octets() -> None:
    """Without UDH a UCS2 SMS holds 140 octets (70 characters)."""
    assert append(0x08, "订".encode("utf-16-be") * 66, CANCEL_ZH) is not None
    assert append(0x08, "订".encode("utf-16-be") * 67, CANCEL_ZH) is None


def test_gsm_to_ucs2_must_fit_too() -> None:
    """A GSM text re-encoded as UCS2 must fit 140 octets: 65 letters + space + 回T退订
    (70 characters) fit, 66 letters do not."""
    result = append(0x00, b"a" * 65, CANCEL_ZH)
    assert result is not None
    assert len(result.payload) == 140
    assert append(0x00, b"a" * 66, CANCEL_ZH) is None


def test_last_part_with_8_bit_concatenation_udh() -> None:
    """After 05 00 03 ref total seq (6 octets) a GSM part holds 153 septets and a UCS2
    part 134 octets; the part sent is the UDH + the new user data."""
    result = append(0x00, b"a" * 141, "STOP to end", UDH8, concatenated=True)
    assert result is not None
    assert UDH8 + result.payload == bytes.fromhex("0500032a0202") + b"a" * 141 + b" STOP to end"
    assert append(0x00, b"a" * 142, "STOP to end", UDH8, concatenated=True) is None
    ucs2 = "订".encode("utf-16-be") * 63
    result = append(0x08, ucs2, CANCEL_ZH, UDH8, concatenated=True)
    assert result is not None
    assert UDH8 + result.payload == bytes.fromhex("0500032a0202") + ucs2 + CANCEL_ZH_UCS2
    assert len(UDH8 + result.payload) == 140
    assert append(0x08, ucs2 + b"\x8b\xa2", CANCEL_ZH, UDH8, concatenated=True) is None


def test_last_part_with_16_bit_concatenation_udh() -> None:
    """After 06 08 04 ref ref total seq (7 octets) a GSM part holds (140 - 7) * 8 // 7 =
    152 septets and a UCS2 part 132 octets (133 rounded down to even)."""
    result = append(0x00, b"a" * 140, "STOP to end", UDH16, concatenated=True)
    assert result is not None
    assert UDH16 + result.payload == bytes.fromhex("06080412340202") + b"a" * 140 + b" STOP to end"
    assert append(0x00, b"a" * 141, "STOP to end", UDH16, concatenated=True) is None
    ucs2 = "订".encode("utf-16-be") * 62
    result = append(0x08, ucs2, CANCEL_ZH, UDH16, concatenated=True)
    assert result is not None
    assert len(UDH16 + result.payload) == 139
    assert append(0x08, ucs2 + b"\x8b\xa2", CANCEL_ZH, UDH16, concatenated=True) is None


def test_last_part_of_gsm_message_is_not_reencoded() -> None:
    """In a message with other parts the last part keeps its coding: a GSM last part
    that would need UCS2 gets None (the relay refuses), even with room to spare."""
    assert append(0x00, b"end of offer", CANCEL_ZH, UDH8, concatenated=True) is None
    assert append(0x00, b"end of offer", CANCEL_ZH, concatenated=True) is None


def test_single_message_with_udh_may_be_reencoded() -> None:
    """A single message whose UDH is not a concatenation (here an application port
    element) may change to UCS2; the UDH still counts against the 140 octets."""
    udh = bytes.fromhex("0605040b8423f0")
    result = append(0x00, b"Sale", CANCEL_ZH, udh)
    assert result == Appended(0x08, "Sale 回T退订".encode("utf-16-be"))
    assert append(0x00, b"a" * 61, CANCEL_ZH, udh) is not None  # 7 + 2 * 66 = 139
    assert append(0x00, b"a" * 62, CANCEL_ZH, udh) is None


def test_sar_part_counts_the_udh_the_smsc_adds() -> None:
    """A part concatenated by SAR TLVs (other parts, no UDH) is counted with the 7-octet
    16-bit concatenation UDH the SMSC may add: 152 septets."""
    assert append(0x00, b"a" * 140, "STOP to end", concatenated=True) is not None
    assert append(0x00, b"a" * 141, "STOP to end", concatenated=True) is None


def test_national_language_shift_udh_refuses_gsm() -> None:
    """A GSM part whose UDH selects a national shift table (IE 0x24/0x25) gets None: the
    default-alphabet septets would read differently there. UCS2 is unaffected."""
    locking_turkish = bytes.fromhex("03250101")
    single_turkish = bytes.fromhex("03240101")
    assert append(0x00, b"Sale", "STOP", locking_turkish) is None
    assert append(0x00, b"Sale", "STOP", single_turkish) is None
    assert append(0x08, PROMO_ZH_UCS2, CANCEL_ZH, locking_turkish) == Appended(
        0x08, PROMO_ZH_UCS2 + CANCEL_ZH_UCS2
    )


def test_whole_long_message_gets_text_when_sms_count_holds() -> None:
    """A whole message in one PDU that the SMSC splits (here message_payload, 2 SMS of
    153 septets) gets the cancel text when its last SMS has room, never an extra SMS."""
    result = append(0x00, b"a" * 294, "STOP to end", in_message_payload=True)
    assert result == Appended(0x00, b"a" * 294 + b" STOP to end")
    assert sms_count(*result) == 2
    assert append(0x00, b"a" * 295, "STOP to end", in_message_payload=True) is None


def test_long_ucs2_message_payload_gets_text_when_sms_count_holds() -> None:
    """message_payload UCS2: 2 SMS hold 268 octets (134 characters)."""
    text = "订".encode("utf-16-be") * 130
    assert append(0x08, text, CANCEL_ZH, in_message_payload=True) == Appended(
        0x08, text + CANCEL_ZH_UCS2
    )
    assert append(0x08, text + b"\x8b\xa2", CANCEL_ZH, in_message_payload=True) is None


def test_short_message_field_holds_254_octets() -> None:
    """An over-long short_message (the SMSC splits it) still cannot pass 254 octets;
    the same text in message_payload can."""
    assert append(0x00, b"a" * 250, "STOP") is None
    assert append(0x00, b"a" * 250, "STOP", in_message_payload=True) is not None
    assert append(0x00, b"a" * 240, "STOP") == Appended(0x00, b"a" * 240 + b" STOP")


def test_udh_in_message_payload_is_one_sms() -> None:
    """A UDH means the sender cut the message itself: in message_payload too, the part
    is one SMS with the UDH counted."""
    assert append(0x00, b"a" * 141, "STOP to end", UDH8, in_message_payload=True) is not None
    assert append(0x00, b"a" * 142, "STOP to end", UDH8, in_message_payload=True) is None


# -- append: malformed input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_coding", "udh", "payload", "reason"),
    [
        (0x08, None, b"\x8b", "odd length"),
        (0x00, None, b"\x80", "not a GSM"),
        (0x01, None, b"\xe9", "not ASCII"),
        (0x00, bytes.fromhex("050003010202ff"), b"a", "leaves 1 octets"),
        (0x00, bytes.fromhex("0500030102"), b"a", "runs past"),
        (0x00, b"", b"a", "empty"),
    ],
)
def test_malformed_parts_raise(
    data_coding: int, udh: bytes | None, payload: bytes, reason: str
) -> None:
    """Bytes invalid for their coding, or a UDH whose length octet does not match the
    octets given, raise SmsTextError."""
    with pytest.raises(SmsTextError, match=reason):
        append(data_coding, payload, "STOP", udh)


def test_empty_cancel_text_is_refused() -> None:
    """Appending an empty cancel text is a caller error (ValueError)."""
    with pytest.raises(ValueError, match="empty"):
        append(0x00, b"Sale", "")


# -- with the PDU codec --------------------------------------------------------------------------


def test_submit_sm_last_part_round_trip() -> None:
    """The relay's path: cut the UDH from a submit_sm, append, put UDH + payload back;
    the PDU encodes, decodes, and its text ends with the cancel text."""
    pdu = SubmitSm(
        sequence_number=7,
        esm_class=0x40,
        data_coding=0x00,
        short_message=UDH8 + b"see you soon",
    )
    udh, payload = cut_udh(pdu.esm_class, pdu.payload)
    result = append_cancel_text(pdu.data_coding, udh, payload, "STOP to end", concatenated=True)
    assert result is not None
    new = replace(pdu, data_coding=result.data_coding, short_message=(udh or b"") + result.payload)
    again = decode(encode(new))
    assert isinstance(again, SubmitSm)
    assert again.short_message == UDH8 + b"see you soon STOP to end"
    assert message_text(again) == "see you soon STOP to end"


# -- property ------------------------------------------------------------------------------------

GSM_CHARS = [c for c in GSM_BASIC if c != "\x1b"] + list(GSM_EXTENSION.values())
CJK_CHARS = [*"回退订双十一大促全场五折，。【】", "😀"]
GSM_TEXT = st.text(st.sampled_from(GSM_CHARS), max_size=170)
MIXED_TEXT = st.text(st.sampled_from(GSM_CHARS + CJK_CHARS), max_size=75)
NEAR_LIMIT = st.one_of(
    st.builds(operator.add, st.integers(125, 160).map("a".__mul__), GSM_TEXT.map(lambda t: t[:8])),
    st.builds(operator.add, st.integers(55, 70).map("订".__mul__), MIXED_TEXT.map(lambda t: t[:4])),
)
"""Texts a few characters short of a GSM or UCS2 SMS, where the limits bite."""
CANCEL = st.one_of(
    st.text(st.sampled_from(GSM_CHARS), min_size=1, max_size=15),
    st.text(st.sampled_from(GSM_CHARS + CJK_CHARS), min_size=1, max_size=8),
)
UDHS = st.one_of(
    st.none(),
    st.builds(lambda r, t: bytes([5, 0, 3, r, t, t]), st.integers(0, 255), st.integers(2, 9)),
    st.builds(
        lambda r, t: bytes([6, 8, 4, *r.to_bytes(2), t, t]),
        st.integers(0, 65535),
        st.integers(2, 9),
    ),
)


def fits_one_sms(data_coding: int, udh_octets: int, payload: bytes) -> bool:
    """Whether UDH + user data fit 140 octets: GSM septets packed after the UDH and its
    fill bits (7-bit alignment), other codings as octets."""
    if data_coding == 0x00:
        offset = -(-udh_octets * 8 // 7)  # the UDH in septets, rounded up
        return (offset + len(payload)) * 7 <= 140 * 8
    return udh_octets + len(payload) <= 140


@given(st.one_of(GSM_TEXT, MIXED_TEXT, NEAR_LIMIT), CANCEL, UDHS, st.booleans())
@settings(max_examples=800)
def test_appended_part_fits_and_reads_back(
    text: str, cancel_text: str, udh: bytes | None, concatenated: bool
) -> None:
    """Whenever the append returns a part, UDH + user data fit its coding's SMS, the text
    reads back as the original + (one space unless UCS2) + the cancel text; and when
    that text fits (in GSM if it can, else UCS2, never re-encoding a part of a longer
    message) the append does return it."""
    data_coding = 0x00 if gsm_septets(text) is not None else 0x08
    payload = encode_gsm(text) if data_coding == 0x00 else text.encode("utf-16-be")
    result = append(data_coding, payload, cancel_text, udh, concatenated=concatenated)
    expected = text + ("" if data_coding == 0x08 else " ") + cancel_text
    gsm = data_coding == 0x00 and gsm_septets(expected) is not None
    want = encode_gsm(expected) if gsm else expected.encode("utf-16-be")
    one_sms = udh is not None or concatenated
    udh_octets = len(udh) if udh is not None else 7 if concatenated else 0
    if one_sms or fits_one_sms(data_coding, 0, payload):
        possible = fits_one_sms(0x00 if gsm else 0x08, udh_octets, want)
        possible = possible and not (concatenated and data_coding == 0x00 and not gsm)
        assert (result is not None) is possible
    if result is None:
        return
    assert result == Appended(0x00 if gsm else 0x08, want)
    decoded = decode_text(result.data_coding, result.payload)
    assert decoded == expected
    assert decoded.endswith(cancel_text)
    if one_sms:
        assert fits_one_sms(result.data_coding, udh_octets, result.payload)
    else:
        assert sms_count(*result) <= sms_count(data_coding, payload)
