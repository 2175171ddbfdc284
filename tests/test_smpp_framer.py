"""Framing an SMPP byte stream (filterd/smpp/framer.py): PDUs cut by command_length
across any chunking, bad lengths that close the connection, and the fuzz invariant."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.smpp.decode import SmppProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import AnyPdu, BindTransmitter, DataSm, EnquireLink, GenericNack
from filterd.smpp.status import ESME_RINVCMDLEN
from tests.smpp_codec_helpers import (
    ANY_PDU,
    BIND_TRANSMITTER_HEX,
    KNOWN_IDS,
    U32,
    check_outcomes,
    frame,
    fuzz_frames,
)

# -- framing ---------------------------------------------------------------------------


@given(st.lists(ANY_PDU, max_size=6), st.data())
@settings(max_examples=150)
def test_framing_across_arbitrary_chunks(pdus: list[AnyPdu], data: st.DataObject) -> None:
    """Splitting the byte stream anywhere gives the same PDUs, in order, nothing left over."""
    stream = b"".join(encode(p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = Framer()
    out: list[AnyPdu] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        framer.feed(stream[start:end])
        out.extend(framer)
    assert out == pdus
    assert framer.buffered == 0
    assert framer.next_pdu() is None


def test_framer_byte_by_byte() -> None:
    """Fed one byte at a time, the framer returns each PDU exactly when its last byte arrives."""
    wire = bytes.fromhex(BIND_TRANSMITTER_HEX) + encode(EnquireLink(sequence_number=2))
    framer = Framer()
    seen = []
    for i, byte in enumerate(wire):
        framer.feed(bytes([byte]))
        pdu = framer.next_pdu()
        if pdu is not None:
            seen.append((i, type(pdu)))
    assert seen == [(35, BindTransmitter), (51, EnquireLink)]


@pytest.mark.parametrize("length", [0, 1, 15])
def test_command_length_below_header(length: int) -> None:
    """command_length < 16: ESME_RINVCMDLEN, close the connection, answer generic_nack."""
    framer = Framer()
    framer.feed(struct.pack(">IIII", length, 0x00000004, 0, 77))
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    error = caught.value
    assert (error.status, error.close, error.sequence_number) == (ESME_RINVCMDLEN, True, 77)
    assert error.reply() == GenericNack(command_status=ESME_RINVCMDLEN, sequence_number=77)


def test_command_length_over_maximum() -> None:
    """command_length over the maximum (64 KiB by default) is refused before any body is read."""
    framer = Framer()
    framer.feed(struct.pack(">IIII", 64 * 1024 + 1, 0x00000004, 0, 3))
    with pytest.raises(SmppProtocolError, match="command_length 65537") as caught:
        framer.next_pdu()
    assert (caught.value.status, caught.value.close) == (ESME_RINVCMDLEN, True)
    small = Framer(max_length=32)
    small.feed(frame(0x00000015, bytes(17)))
    with pytest.raises(SmppProtocolError):
        small.next_pdu()


def test_command_length_at_maximum_is_accepted() -> None:
    """A PDU exactly at the maximum length is framed (and decoded)."""
    pdu = DataSm(sequence_number=1, tlvs=((0x0424, bytes(64 * 1024 - 16 - 10 - 4)),))
    wire = encode(pdu)
    assert len(wire) == 64 * 1024
    framer = Framer()
    framer.feed(wire)
    assert framer.next_pdu() == pdu


def test_broken_framer_stays_broken() -> None:
    """After a bad command_length every call raises again, even when more bytes arrive."""
    framer = Framer()
    framer.feed(b"\x00\x00\x00\x05" + bytes(12))
    for _ in range(3):
        with pytest.raises(SmppProtocolError) as caught:
            framer.next_pdu()
        assert caught.value.close
        framer.feed(encode(EnquireLink(sequence_number=1)))


def test_bad_length_waits_for_the_whole_header() -> None:
    """A bad command_length is reported once 16 bytes are buffered (so the error has the seq)."""
    framer = Framer()
    framer.feed(b"\x00\x00\x00\x02")
    assert framer.next_pdu() is None
    framer.feed(struct.pack(">III", 0x15, 0, 42))
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    assert (caught.value.sequence_number, caught.value.command_id) == (42, 0x15)


def test_framer_goes_on_after_a_malformed_body() -> None:
    """A malformed body (close=False) consumes that PDU; the next one is decoded normally."""
    bad = frame(0x00000004, b"\x00\x00\x00" + b"1" * 30, seq=10)
    good = encode(EnquireLink(sequence_number=11))
    framer = Framer()
    framer.feed(bad + good)
    with pytest.raises(SmppProtocolError) as caught:
        framer.next_pdu()
    assert not caught.value.close
    assert framer.next_pdu() == EnquireLink(sequence_number=11)


def test_framer_rejects_a_tiny_maximum() -> None:
    """A maximum shorter than the 16-byte header is a programming error."""
    with pytest.raises(ValueError, match="shorter than a header"):
        Framer(max_length=15)


# -- the fuzz invariant ----------------------------------------------------------------


def drain(framer: Framer) -> list[AnyPdu | SmppProtocolError]:
    """Every outcome of a framer until it needs more bytes or must close."""
    outcomes: list[AnyPdu | SmppProtocolError] = []
    while True:
        try:
            pdu = framer.next_pdu()
        except SmppProtocolError as error:
            outcomes.append(error)
            if error.close:
                return outcomes
            continue
        if pdu is None:
            return outcomes
        outcomes.append(pdu)


@given(st.binary(max_size=300))
@settings(max_examples=600)
def test_fuzz_random_bytes(data: bytes) -> None:
    """Random bytes into a Framer: decoded PDUs, UnknownPdus or SmppProtocolError, nothing else."""
    framer = Framer(max_length=4096)
    framer.feed(data)
    check_outcomes(drain(framer))


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(KNOWN_IDS), 0x0B, 0x03, 0x80000103]),
            U32,
            st.binary(max_size=80),
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=600)
def test_fuzz_valid_headers_random_bodies(pdus: list[tuple[int, int, bytes]]) -> None:
    """Well-framed PDUs with random bodies: each is decoded or raises an error naming its seq."""
    framer = Framer()
    framer.feed(b"".join(frame(cid, body, seq) for cid, seq, body in pdus))
    outcomes = drain(framer)
    check_outcomes(outcomes)
    assert len(outcomes) == len(pdus)
    for (cid, seq, _), outcome in zip(pdus, outcomes, strict=True):
        assert outcome.sequence_number == seq
        if isinstance(outcome, SmppProtocolError):
            assert (outcome.command_id, outcome.close) == (cid, False)


@given(st.lists(st.one_of(st.binary(max_size=60), fuzz_frames()), max_size=6))
@settings(max_examples=300)
def test_fuzz_framer_stream_of_frames(chunks: list[bytes]) -> None:
    """A stream of random and plausible frames fed in pieces: PDUs or SmppProtocolError
    only, and once the framing is lost (close=True) every later call raises again."""
    framer = Framer(max_length=4096)
    outcomes: list[AnyPdu | SmppProtocolError] = []
    for chunk in chunks:
        framer.feed(chunk)
        outcomes += drain(framer)
    check_outcomes(outcomes)
    if any(isinstance(o, SmppProtocolError) and o.close for o in outcomes):
        with pytest.raises(SmppProtocolError):
            framer.next_pdu()
