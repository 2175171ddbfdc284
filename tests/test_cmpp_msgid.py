"""CMPP Msg_Id packing and the generator (filterd/cmpp/msgid.py)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.cmpp.msgid import MsgId, MsgIdGenerator, pack_msg_id, unpack_msg_id


def test_bits_worked_by_hand() -> None:
    """December 7th 16:05:03, gateway 901234, sequence 1: month 1100, day 00111, hour
    10000, minute 000101, second 000011, gateway 0011011100000001110010, sequence 1, read
    as hex C3C0 50CD C072 0001."""
    fields = MsgId(12, 7, 16, 5, 3, 901234, 1)
    assert pack_msg_id(fields) == 0xC3C050CDC0720001
    assert unpack_msg_id(0xC3C050CDC0720001) == fields


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_any_64_bits_round_trip(value: int) -> None:
    """Any 64-bit id from a peer unpacks (no field range-checked beyond its width) and
    packs back to itself."""
    assert pack_msg_id(unpack_msg_id(value)) == value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (MsgId(16, 1, 0, 0, 0, 0, 0), "month 16 does not fit 4 bits"),
        (MsgId(1, 1, 0, 64, 0, 0, 0), "minute 64 does not fit 6 bits"),
        (MsgId(1, 1, 0, 0, 0, 1 << 22, 0), "gateway 4194304 does not fit 22 bits"),
        (MsgId(1, 1, 0, 0, 0, 0, -1), "sequence -1 does not fit 16 bits"),
    ],
)
def test_pack_refuses_a_field_too_wide(fields: MsgId, message: str) -> None:
    """pack_msg_id names the field that does not fit its bits."""
    with pytest.raises(ValueError, match=message):
        pack_msg_id(fields)


def test_unpack_refuses_more_than_64_bits() -> None:
    """A value over 64 bits is not a Msg_Id."""
    with pytest.raises(ValueError, match="does not fit 64 bits"):
        unpack_msg_id(1 << 64)


def test_generator_stamps_time_and_counts() -> None:
    """The generator stamps the time given and its gateway id, and counts the sequence up
    across seconds."""
    generator = MsgIdGenerator(900001)
    first = unpack_msg_id(generator.issue(datetime(2026, 12, 7, 16, 5, 3)))
    second = unpack_msg_id(generator.issue(datetime(2026, 12, 7, 16, 5, 4)))
    assert first == MsgId(12, 7, 16, 5, 3, 900001, 0)
    assert second == MsgId(12, 7, 16, 5, 4, 900001, 1)
    assert generator.gateway == 900001


def test_generator_wraps_at_16_bits() -> None:
    """The sequence wraps from 65,535 to 0; within one second all 65,536 ids differ."""
    generator = MsgIdGenerator(1, start=65535)
    now = datetime(2026, 12, 7, 16, 5, 3)
    assert unpack_msg_id(generator.issue(now)).sequence == 65535
    assert unpack_msg_id(generator.issue(now)).sequence == 0
    ids = {MsgIdGenerator(2).issue(now)} | {generator.issue(now) for _ in range(65535)}
    assert len({i for i in ids if unpack_msg_id(i).gateway == 1}) == 65535


def test_generator_refuses_a_wide_gateway() -> None:
    """A gateway id over 22 bits is refused."""
    with pytest.raises(ValueError, match="22 bits"):
        MsgIdGenerator(1 << 22)
