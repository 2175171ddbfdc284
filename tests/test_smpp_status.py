"""The SMPP command_status values (filterd/smpp/status.py)."""

from __future__ import annotations

from filterd.smpp.status import (
    ESME_RALYBND,
    ESME_RBINDFAIL,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVDCS,
    ESME_RINVDSTADR,
    ESME_RINVMSGLEN,
    ESME_RINVPASWD,
    ESME_RINVSRCADR,
    ESME_RINVSYSID,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    FILTERD_NO_CANCEL_METHOD,
    FILTERD_NO_CONSENT,
    FILTERD_NO_SIGNATURE,
    FILTERD_QUIET_HOURS,
    FILTERD_REFUSED,
)


def test_status_constants() -> None:
    """The statuses have their SMPP 3.4 values, and SPEC §4's refused / no consent values."""
    assert (ESME_ROK, ESME_RINVMSGLEN, ESME_RINVCMDLEN, ESME_RINVCMDID) == (0, 1, 2, 3)
    assert (ESME_RINVBNDSTS, ESME_RALYBND, ESME_RSYSERR) == (4, 5, 8)
    assert (ESME_RINVSRCADR, ESME_RINVDSTADR, ESME_RBINDFAIL) == (0x0A, 0x0B, 0x0D)
    assert (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RMSGQFUL) == (0x0E, 0x0F, 0x14)
    assert (ESME_RTHROTTLED, ESME_RINVDCS) == (0x58, 0x104)
    assert (FILTERD_REFUSED, FILTERD_NO_CONSENT) == (0x400, 0x401)


def test_compliance_statuses() -> None:
    """SPEC §7's statuses: no cancel method 0x402, no signature 0x403, quiet hours 0x404,
    each its own value in the vendor-specific range (0x400-0x4FF)."""
    assert (FILTERD_NO_CANCEL_METHOD, FILTERD_NO_SIGNATURE, FILTERD_QUIET_HOURS) == (
        0x402,
        0x403,
        0x404,
    )
