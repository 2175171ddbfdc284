"""The packed binary form of facts and the side-table values (filterd/storage/records.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.model import Channel, Kind
from filterd.storage.records import (
    BASE_LEN,
    CHANNEL_CODES,
    MAX_ID,
    MAX_SOURCE_ID,
    REQUEST_LEN,
    Record,
    pack,
    pack_side,
    unpack,
    unpack_fields,
    unpack_side,
)
from filterd.storage.records import CHANNELS as CHANNEL_OF_CODE

T = 1_700_000_000_000
TIMES = st.integers(min_value=0, max_value=2**48 - 1)
CHANNELS = st.sampled_from([None, Channel.EMAIL, Channel.SMS, Channel.VOICE])


@st.composite
def records(draw: st.DrawFn) -> Record:
    """Any record pack() accepts: an expiry exactly when the kind is a request."""
    kind = draw(st.sampled_from(list(Kind)))
    return Record(
        kind=kind,
        channel=draw(CHANNELS),
        scope_id=draw(st.integers(min_value=0, max_value=MAX_ID)),
        at_ms=draw(TIMES),
        source_id=draw(st.integers(min_value=1, max_value=MAX_SOURCE_ID)),
        expires_ms=draw(TIMES) if kind is Kind.REQUEST else None,
    )


@given(records())
@settings(max_examples=300)
def test_pack_unpack_round_trip(record: Record) -> None:
    """unpack(pack(r)) gives back exactly r."""
    assert unpack(pack(record)) == [record]


@given(st.lists(records(), max_size=8))
@settings(max_examples=200)
def test_concatenated_records_round_trip(run: list[Record]) -> None:
    """A consumer value is the records one after another; unpack reads them all in order."""
    assert unpack(b"".join(pack(r) for r in run)) == run


@pytest.mark.parametrize(
    ("kind", "length"),
    [(Kind.CONSENT, BASE_LEN), (Kind.REFUSAL, BASE_LEN), (Kind.REQUEST, REQUEST_LEN)],
)
def test_record_lengths(kind: Kind, length: int) -> None:
    """Consent and refusal records are 12 bytes; request records are 18."""
    expires = T + 1 if kind is Kind.REQUEST else None
    assert len(pack(Record(kind, Channel.SMS, 7, T, 1, expires))) == length
    assert (BASE_LEN, REQUEST_LEN) == (12, 18)


def test_byte_layout() -> None:
    """Head nibbles are kind/channel, then scope (3), time (6), source (2), expiry (6)."""
    packed = pack(Record(Kind.REQUEST, Channel.SMS, 0x010203, 0x0A0B0C0D0E0F, 0x1122, 0x3344))
    assert packed == bytes.fromhex("22 010203 0a0b0c0d0e0f 1122 000000003344")


@pytest.mark.parametrize(
    ("kind", "channel", "scope", "slot"),
    [
        (Kind.CONSENT, Channel.EMAIL, 1, b"\x11\x00\x00\x01"),
        (Kind.REQUEST, Channel.SMS, 0xABCDEF, b"\x22\xab\xcd\xef"),
        (Kind.REFUSAL, None, 0, b"\x30\x00\x00\x00"),
        (Kind.REFUSAL, Channel.SMS, MAX_ID, b"\x32\xff\xff\xff"),
        (Kind.CONSENT, Channel.VOICE, 1, b"\x13\x00\x00\x01"),
        (Kind.REFUSAL, Channel.VOICE, 0, b"\x33\x00\x00\x00"),
    ],
)
def test_slot_bytes(kind: Kind, channel: Channel | None, scope: int, slot: bytes) -> None:
    """The slot is kind<<4|channel then the 3-byte scope, and is the packed prefix."""
    expires = T if kind is Kind.REQUEST else None
    record = Record(kind, channel, scope, T, 1, expires)
    assert record.slot == slot
    assert pack(record)[:4] == slot


def test_channel_codes_are_the_stored_ones() -> None:
    """Channel codes are fixed: 0 all, 1 email, 2 sms as a registry has always held them,
    voice the new 3; codes and channels map one to one."""
    assert CHANNEL_CODES == {None: 0, Channel.EMAIL: 1, Channel.SMS: 2, Channel.VOICE: 3}
    assert {code: channel for channel, code in CHANNEL_CODES.items()} == CHANNEL_OF_CODE


# A consumer value as a registry written before the voice channel holds it: an email
# consent (sender 1), an sms request (sender 2, expiring), a refusal for every
# channel and every sender, an sms refusal of sender 2.
LEGACY_VALUE = bytes.fromhex(
    "11 000001 018bcfe56800 0001"
    "22 000002 018bcfe56801 0002 018bd50bc401"
    "30 000000 018bcfe56802 0003"
    "32 000002 018bcfe56803 0001"
)
LEGACY_RECORDS = [
    Record(Kind.CONSENT, Channel.EMAIL, 1, T, 1),
    Record(Kind.REQUEST, Channel.SMS, 2, T + 1, 2, T + 1 + 86_400_000),
    Record(Kind.REFUSAL, None, 0, T + 2, 3),
    Record(Kind.REFUSAL, Channel.SMS, 2, T + 3, 1),
]


def test_value_written_before_voice_decodes_unchanged() -> None:
    """Bytes a registry wrote before the voice channel decode to the same records, and
    pack back to the very same bytes (no stored record changes meaning)."""
    assert unpack(LEGACY_VALUE) == LEGACY_RECORDS
    assert b"".join(pack(r) for r in LEGACY_RECORDS) == LEGACY_VALUE


def test_voice_record_beside_the_others() -> None:
    """A voice record is channel code 3 in the head's low nibble; appended to an older
    value, the older records still decode as they did."""
    voice = Record(Kind.REFUSAL, Channel.VOICE, 2, T + 4, 1)
    assert pack(voice) == bytes.fromhex("33 000002 018bcfe56804 0001")
    assert unpack(LEGACY_VALUE + pack(voice)) == [*LEGACY_RECORDS, voice]


def test_slot_ignores_time_and_source() -> None:
    """Records differing only in time, source and expiry share a slot."""
    a = Record(Kind.REQUEST, Channel.SMS, 5, T, 1, T + 1)
    b = Record(Kind.REQUEST, Channel.SMS, 5, T + 10, 2, T + 99)
    assert a.slot == b.slot


def test_packed_times_compare_as_bytes() -> None:
    """Big-endian times: a later record's time bytes sort after an earlier one's."""
    early = pack(Record(Kind.CONSENT, Channel.SMS, 5, 255, 1))
    late = pack(Record(Kind.CONSENT, Channel.SMS, 5, 256, 1))
    assert early[4:10] < late[4:10]


@pytest.mark.parametrize("scope", [-1, MAX_ID + 1])
def test_pack_rejects_scope_out_of_range(scope: int) -> None:
    """A sender id outside 0..2**24-1 is refused."""
    with pytest.raises(ValueError, match=f"sender id {scope} out of range"):
        pack(Record(Kind.CONSENT, Channel.SMS, scope, T, 1))


@pytest.mark.parametrize("source", [0, -1, MAX_SOURCE_ID + 1])
def test_pack_rejects_source_out_of_range(source: int) -> None:
    """A source id outside 1..2**16-1 is refused."""
    with pytest.raises(ValueError, match=f"source id {source} out of range"):
        pack(Record(Kind.CONSENT, Channel.SMS, 1, T, source))


@pytest.mark.parametrize("at_ms", [-1, 2**48])
def test_pack_rejects_time_out_of_range(at_ms: int) -> None:
    """A time that does not fit the 6-byte field is refused with ValueError."""
    with pytest.raises(ValueError, match="out of range"):
        pack(Record(Kind.CONSENT, Channel.SMS, 1, at_ms, 1))


def test_pack_rejects_request_without_expiry() -> None:
    """A request record needs an expiry."""
    with pytest.raises(ValueError, match="needs an expiry"):
        pack(Record(Kind.REQUEST, Channel.SMS, 1, T, 1))


def test_unpack_empty_value() -> None:
    """An empty value holds no records."""
    assert unpack(b"") == []


@pytest.mark.parametrize(
    "head",
    [0x00, 0x01, 0x40, 0xF2, 0x14, 0x1F, 0x34],
    ids=lambda h: f"head{h:02x}",
)
def test_unpack_rejects_unknown_kind_or_channel(head: int) -> None:
    """A head byte with an unknown kind or channel code is a damaged record."""
    with pytest.raises(ValueError, match="damaged record at byte 0"):
        unpack(bytes([head]) + bytes(BASE_LEN - 1))


def test_unpack_reports_position_of_damage() -> None:
    """Damage after a good record is reported at its byte offset."""
    good = pack(Record(Kind.CONSENT, Channel.SMS, 1, T, 1))
    with pytest.raises(ValueError, match=f"damaged record at byte {BASE_LEN}"):
        unpack(good + b"\x99" + bytes(BASE_LEN - 1))


@given(records(), st.data())
@settings(max_examples=100)
def test_unpack_rejects_truncated_record(record: Record, data: st.DataObject) -> None:
    """Any cut through the last record is reported as truncated."""
    packed = pack(record)
    cut = data.draw(st.integers(min_value=1, max_value=len(packed) - 1))
    with pytest.raises(ValueError, match="truncated record at byte 0"):
        unpack(packed[:cut])


def test_unpack_rejects_base_record_cut_as_request() -> None:
    """A request head followed by only 12 bytes is truncated (requests need 18)."""
    with pytest.raises(ValueError, match="truncated record at byte 0"):
        unpack(b"\x22" + bytes(BASE_LEN - 1))


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_unpack_fuzz(value: bytes) -> None:
    """Random bytes either decode to records or raise ValueError, nothing else."""
    try:
        decoded = unpack(value)
    except ValueError:
        return
    assert sum(REQUEST_LEN if r.kind is Kind.REQUEST else BASE_LEN for r in decoded) == len(value)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_unpack_fields_are_the_records_fields(value: bytes) -> None:
    """unpack_fields gives each record's fields as a tuple in Record's order, and
    refuses what unpack refuses, with the same message."""
    try:
        decoded = unpack(value)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc)):
            unpack_fields(value)
        return
    expected = [
        (r.kind, r.channel, r.scope_id, r.at_ms, r.source_id, r.expires_ms) for r in decoded
    ]
    assert unpack_fields(value) == expected


@given(st.binary(max_size=64))
@settings(max_examples=200)
def test_decoded_values_repack_to_the_same_bytes(value: bytes) -> None:
    """What unpack accepts with valid ids packs back to the very same bytes."""
    try:
        decoded = unpack(value)
    except ValueError:
        return
    if all(r.source_id > 0 for r in decoded):
        assert b"".join(pack(r) for r in decoded) == value


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@given(st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT))
@settings(max_examples=200)
def test_side_round_trip(evidence: str | None, message_id: str | None) -> None:
    """unpack_side(pack_side(e, m)) gives back (e, m), empty text read as None."""
    assert unpack_side(pack_side(evidence, message_id)) == (evidence or None, message_id or None)


def test_side_values() -> None:
    """The side value is evidence NUL message id; nothing to keep is empty."""
    assert pack_side("form https://x.example/a 10.0.0.1", "m1") == (
        b"form https://x.example/a 10.0.0.1\x00m1"
    )
    assert pack_side("ev", None) == b"ev\x00"
    assert pack_side(None, "m1") == b"\x00m1"
    assert pack_side(None, None) == b""
    assert pack_side("", "") == b""


@pytest.mark.parametrize(("evidence", "message_id"), [("\udcff", None), (None, "m\ud800")])
def test_side_with_unencodable_text_is_refused(
    evidence: str | None, message_id: str | None
) -> None:
    """Text that is not valid UTF-8 (a lone surrogate) is refused with a ValueError."""
    with pytest.raises(ValueError, match="surrogates not allowed"):
        pack_side(evidence, message_id)


@pytest.mark.parametrize("value", [None, b""])
def test_unpack_side_of_nothing(value: bytes | None) -> None:
    """A missing or empty side value means no evidence and no message id."""
    assert unpack_side(value) == (None, None)


def test_unpack_side_tolerates_bad_utf8() -> None:
    """Damaged UTF-8 in a side value is replaced, not raised."""
    assert unpack_side(b"\xff\x00m") == ("\ufffd", "m")


def test_side_with_nul_in_evidence_round_trips_or_is_refused() -> None:
    """Evidence containing NUL is either kept whole or refused, never split."""
    try:
        packed = pack_side("form\x00injected", None)
    except ValueError:
        return
    assert unpack_side(packed) == ("form\x00injected", None)
