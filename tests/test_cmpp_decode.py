"""Decoding CMPP messages (filterd/cmpp/decode.py): the hand-written layouts in both
versions, messages from cmppy (a CMPP 3.0 client), malformed bodies with the Result to
answer and the answer itself, and the invariant that no bytes raise anything but
CmppProtocolError."""

from __future__ import annotations

import pytest
from cmppy.request import ConnectReq, SubmitReq, TerminateReq
from cmppy.response import parse_response
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.cmpp.auth import connect_is_authentic
from filterd.cmpp.decode import CmppProtocolError, decode
from filterd.cmpp.encode import encode
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import (
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
)
from filterd.cmpp.result import BAD_COMMAND_ID, BAD_MSG_LENGTH, BAD_STRUCTURE
from tests.cmpp_codec_helpers import (
    DELIVER_MO_20_WIRE,
    HAND_WRITTEN,
    MSG_ID,
    SUBMIT_20_WIRE,
    SUBMIT_30_WIRE,
    check_error,
    frame,
    fuzz_frames,
    messages,
    pad,
    wire,
)


def error_of(data: bytes, version: int = V30) -> CmppProtocolError:
    """The CmppProtocolError that decoding `data` raises."""
    with pytest.raises(CmppProtocolError) as caught:
        decode(data, version)
    check_error(caught.value)
    return caught.value


# -- hand-written layouts and an independent peer -----------------------------------------------


@pytest.mark.parametrize(
    ("version", "data", "pdu"),
    [case[1:] for case in HAND_WRITTEN],
    ids=[c[0] for c in HAND_WRITTEN],
)
def test_hand_written_bytes(version: int, data: bytes, pdu: Pdu) -> None:
    """The octets written by hand from the protocol's layout decode to the values they hold."""
    assert decode(data, version) == pdu


def test_the_version_chooses_the_layout() -> None:
    """A 2.0 SUBMIT read as 3.0 does not fit the 3.0 layout (the destinations are 32
    octets wide there): bad structure, not a wrong value."""
    assert error_of(SUBMIT_20_WIRE, V30).result == BAD_STRUCTURE
    assert error_of(SUBMIT_30_WIRE, V20).result in (BAD_STRUCTURE, BAD_MSG_LENGTH)


def test_strings_are_read_up_to_the_first_nul() -> None:
    """A fixed-width string ends at its first NUL; octets after it are padding, whatever
    they hold."""
    data = bytearray(DELIVER_MO_20_WIRE)
    start = 12 + 8  # Dest_Id
    data[start : start + 21] = b"10690001\x00junk-after-n"  # 21 octets
    assert isinstance(pdu := decode(bytes(data), V20), Deliver)
    assert pdu.dest_id == "10690001"


def test_strings_keep_every_octet_as_latin_1() -> None:
    """String octets above 0x7F decode one character each (Latin-1), so they encode back
    to the same octets."""
    data = bytearray(DELIVER_MO_20_WIRE)
    data[12 + 8 : 12 + 8 + 3] = b"\xc4\xe3\xff"
    pdu = decode(bytes(data), V20)
    assert isinstance(pdu, Deliver)
    assert pdu.dest_id.startswith("\xc4\xe3\xff")
    assert encode(pdu, V20) == bytes(data)


def test_active_test_resp_without_its_reserved_octet() -> None:
    """ACTIVE_TEST_RESP is read with or without its Reserved octet (some peers leave it out)."""
    assert decode(wire("0000000c 80000008 00000005"), V20) == ActiveTestResp(5)
    assert decode(wire("0000000d 80000008 00000005 00"), V20) == ActiveTestResp(5)


def test_cmppy_requests_decode() -> None:
    """cmppy's CONNECT (stamped with its own clock), SUBMIT and TERMINATE decode in the
    3.0 layout, and its authenticator checks out with the shared secret."""
    connect = decode(ConnectReq("901234", "s3cret").message, V30)
    assert isinstance(connect, Connect)
    assert (connect.source_addr, connect.version) == ("901234", V30)
    assert connect_is_authentic(connect, "s3cret")
    assert not connect_is_authentic(connect, "s3cre")
    submit = decode(
        SubmitReq("900001", "你好", src_id="10690001", feecode="000000", linkid="L1").message,
        V30,
    )
    assert isinstance(submit, Submit)
    assert submit.dest_terminal_ids == ("8613900000000",)
    assert (submit.msg_fmt, submit.msg_content.decode("utf-16-be")) == (8, "你好")
    assert (submit.src_id, submit.fee_code, submit.link_id) == ("10690001", "000000", "L1")
    assert isinstance(decode(TerminateReq().message, V30), Terminate)


def test_cmppy_reads_our_responses() -> None:
    """cmppy's response parser reads the 3.0 CONNECT_RESP and SUBMIT_RESP we encode."""
    connect_resp = parse_response(encode(ConnectResp(3, status=3, version=V30), V30))
    assert (connect_resp.status, connect_resp.version, connect_resp.sequence) == (3, 0x30, 3)
    submit_resp = parse_response(encode(SubmitResp(4, msg_id=MSG_ID, result=64), V30))
    assert (submit_resp.msg_id, submit_resp.result) == (MSG_ID, 64)


# -- malformed input ------------------------------------------------------------------------


def test_frame_shorter_than_a_header() -> None:
    """Fewer than 12 octets: framing is lost, the connection must close."""
    error = error_of(b"\x00\x00\x00\x0c\x00")
    assert error.close
    assert error.sequence_id is None
    assert error.reply() is None


