"""What the CMPP server answers (filterd/cmpp/answers.py, pure): the Status of a CONNECT
and the version a session speaks, the Result of a submit from its decisions, the
status report on a removed destination, a report rewritten in a session's layout."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from filterd.cmpp.answers import (
    connect_answer,
    in_layout,
    refusal,
    removed_report,
    session_version,
)
from filterd.cmpp.auth import authenticator_source
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import Connect, Submit
from filterd.cmpp.report import StatusReport, decode_report, encode_report, report_deliver
from filterd.cmpp.result import (
    ALL_REFUSED,
    CANCEL_TEXT_MISSING,
    FLOW_CONTROL,
    NONE_PERMITTED,
    SIGNATURE_MISSING,
)
from filterd.model import Action, Decision, MessageClass, Reason
from filterd.settings import CmppAccount

ACCOUNT = CmppAccount("900001", "chg-me", "acme", MessageClass.COMMERCIAL)
STAMP = 1207101500


def connect(secret: str = "chg-me", version: int = V30, sp_id: str = "900001") -> Connect:  # noqa: S107
    """A CONNECT from `sp_id` made with `secret`, asking for `version`."""
    return Connect(7, sp_id, authenticator_source(sp_id, secret, STAMP), version, STAMP)


def test_session_versions() -> None:
    """0x30 speaks 3.0, 0x20 to 0x2F speak 2.0; above 0x30 and below 0x20 are not served."""
    assert [session_version(v) for v in (0x30, 0x20, 0x21, 0x2F, 0x31, 0x10)] == [
        V30, V20, V20, V20, None, None,
    ]  # fmt: skip


@pytest.mark.parametrize("version", [V20, V30])
def test_accepted_connect(version: int) -> None:
    """The right secret: Status 0 in the version asked for, AuthenticatorISMG =
    MD5(Status as on the wire, AuthenticatorSource, secret); not a failed login."""
    request = connect(version=version)
    judged = connect_answer(request, ACCOUNT)
    status = bytes(1 if version == V20 else 4)
    expected = hashlib.md5(
        status + request.authenticator_source + b"chg-me", usedforsecurity=False
    ).digest()
    assert (judged.answer.status, judged.answer.version, judged.layout) == (0, version, version)
    assert judged.answer.authenticator_ismg == expected
    assert (judged.failed_login, judged.reason) == (False, None)


def test_refused_connects() -> None:
    """No such account: Status 2; a wrong secret: 3 (both failed logins, in the layout
    asked for); a right login above 0x30: 4, below 0x20: 5 (not failed logins, 3.0
    layout); a refusal carries an empty AuthenticatorISMG."""
    unknown = connect_answer(connect(sp_id="900009"), None)
    wrong = connect_answer(connect("guess", V20), ACCOUNT)
    high = connect_answer(connect(version=0x31), ACCOUNT)
    low = connect_answer(connect(version=0x10), ACCOUNT)
    answers = [(j.answer.status, j.layout, j.failed_login) for j in (unknown, wrong, high, low)]
    assert answers == [(2, V30, True), (3, V20, True), (4, V30, False), (5, V30, False)]
    assert {j.answer.authenticator_ismg for j in (unknown, wrong, high, low)} == {bytes(16)}
    assert all(j.reason for j in (unknown, wrong, high, low))


def test_refusal_table() -> None:
    """The Result of a submit from its decisions: a deferral defers all; any delivery
    forwards; else text rules first, all refused 64, otherwise 65."""
    deliver = Decision(Action.DELIVER, None)
    refused = Decision(Action.DROP, Reason.REFUSED)
    none = Decision(Action.DROP, Reason.NO_CONSENT)
    defer = Decision(Action.DEFER, Reason.QUIET_HOURS)
    unsigned = Decision(Action.DROP, Reason.NO_SIGNATURE)
    uncancellable = Decision(Action.DROP, Reason.NO_CANCEL_METHOD)
    assert refusal([deliver, refused]) is None
    assert refusal([deliver, defer]) == FLOW_CONTROL
    assert refusal([Decision(Action.DEFER, Reason.REGISTRY_UNAVAILABLE)]) == FLOW_CONTROL
    assert refusal([refused, refused]) == ALL_REFUSED
    assert refusal([refused, none]) == NONE_PERMITTED
    assert refusal([none]) == NONE_PERMITTED
    assert refusal([refused, unsigned]) == SIGNATURE_MISSING
    assert refusal([uncancellable, none]) == CANCEL_TEXT_MISSING


@pytest.mark.parametrize("version", [V20, V30])
def test_removed_report(version: int) -> None:
    """The report on a removed destination: a DELIVER to the submit's Src_Id with its
    Service_Id, Registered_Delivery 1, the destination as Src_terminal_Id, and a report
    of filterd's Msg_Id, the Stat and the times of `now` in the version's layout."""
    submit = Submit(3, service_id="MKT", src_id="10690001", dest_terminal_ids=("13800138001",))
    now = datetime(2026, 12, 7, 10, 15)
    deliver = removed_report(submit, 42, "13800138001", "REFUSED", version,
                             sequence_id=5, deliver_msg_id=99, now=now)  # fmt: skip
    assert (deliver.sequence_id, deliver.msg_id, deliver.dest_id) == (5, 99, "10690001")
    assert (deliver.service_id, deliver.registered_delivery) == ("MKT", 1)
    assert deliver.src_terminal_id == "13800138001"
    report = decode_report(deliver.msg_content, version)
    assert report == StatusReport(42, "REFUSED", "2612071015", "2612071015", "13800138001", 0)


def test_in_layout() -> None:
    """A report in the other version's layout is rewritten in the session's; a report
    already in it, and an MO, are left as they are."""
    report = StatusReport(77, "DELIVRD", "2612071000", "2612071001", "13800138000", 5)
    in_30 = report_deliver(report, V30, sequence_id=1, msg_id=2, dest_id="10690001")
    rewritten = in_layout(in_30, V20)
    assert rewritten.msg_content == encode_report(report, V20)
    assert in_layout(in_30, V30) is in_30
    mo = in_30.__class__(1, msg_content=bytes(60), registered_delivery=0)
    assert in_layout(mo, V30) is mo
