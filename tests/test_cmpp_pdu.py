"""The CMPP messages as values (filterd/cmpp/pdu.py): layouts per version, defaults,
responses."""

from __future__ import annotations

import dataclasses

import pytest

from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import (
    NO_AUTHENTICATOR,
    ActiveTest,
    ActiveTestResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    pdu_class,
    response_class,
    response_to,
)


def names(cls: type[Submit] | type[Deliver], version: int) -> list[str]:
    """The names of a layout's fields in order (Reserve as "reserve")."""
    return [getattr(f, "name", "reserve") for f in cls.layout(version)]


def test_submit_layouts() -> None:
    """SUBMIT differs between versions: 3.0 adds Fee_terminal_type and Dest_terminal_type
    and ends with LinkID, 2.0 ends with Reserve; terminal ids are 21 vs 32 octets."""
    common = names(Submit, V20)
    assert common[-1] == "reserve"
    v30 = names(Submit, V30)
    assert v30[-1] == "link_id"
    assert [n for n in v30 if n not in common] == [
        "fee_terminal_type",
        "dest_terminal_type",
        "link_id",
    ]
    widths = {
        v: {f.name: f.size for f in Submit.layout(v) if hasattr(f, "name") and hasattr(f, "size")}
        for v in (V20, V30)
    }
    assert widths[V20]["dest_terminal_ids"] == widths[V20]["fee_terminal_id"] == 21
    assert widths[V30]["dest_terminal_ids"] == widths[V30]["fee_terminal_id"] == 32


def test_deliver_layouts() -> None:
    """DELIVER: 3.0 adds Src_terminal_type and LinkID; 2.0 has Reserve; Src_terminal_Id is
    21 vs 32 octets."""
    assert names(Deliver, V20)[-1] == "reserve"
    assert [n for n in names(Deliver, V30) if n not in names(Deliver, V20)] == [
        "src_terminal_type",
        "link_id",
    ]


def test_result_and_status_widths() -> None:
    """Result and Status take one octet in 2.0 and four in 3.0."""
    for cls, name in [(SubmitResp, "result"), (DeliverResp, "result"), (ConnectResp, "status")]:
        sizes = [
            next(f.size for f in cls.layout(v) if getattr(f, "name", "") == name)
            for v in (V20, V30)
        ]
        assert sizes == [1, 4]


def test_defaults() -> None:
    """A SUBMIT is one part by default with everything else empty; a refused CONNECT's
    AuthenticatorISMG is 16 NULs."""
    submit = Submit(1)
    assert (submit.pk_total, submit.pk_number, submit.dest_terminal_ids) == (1, 1, ())
    assert ConnectResp(1, status=3).authenticator_ismg == NO_AUTHENTICATOR == bytes(16)


def test_messages_are_frozen() -> None:
    """Messages are immutable values."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        ActiveTest(1).sequence_id = 2  # type: ignore[misc]
    assert Terminate(3) == Terminate(3) != TerminateResp(3)


def test_classes_by_command_id() -> None:
    """pdu_class finds each class by its command id; response_class the answer to a request."""
    assert pdu_class(0x4) is Submit
    assert pdu_class(0x80000005) is DeliverResp
    assert pdu_class(0x6) is None
    assert response_class(0x1) is ConnectResp
    assert response_class(0x80000001) is None
    assert response_class(0x6) is None
    assert Submit(1).is_response is False
    assert SubmitResp(1).is_response is True


def test_response_to() -> None:
    """response_to answers on the request's Sequence_Id; a DELIVER_RESP carries the
    DELIVER's Msg_Id; a response has no response."""
    assert response_to(Submit(5), msg_id=9, result=0) == SubmitResp(5, msg_id=9, result=0)
    assert response_to(Deliver(6, msg_id=77)) == DeliverResp(6, msg_id=77, result=0)
    assert response_to(Deliver(6, msg_id=77), result=8) == DeliverResp(6, msg_id=77, result=8)
    assert response_to(ActiveTest(7)) == ActiveTestResp(7)
    assert response_to(Connect(8, "901234", bytes(16), V30, 0), status=2) == ConnectResp(8, 2)
    with pytest.raises(ValueError, match="SubmitResp is a response"):
        response_to(SubmitResp(1))
