"""Encoding CMPP messages (filterd/cmpp/encode.py): the bytes written by hand from the
protocol's layouts in both versions, what each version leaves out, the fields the wire
cannot carry, cmppy (a CMPP 3.0 client) as an independent encoder, and a submit passed
on as it came (`resubmit`)."""

from __future__ import annotations

import dataclasses

import pytest
from cmppy.request import SubmitReq
from hypothesis import given
from hypothesis import strategies as st

from filterd.cmpp.encode import encode, fixed_text, fixed_uint, resubmit
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import (
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
)
from tests.cmpp_codec_helpers import (
    AUTH,
    DELIVER_MO_20,
    DELIVER_MO_20_WIRE,
    DELIVER_REPORT_30,
    HAND_WRITTEN,
    SUBMIT_20,
    SUBMIT_20_WIRE,
    SUBMIT_30,
    text,
)


@pytest.mark.parametrize(
    ("version", "data", "pdu"),
    [case[1:] for case in HAND_WRITTEN],
    ids=[c[0] for c in HAND_WRITTEN],
)
def test_hand_written_bytes(version: int, data: bytes, pdu: Pdu) -> None:
    """Each message encodes to the octets written by hand from the protocol's layout."""
    assert encode(pdu, version) == data


def test_fields_absent_in_2_0_are_left_out() -> None:
    """In 2.0 a SUBMIT carries no terminal types and no LinkID: the 3.0-only values are
    not written, and the 2.0 Reserve (8 NULs) closes the body; terminal ids take 21 octets."""
    submit = dataclasses.replace(
        SUBMIT_20, fee_terminal_type=1, dest_terminal_type=1, link_id="LINK01"
    )
    assert encode(submit, V20) == SUBMIT_20_WIRE
    deliver = dataclasses.replace(DELIVER_MO_20, src_terminal_type=1, link_id="L")
    assert encode(deliver, V20) == DELIVER_MO_20_WIRE


def test_the_same_submit_is_longer_in_3_0() -> None:
    """A 3.0 SUBMIT with two destinations is 47 octets longer than in 2.0: 11 more for
    Fee_terminal_Id, 2 x 11 for the destinations, 2 terminal types, and LinkID (20)
    instead of Reserve (8)."""
    assert len(encode(SUBMIT_30, V30)) - len(encode(SUBMIT_30, V20)) == 11 + 22 + 2 + 12


def test_result_fits_one_octet_in_2_0_only() -> None:
    """A Result over 255 cannot be written in 2.0 (ValueError naming the field and the
    version) but can in 3.0."""
    with pytest.raises(ValueError, match=r"result 256 does not fit 1 octet\(s\) in CMPP 2.0"):
        encode(SubmitResp(1, result=256), V20)
    assert encode(SubmitResp(1, result=256), V30)[-4:] == bytes.fromhex("00000100")
    with pytest.raises(ValueError, match="status"):
        encode(ConnectResp(1, status=300, version=V20), V20)


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (Submit(1, dest_terminal_ids=()), "0 dest_terminal_ids: 1 to 100"),
        (Submit(1, dest_terminal_ids=("1",) * 101), "101 dest_terminal_ids: 1 to 100"),
        (Submit(1, dest_terminal_ids=("1",), msg_content=bytes(256)), "at most 255"),
        (Submit(1, dest_terminal_ids=("1",), src_id="1" * 22), "src_id '1+': at most 21"),
        (Submit(1, dest_terminal_ids=("1" * 22,)), "dest_terminal_ids '1+': at most 21"),
        (Submit(1, dest_terminal_ids=("1",), service_id="a\x00b"), "no NUL"),
        (Submit(1, dest_terminal_ids=("1",), msg_src="中国"), "msg_src '中国' is not Latin-1"),
        (Submit(1, dest_terminal_ids=("1",), msg_id=1 << 64), "msg_id .* does not fit 8"),
        (Submit(1, dest_terminal_ids=("1",), pk_total=-1), "pk_total -1 does not fit 1"),
        (Connect(1, "901234", AUTH[:15], V30, 0), "authenticator_source is 15 octets"),
        (ConnectResp(1, 0, b"", V30), "authenticator_ismg is 0 octets, not 16"),
        (DeliverResp(1 << 32), "sequence_id .* does not fit 4 octets"),
    ],
)
def test_fields_the_wire_cannot_carry(pdu: Pdu, message: str) -> None:
    """A value that does not fit its field raises ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        encode(pdu, V20)


def test_a_string_field_must_be_str() -> None:
    """A string field holding bytes raises TypeError (it would otherwise be written as
    its repr)."""
    with pytest.raises(TypeError, match="dest_id must be str, not bytes"):
        encode(Deliver(1, dest_id=b"10690001"), V30)  # type: ignore[arg-type]


def test_unknown_version_is_refused() -> None:
    """Only 0x20 and 0x30 have layouts; another version is the caller's mistake."""
    with pytest.raises(ValueError, match="0x21"):
        encode(DELIVER_REPORT_30, 0x21)


def test_full_width_string_has_no_nul() -> None:
    """A string as long as its field fills it with no NUL (CMPP strings are fixed-width,
    not NUL-terminated); shorter ones are NUL-padded."""
    assert fixed_text("src_id", "1" * 21, 21) == b"1" * 21
    assert fixed_text("fee_type", "1", 2) == b"1\x00"
    assert fixed_uint("smsc_sequence", 7, 4) == b"\x00\x00\x00\x07"


def test_same_bytes_as_cmppy() -> None:
    """cmppy's CMPP 3.0 SUBMIT encoder writes the same octets for the same values (UCS2
    text to two destinations with a LinkID; cmppy leaves Msg_Id 0 and numbers its
    requests from a counter of its own)."""
    theirs = SubmitReq(
        "900001",
        "退订回T",
        src_id="10690001",
        dest_terminal_id=["8613800138000", "8613900139000"],
        registered_delivery=1,
        service_id="MI",
        fee_usertype=2,
        feetype="01",
        feecode="000010",
        valid_time=17 * "\x00",
        at_time=17 * "\x00",
        linkid="LINK01",
    )
    ours = Submit(
        theirs.sequence,
        registered_delivery=1,
        service_id="MI",
        fee_usertype=2,
        msg_fmt=8,
        msg_src="900001",
        fee_type="01",
        fee_code="000010",
        src_id="10690001",
        dest_terminal_ids=("8613800138000", "8613900139000"),
        msg_content="退订回T".encode("utf-16-be"),
        link_id="LINK01",
    )
    assert encode(ours, V30) == theirs.message


@pytest.mark.parametrize(("version", "pdu"), [(V20, SUBMIT_20), (V30, SUBMIT_30)])
@given(msg_id=st.integers(0, 2**64 - 1), msg_src=text(6), client_src=text(6))
def test_resubmit_is_the_encoding_with_msg_id_0_and_another_msg_src(
    version: int, pdu: Submit, msg_id: int, msg_src: str, client_src: str
) -> None:
    """A submit's octets with Msg_Id and Msg_src rewritten are the octets of the same
    submit with Msg_Id 0 and that Msg_src, in both versions."""
    sent = dataclasses.replace(pdu, msg_id=msg_id, msg_src=client_src)
    expected = encode(dataclasses.replace(sent, msg_id=0, msg_src=msg_src), version)
    assert resubmit(encode(sent, version), version, fixed_text("msg_src", msg_src, 6)) == expected
