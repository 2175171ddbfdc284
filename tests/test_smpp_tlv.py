"""SMPP optional parameters (filterd/smpp/tlv.py): finding and replacing a parameter
while keeping the wire order."""

from __future__ import annotations

from filterd.smpp.tlv import (
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    tlv_value,
    with_tlv,
)


def test_with_tlv_replaces_in_place_or_appends() -> None:
    """with_tlv keeps the order: the first matching tag is replaced, a new tag goes last."""
    tlvs = ((1, b"a"), (2, b"b"), (1, b"c"))
    assert with_tlv(tlvs, 1, b"z") == ((1, b"z"), (2, b"b"), (1, b"c"))
    assert with_tlv(tlvs, 3, b"n") == (*tlvs, (3, b"n"))


def test_tlv_value_is_the_first_with_the_tag() -> None:
    """tlv_value gives the value of the first parameter with the tag (an empty one
    included), and None when no parameter has it."""
    tlvs = ((TAG_MESSAGE_STATE, b""), (TAG_MESSAGE_PAYLOAD, b"one"), (TAG_MESSAGE_PAYLOAD, b"two"))
    assert tlv_value(tlvs, TAG_MESSAGE_PAYLOAD) == b"one"
    assert tlv_value(tlvs, TAG_MESSAGE_STATE) == b""
    assert tlv_value(tlvs, TAG_RECEIPTED_MESSAGE_ID) is None
    assert tlv_value((), TAG_MESSAGE_PAYLOAD) is None
