"""CMPP status reports: the Msg_Content of a CMPP_DELIVER with Registered_Delivery = 1 (pure).

Layout: Msg_Id (8 octets, the Msg_Id of the SUBMIT_RESP it reports on), Stat
(7), Submit_time (10, YYMMDDHHMM), Done_time (10), Dest_terminal_Id (21 octets
in CMPP 2.0, 32 in 3.0) and SMSC_sequence (4): 60 octets in 2.0, 71 in 3.0.
Strings are NUL-padded and read up to their first NUL, as in the messages.

Stat is free text of up to 7 characters; the common values are below, with
filterd's two for destinations it removed from a SUBMIT: REFUSED (the recipient
refused commercial messages) and NOCONST (no consent on record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from filterd.cmpp.encode import fixed_text, fixed_uint
from filterd.cmpp.header import V20, check_version
from filterd.cmpp.pdu import Deliver
from filterd.errors import FilterdError

DELIVERED = "DELIVRD"
EXPIRED = "EXPIRED"
DELETED = "DELETED"
UNDELIVERABLE = "UNDELIV"
ACCEPTED = "ACCEPTD"
UNKNOWN = "UNKNOWN"
REJECTED = "REJECTD"
REFUSED = "REFUSED"
"""filterd: the destination has refused commercial messages; the message was not sent there."""
NO_CONSENT = "NOCONST"
"""filterd: no consent on record for the destination; the message was not sent there."""

_FIXED = (("stat", 7), ("submit_time", 10), ("done_time", 10))


class ReportError(FilterdError, ValueError):
    """A status report whose content does not match its layout (the reason in the message)."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One status report: which message, what happened to it, and when."""

    msg_id: int
    stat: str
    submit_time: str
    done_time: str
    dest_terminal_id: str
    smsc_sequence: int = 0


def report_length(version: int) -> int:
    """The octets of a status report in `version`: 60 (2.0) or 71 (3.0)."""
    return 8 + 7 + 10 + 10 + _terminal_width(version) + 4


def report_time(moment: datetime) -> str:
    """Submit_time / Done_time of `moment`: YYMMDDHHMM."""
    return moment.strftime("%y%m%d%H%M")


def encode_report(report: StatusReport, version: int) -> bytes:
    """The Msg_Content carrying `report`; ValueError for a field that does not fit."""
    out = bytearray(fixed_uint("msg_id", report.msg_id, 8))
    for name, size in _FIXED:
        out += fixed_text(name, getattr(report, name), size)
    out += fixed_text("dest_terminal_id", report.dest_terminal_id, _terminal_width(version))
    out += fixed_uint("smsc_sequence", report.smsc_sequence, 4)
    return bytes(out)


def decode_report(content: bytes, version: int) -> StatusReport:
    """The status report in a DELIVER's Msg_Content.

    ReportError unless the content has the length of `version`'s layout.
    """
    width = _terminal_width(version)
    if len(content) != report_length(version):
        raise ReportError(
            f"status report of {len(content)} octets, not {report_length(version)}"
            f" (CMPP {version >> 4}.0)"
        )
    values: dict[str, str] = {}
    pos = 8
    for name, size in (*_FIXED, ("dest_terminal_id", width)):
        values[name] = content[pos : pos + size].split(b"\x00", 1)[0].decode("latin-1")
        pos += size
    return StatusReport(
        msg_id=int.from_bytes(content[:8], "big"),
        smsc_sequence=int.from_bytes(content[pos:], "big"),
        **values,
    )


def report_deliver(
    report: StatusReport,
    version: int,
    *,
    sequence_id: int,
    msg_id: int,
    dest_id: str,
    service_id: str = "",
) -> Deliver:
    """The DELIVER carrying `report` to the SP whose Src_Id was `dest_id`.

    `msg_id` is the DELIVER's own Msg_Id (the report's is `report.msg_id`);
    Src_terminal_Id is the reported destination.
    """
    return Deliver(
        sequence_id,
        msg_id=msg_id,
        dest_id=dest_id,
        service_id=service_id,
        src_terminal_id=report.dest_terminal_id,
        registered_delivery=1,
        msg_content=encode_report(report, version),
    )


def _terminal_width(version: int) -> int:
    """Dest_terminal_Id's octets in `version`."""
    check_version(version)
    return 21 if version == V20 else 32
