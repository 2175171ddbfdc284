"""Framing a CMPP byte stream (filterd/cmpp/framer.py): messages across arbitrary chunks,
the Total_Length cap, the version switch after CONNECT, and the fuzz invariant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.cmpp.decode import CmppProtocolError
from filterd.cmpp.encode import encode
from filterd.cmpp.framer import Framer
from filterd.cmpp.header import MAX_LENGTH, V20, V30
from filterd.cmpp.pdu import ActiveTest, Pdu, Submit
from filterd.cmpp.result import BAD_COMMAND_ID
from tests.cmpp_codec_helpers import (
    CONNECT,
    CONNECT_WIRE,
    SUBMIT_20,
    SUBMIT_20_WIRE,
    check_error,
    frame,
    fuzz_frames,
    messages,
    wire,
)


def drain(framer: Framer) -> list[Pdu | CmppProtocolError]:
    """Every message or error the framer gives until it needs more bytes (or stays broken)."""
    out: list[Pdu | CmppProtocolError] = []
    while True:
        try:
            pdu = framer.next_pdu()
        except CmppProtocolError as error:
            check_error(error)
            out.append(error)
            if error.close:
                return out
            continue
        if pdu is None:
            return out
        out.append(pdu)


@given(
    st.sampled_from([V20, V30]).flatmap(
        lambda v: st.tuples(st.just(v), st.lists(messages(v), min_size=1, max_size=6))
    ),
    st.data(),
)
@settings(max_examples=150)
def test_framing_across_arbitrary_chunks(case: tuple[int, list[Pdu]], data: st.DataObject) -> None:
    """Messages sent back to back and cut into arbitrary chunks come out whole, in order,
    each with its own octets (`frame`)."""
    version, pdus = case
    stream = b"".join(encode(p, version) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = Framer(version)
    got: list[Pdu] = []
    frames: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framer.feed(stream[start:end])
        for pdu in framer:
            got.append(pdu)
            frames.append(framer.frame)
    assert got == pdus
    assert b"".join(frames) == stream
    assert framer.buffered == 0


def test_byte_by_byte() -> None:
    """A message fed one octet at a time comes out once its last octet arrives."""
    framer = Framer(V20)
    for octet in SUBMIT_20_WIRE[:-1]:
        framer.feed(bytes([octet]))
        assert framer.next_pdu() is None
    framer.feed(SUBMIT_20_WIRE[-1:])
    assert framer.next_pdu() == SUBMIT_20
    assert framer.buffered == 0


def test_version_switch_after_connect() -> None:
    """A server reads the CONNECT in either layout, then sets the client's version for the
    messages after it."""
    framer = Framer()
    framer.feed(CONNECT_WIRE + SUBMIT_20_WIRE)
    assert framer.next_pdu() == CONNECT
    framer.version = V20
    assert framer.version == V20
    assert framer.next_pdu() == SUBMIT_20
    with pytest.raises(ValueError, match="0x10"):
        framer.version = 0x10


@pytest.mark.parametrize("length", [0, 11])
def test_total_length_below_a_header(length: int) -> None:
    """A Total_Length under 12 breaks framing: close=True, with the header's Sequence_Id."""
    framer = Framer()
    framer.feed(wire(f"{length:08x} 00000008 00000009"))
    with pytest.raises(CmppProtocolError) as caught:
        framer.next_pdu()
    assert caught.value.close
    assert caught.value.sequence_id == 9
    assert f"Total_Length {length} outside 12..{MAX_LENGTH}" in caught.value.reason


def test_total_length_over_the_cap() -> None:
    """A Total_Length over the cap is refused as soon as the header is in, before the body
    is buffered; the framer stays broken."""
    framer = Framer(max_length=64)
    framer.feed(wire("00000041 00000004 00000001"))
    for _ in range(2):
        with pytest.raises(CmppProtocolError, match=r"Total_Length 65 outside 12\.\.64") as caught:
            framer.next_pdu()
        assert caught.value.close
    framer.feed(frame(0x8, b""))
    with pytest.raises(CmppProtocolError):
        framer.next_pdu()


def test_total_length_at_the_cap_is_accepted() -> None:
    """A message exactly max_length long is framed."""
    pdu = Submit(1, dest_terminal_ids=("1",), msg_content=b"x" * 20)
    data = encode(pdu, V30)
    framer = Framer(V30, max_length=len(data))
    framer.feed(data)
    assert framer.next_pdu() == pdu


def test_waits_for_the_whole_header() -> None:
    """Eleven octets of a header are not yet a verdict on the length."""
    framer = Framer()
    framer.feed(b"\xff" * 11)
    assert framer.next_pdu() is None
    framer.feed(b"\xff")
    with pytest.raises(CmppProtocolError):
        framer.next_pdu()


def test_goes_on_after_a_bad_message() -> None:
    """An unknown command or a malformed body consumes its frame only: the next message
    is read."""
    framer = Framer()
    framer.feed(frame(0x6, b"\x00" * 4, seq=2) + frame(0x8, b"\x00", seq=3) + frame(0x8, b""))
    outcomes = drain(framer)
    assert [type(o) for o in outcomes] == [CmppProtocolError, CmppProtocolError, ActiveTest]
    first = outcomes[0]
    assert isinstance(first, CmppProtocolError)
    assert (first.result, first.close) == (BAD_COMMAND_ID, False)


def test_rejects_bad_arguments() -> None:
    """A cap below the header length or an unknown version is the caller's mistake."""
    with pytest.raises(ValueError, match="shorter than a header"):
        Framer(max_length=11)
    with pytest.raises(ValueError, match="0x40"):
        Framer(0x40)


@given(st.binary(max_size=600), st.sampled_from([V20, V30]))
@settings(max_examples=500)
def test_fuzz_random_bytes(data: bytes, version: int) -> None:
    """Random bytes give messages and CmppProtocolErrors, nothing else; after a framing
    error every call raises again."""
    framer = Framer(version)
    framer.feed(data)
    outcomes = drain(framer)
    if outcomes and isinstance(outcomes[-1], CmppProtocolError) and outcomes[-1].close:
        with pytest.raises(CmppProtocolError):
            framer.next_pdu()


@given(st.lists(fuzz_frames(), max_size=8), st.sampled_from([V20, V30]))
@settings(max_examples=300)
def test_fuzz_stream_of_frames(frames: list[bytes], version: int) -> None:
    """A stream of well-framed messages with random bodies yields one outcome per frame
    (a message or a CmppProtocolError that keeps the connection), and nothing is left over."""
    framer = Framer(version)
    framer.feed(b"".join(frames))
    outcomes = drain(framer)
    assert len(outcomes) == len(frames)
    assert not any(isinstance(o, CmppProtocolError) and o.close for o in outcomes)
    assert framer.buffered == 0