def test_total_length_not_the_frame_length() -> None:
    """A Total_Length other than the frame's length loses framing; the error names both."""
    error = error_of(wire("0000000d 00000008 00000009"))
    assert error.close
    assert "Total_Length 13 but 12 octets" in error.reason
    assert error.reply() is None


@pytest.mark.parametrize("command_id", [0x00000003, 0x00000006, 0x80000007, 0xFFFFFFFF])
def test_unknown_command(command_id: int) -> None:
    """An unknown Command_Id is Result 2 and nothing to answer; the frame is consumed
    (close is False)."""
    error = error_of(frame(command_id, b"\x01\x02", seq=9))
    assert (error.result, error.command_id, error.sequence_id) == (BAD_COMMAND_ID, command_id, 9)
    assert not error.close
    assert f"{command_id:#010x}" in error.reason
    assert error.reply() is None


def test_truncated_submit_is_answered_with_result_1() -> None:
    """A SUBMIT whose body ends inside a field is bad structure (Result 1), answered with
    SUBMIT_RESP Result 1 and Msg_Id 0 on the same Sequence_Id."""
    data = SUBMIT_30_WIRE[:100]
    error = error_of(wire(f"{len(data):08x}", data[4:]))
    assert error.result == BAD_STRUCTURE
    assert "Submit seq 259: body ends inside" in error.reason
    assert error.reply() == SubmitResp(259, msg_id=0, result=BAD_STRUCTURE)


def test_msg_length_past_the_body() -> None:
    """A Msg_Length running past the body is Result 4; a DELIVER is answered with its own
    Msg_Id."""
    body = DELIVER_MO_20_WIRE[12:]
    cut = body[: 8 + 21 + 10 + 3 + 21 + 1] + b"\xff" + b"T"
    error = error_of(frame(0x5, cut, seq=7), V20)
    assert error.result == BAD_MSG_LENGTH
    assert "Msg_Length 255 runs past the body" in error.reason
    assert error.reply() == DeliverResp(7, msg_id=MSG_ID, result=BAD_MSG_LENGTH)


def test_octets_after_the_body() -> None:
    """Octets left over after the last field are bad structure."""
    error = error_of(DELIVER_MO_20_WIRE[:3] + b"\x57" + DELIVER_MO_20_WIRE[4:] + b"\x00", V20)
    assert error.result == BAD_STRUCTURE
    assert "1 octets after the body" in error.reason


@pytest.mark.parametrize("count", [0, 101, 255])
def test_destination_count_outside_1_to_100(count: int) -> None:
    """DestUsr_tl 0 or over 100 is bad structure, before any terminal id is read."""
    body = bytearray(SUBMIT_20_WIRE[12:])
    body[116] = count
    error = error_of(frame(0x4, bytes(body), seq=3), V20)
    assert error.result == BAD_STRUCTURE
    assert f"DestUsr_tl {count} outside 1..100" in error.reason


def test_bad_connect_is_answered_with_status_1() -> None:
    """A CONNECT with a short body is answered CONNECT_RESP Status 1 (bad structure),
    announcing the version given to reply()."""
    error = error_of(frame(0x1, pad("901234", 6) + bytes(16), seq=1))
    assert error.reply(V20) == ConnectResp(1, status=1, version=V20)


def test_bad_active_test_and_terminate_are_answered() -> None:
    """An ACTIVE_TEST or TERMINATE with a body is still answered with its response."""
    assert error_of(frame(0x8, b"\x00", seq=4)).reply() == ActiveTestResp(4)
    assert error_of(frame(0x2, b"\x00", seq=5)).reply() == TerminateResp(5)


def test_a_broken_response_is_not_answered() -> None:
    """A malformed response gets no answer (answering it could loop)."""
    assert error_of(frame(0x80000004, b"\x00" * 3, seq=6)).reply() is None


def test_unknown_version_is_the_callers_mistake() -> None:
    """decode() with a version other than 0x20 / 0x30 raises ValueError, whatever the bytes."""
    with pytest.raises(ValueError, match="0x31"):
        decode(b"", 0x31)


# -- properties -------------------------------------------------------------------------------


@given(st.sampled_from([V20, V30]).flatmap(lambda v: st.tuples(st.just(v), messages(v))))
@settings(max_examples=400)
def test_round_trip(case: tuple[int, Pdu]) -> None:
    """Every message either version can carry decodes from its encoding to itself."""
    version, pdu = case
    assert decode(encode(pdu, version), version) == pdu


@given(st.binary(max_size=400), st.sampled_from([V20, V30]))
@settings(max_examples=600)
def test_fuzz_arbitrary_bytes(data: bytes, version: int) -> None:
    """Arbitrary bytes decode to a message or raise CmppProtocolError, nothing else."""
    try:
        decode(data, version)
    except CmppProtocolError as error:
        check_error(error)


@given(fuzz_frames(), st.sampled_from([V20, V30]))
@settings(max_examples=800)
def test_fuzz_valid_headers_random_bodies(data: bytes, version: int) -> None:
    """A correct header around a random or cut-short body decodes to a message that encodes
    and decodes back to itself, or raises CmppProtocolError (the frame consumed) with the
    header's Sequence_Id."""
    outcome: Pdu | CmppProtocolError
    try:
        outcome = decode(data, version)
    except CmppProtocolError as error:
        outcome = error
    if isinstance(outcome, CmppProtocolError):
        check_error(outcome)
        assert outcome.sequence_id == int.from_bytes(data[8:12], "big")
        assert not outcome.close
    else:
        assert decode(encode(outcome, version), version) == outcome
