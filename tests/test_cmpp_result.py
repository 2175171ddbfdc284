"""CMPP Status and Result values (filterd/cmpp/result.py)."""

from __future__ import annotations

from filterd.cmpp import result


def test_connect_status_values() -> None:
    """CONNECT_RESP Status: 0 accepted, 1 bad structure, 2 unknown Source_Addr, 3 bad
    authenticator, 4 version too high."""
    assert (
        result.CONNECT_OK,
        result.CONNECT_BAD_STRUCTURE,
        result.CONNECT_BAD_SOURCE_ADDR,
        result.CONNECT_BAD_AUTHENTICATOR,
        result.CONNECT_VERSION_TOO_HIGH,
    ) == (0, 1, 2, 3, 4)


def test_filterd_result_values() -> None:
    """filterd answers 64 all refused, 65 none permitted, 66 cancel text missing, 67
    signature missing, and 8 (the protocol's flow control) when the registry is unavailable;
    all fit the one-octet Result of CMPP 2.0 and stay clear of the protocol's 0-13."""
    ours = (
        result.ALL_REFUSED,
        result.NONE_PERMITTED,
        result.CANCEL_TEXT_MISSING,
        result.SIGNATURE_MISSING,
    )
    assert ours == (64, 65, 66, 67)
    assert result.REGISTRY_UNAVAILABLE == result.FLOW_CONTROL == 8
    protocol = range(result.OK, result.BAD_DEST_TERMINAL_ID + 1)
    assert not set(ours) & set(protocol)
    assert all(0 <= value <= 0xFF for value in ours)


def test_describe() -> None:
    """describe() names known Results for logs and says "error N" for the others."""
    assert result.describe(64) == "all destinations refused"
    assert result.describe(0) == "accepted"
    assert result.describe(200) == "error 200"
