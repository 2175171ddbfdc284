"""CMPP status reports (filterd/cmpp/report.py): the 60- and 71-octet layouts written by
hand, round trips, wrong lengths, and the DELIVER that carries a report."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filterd.cmpp.decode import decode
from filterd.cmpp.encode import encode
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import Deliver
from filterd.cmpp.report import (
    DELIVERED,
    NO_CONSENT,
    REFUSED,
    ReportError,
    StatusReport,
    decode_report,
    encode_report,
    report_deliver,
    report_length,
    report_time,
)
from tests.cmpp_codec_helpers import (
    MSG_ID,
    MSG_ID_HEX,
    REPORT_30_CONTENT,
    U32,
    U64,
    pad,
    text,
    wire,
)

REPORT_30 = StatusReport(MSG_ID, DELIVERED, "2612071605", "2612071606", "8613800138000", 7)

REPORT_20_CONTENT = wire(
    MSG_ID_HEX,  # Msg_Id
    pad("REFUSED", 7),  # Stat
    pad("2612071605", 10),  # Submit_time
    pad("2612071605", 10),  # Done_time
    pad("13800138000", 21),  # Dest_terminal_Id (21 in 2.0)
    "00000000",  # SMSC_sequence
)
REPORT_20 = StatusReport(MSG_ID, REFUSED, "2612071605", "2612071605", "13800138000")


def test_lengths() -> None:
    """A status report is 60 octets in 2.0 and 71 in 3.0."""
    assert (report_length(V20), report_length(V30)) == (60, 71)
    assert (len(REPORT_20_CONTENT), len(REPORT_30_CONTENT)) == (60, 71)


@pytest.mark.parametrize(
    ("version", "content", "report"),
    [(V20, REPORT_20_CONTENT, REPORT_20), (V30, REPORT_30_CONTENT, REPORT_30)],
)
def test_hand_written_bytes(version: int, content: bytes, report: StatusReport) -> None:
    """The layouts written by hand decode to their values and encode back."""
    assert decode_report(content, version) == report
    assert encode_report(report, version) == content


@given(
    st.sampled_from([V20, V30]).flatmap(
        lambda v: st.tuples(
            st.just(v),
            st.builds(
                StatusReport, U64, text(7), text(10), text(10), text(21 if v == V20 else 32), U32
            ),
        )
    )
)
def test_round_trip(case: tuple[int, StatusReport]) -> None:
    """Any report that fits the layout decodes from its encoding to itself."""
    version, report = case
    assert decode_report(encode_report(report, version), version) == report


@pytest.mark.parametrize(("version", "length"), [(V20, 71), (V30, 60), (V30, 0), (V20, 59)])
def test_wrong_length(version: int, length: int) -> None:
    """Content of another length is not a report of that version: ReportError naming both
    lengths (a ValueError)."""
    with pytest.raises(ReportError, match=f"of {length} octets, not {report_length(version)}"):
        decode_report(bytes(length), version)
    assert issubclass(ReportError, ValueError)


def test_field_that_does_not_fit() -> None:
    """A 3.0 destination does not fit a 2.0 report: ValueError naming the field."""
    with pytest.raises(ValueError, match="dest_terminal_id"):
        encode_report(StatusReport(1, NO_CONSENT, "", "", "8" * 22), V20)


def test_report_deliver() -> None:
    """report_deliver builds the DELIVER that carries a report to the SP: Registered_Delivery
    1, the reported destination as Src_terminal_Id, the SP's Src_Id as Dest_Id; on the wire
    it reads back as the same report."""
    deliver = report_deliver(
        REPORT_30, V30, sequence_id=8, msg_id=99, dest_id="10690001", service_id="MI"
    )
    received = decode(encode(deliver, V30), V30)
    assert isinstance(received, Deliver)
    assert (received.registered_delivery, received.src_terminal_id) == (1, "8613800138000")
    assert (received.dest_id, received.msg_id) == ("10690001", 99)
    assert decode_report(received.msg_content, V30) == REPORT_30


def test_report_time() -> None:
    """Submit_time and Done_time are YYMMDDHHMM."""
    assert report_time(datetime(2026, 12, 7, 16, 5, 59)) == "2612071605"


@given(st.binary(max_size=80), st.sampled_from([V20, V30]))
def test_any_content_gives_a_report_or_report_error(content: bytes, version: int) -> None:
    """Whatever a DELIVER carries, decode_report returns a report or raises ReportError."""
    try:
        report = decode_report(content, version)
    except ReportError:
        return
    assert len(content) == report_length(version)
    assert decode_report(encode_report(report, version), version) == report
