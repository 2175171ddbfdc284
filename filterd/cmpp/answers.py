"""What the CMPP server answers, as pure functions: the Status of a CONNECT, the Result
of a submit from its destinations' decisions, the status report on a destination
filterd removed, and a report rewritten in a session's own version.

- `connect_answer(connect, account)`: Status 2 (no such sp_id), 3 (the
  AuthenticatorSource was not made with the account's secret), 4 (Version above
  0x30), 5 (Version below 0x20), else 0 with AuthenticatorISMG = MD5(Status,
  AuthenticatorSource, secret). 0x30 is served as 3.0, 0x20-0x2F as 2.0; a refusal
  is written in the layout of the version asked for (3.0 when it is not served).
- `refusal(decisions)`: a deferral of any destination (registry down, quiet hours)
  defers the whole submit (8); some destination permitted: None (forward it); else
  the text rules first (67 signature, 66 cancel text, as `filterd.cmpp.result`
  names them), every destination refused 64, otherwise 65.
- `removed_report(...)`: the CMPP_DELIVER carrying Stat REFUSED or NOCONST for a
  destination removed from a forwarded submit, with filterd's Msg_Id of that submit.
- `in_layout(deliver, version)`: a status report in the other version's layout
  (71 vs 60 octets) rewritten in `version`'s; anything else as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from filterd.cmpp.auth import authenticator_ismg, connect_is_authentic
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import Connect, ConnectResp, Deliver, Submit
from filterd.cmpp.report import (
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
from filterd.cmpp.result import (
    ALL_REFUSED,
    CANCEL_TEXT_MISSING,
    CONNECT_BAD_AUTHENTICATOR,
    CONNECT_BAD_SOURCE_ADDR,
    CONNECT_OK,
    CONNECT_OTHER_ERROR,
    CONNECT_VERSION_TOO_HIGH,
    FLOW_CONTROL,
    NONE_PERMITTED,
    SIGNATURE_MISSING,
)
from filterd.model import Action, Decision, Reason
from filterd.settings import CmppAccount

TEXT_RESULT = {Reason.NO_SIGNATURE: SIGNATURE_MISSING, Reason.NO_CANCEL_METHOD: CANCEL_TEXT_MISSING}
"""The Result of a message refused by a text rule."""
STAT = {Reason.REFUSED: REFUSED, Reason.NO_CONSENT: NO_CONSENT}
"""The Stat of the status report on a destination removed for a reason."""


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    """The answer to a CONNECT and what follows from it."""

    answer: ConnectResp
    layout: int
    """The version whose layout the answer is written in."""
    failed_login: bool
    """A wrong sp_id or authenticator (counts in the login back-off)."""
    reason: str | None = None
    """Why it was refused, for the log; None: accepted (the session speaks `layout`)."""


def session_version(requested: int) -> int | None:
    """The version a session speaks for the Version of its CONNECT; None when not served."""
    if requested == V30:
        return V30
    if V20 <= requested < V30:
        return V20
    return None


def connect_answer(connect: Connect, account: CmppAccount | None) -> ConnectAnswer:
    """The answer to `connect`, made by the account with its Source_Addr (None: none)."""
    version = session_version(connect.version)
    layout = V20 if version == V20 else V30
    seq = connect.sequence_id
    if account is None or not connect_is_authentic(connect, account.shared_secret):
        status = CONNECT_BAD_SOURCE_ADDR if account is None else CONNECT_BAD_AUTHENTICATOR
        reason = "unknown sp_id" if account is None else "wrong authenticator"
        return ConnectAnswer(ConnectResp(seq, status, version=layout), layout, True, reason)
    if version is None:
        status = CONNECT_VERSION_TOO_HIGH if connect.version > V30 else CONNECT_OTHER_ERROR
        reason = f"version {connect.version:#04x}"
        return ConnectAnswer(ConnectResp(seq, status, version=V30), V30, False, reason)
    source, secret = connect.authenticator_source, account.shared_secret
    ismg = authenticator_ismg(CONNECT_OK, source, secret, version)
    return ConnectAnswer(ConnectResp(seq, CONNECT_OK, ismg, version), version, False)


def refusal(decisions: Sequence[Decision]) -> int | None:
    """The Result of a submit none of whose destinations may be sent to now; None when it
    is forwarded (some are permitted and none deferred)."""
    if any(d.action is Action.DEFER for d in decisions):
        return FLOW_CONTROL
    if any(d.action is Action.DELIVER for d in decisions):
        return None
    reasons = {d.reason for d in decisions}
    for reason, result in TEXT_RESULT.items():
        if reason in reasons:
            return result
    return ALL_REFUSED if reasons == {Reason.REFUSED} else NONE_PERMITTED


def removed_report(
    pdu: Submit,
    msg_id: int,
    destination: str,
    stat: str,
    version: int,
    *,
    sequence_id: int,
    deliver_msg_id: int,
    now: datetime,
) -> Deliver:
    """The status report (Stat REFUSED / NOCONST) on `destination`, removed from `pdu`,
    which the client knows by filterd's `msg_id`: to the submit's Src_Id, in `version`."""
    stamp = report_time(now)
    report = StatusReport(msg_id, stat, stamp, stamp, destination)
    return report_deliver(
        report,
        version,
        sequence_id=sequence_id,
        msg_id=deliver_msg_id,
        dest_id=pdu.src_id,
        service_id=pdu.service_id,
    )


def in_layout(deliver: Deliver, version: int) -> Deliver:
    """A status report in the other version's layout, rewritten in `version`'s."""
    other = V20 if version == V30 else V30
    if deliver.registered_delivery != 1 or len(deliver.msg_content) != report_length(other):
        return deliver
    try:
        report = decode_report(deliver.msg_content, other)
        return dataclasses.replace(deliver, msg_content=encode_report(report, version))
    except (ReportError, ValueError):
        return deliver
