"""CMPP login authenticators (filterd/cmpp/auth.py): the MD5 inputs laid out by hand, the
Status width per version, the Timestamp, and checks in both directions."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest

from filterd.cmpp.auth import (
    authenticator_ismg,
    authenticator_source,
    connect_for,
    connect_is_authentic,
    ismg_is_authentic,
    timestamp_of,
    timestamp_text,
)
from filterd.cmpp.decode import decode
from filterd.cmpp.encode import encode
from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import Connect


def md5(data: bytes) -> bytes:
    """The MD5 digest of `data`."""
    return hashlib.md5(data, usedforsecurity=False).digest()


def test_authenticator_source_input() -> None:
    """AuthenticatorSource is MD5 of Source_Addr, nine NULs, the secret and the Timestamp
    as 10 digits (a January timestamp keeps its leading zero)."""
    expected = md5(b"901234" + bytes(9) + b"s3cret" + b"0107090503")
    assert authenticator_source("901234", "s3cret", 107090503) == expected


def test_authenticator_ismg_status_width() -> None:
    """AuthenticatorISMG is MD5 of Status, AuthenticatorSource and the secret, with Status
    in one octet in 2.0 and four in 3.0 (so the two differ)."""
    source = authenticator_source("901234", "s3cret", 1207160101)
    v20 = authenticator_ismg(0, source, "s3cret", V20)
    v30 = authenticator_ismg(0, source, "s3cret", V30)
    assert v20 == md5(b"\x00" + source + b"s3cret")
    assert v30 == md5(b"\x00\x00\x00\x00" + source + b"s3cret")
    assert v20 != v30
    assert ismg_is_authentic(v30, 0, source, "s3cret", V30)
    assert not ismg_is_authentic(v30, 0, source, "s3cret", V20)
    assert not ismg_is_authentic(v30, 1, source, "s3cret", V30)


def test_secret_is_utf8() -> None:
    """A secret outside ASCII enters the digest as UTF-8."""
    expected = md5(b"901234" + bytes(9) + "密钥".encode() + b"1207160101")
    assert authenticator_source("901234", "密钥", 1207160101) == expected


def test_timestamp() -> None:
    """The Timestamp is MMDDHHMMSS as a number; its text keeps 10 digits."""
    assert timestamp_of(datetime(2026, 1, 7, 9, 5, 3)) == 107090503
    assert timestamp_of(datetime(2026, 12, 31, 23, 59, 59)) == 1231235959
    assert timestamp_text(107090503) == "0107090503"
    with pytest.raises(ValueError, match="does not fit 4 octets"):
        timestamp_text(1 << 32)


def test_connect_for_round_trips_and_checks() -> None:
    """connect_for builds a CONNECT that survives the wire and checks out with the secret
    only."""
    connect = connect_for(3, "900001", "chg-me", datetime(2026, 12, 7, 16, 1, 1), V20)
    assert (connect.version, connect.timestamp) == (V20, 1207160101)
    received = decode(encode(connect, V20), V20)
    assert isinstance(received, Connect)
    assert connect_is_authentic(received, "chg-me")
    assert not connect_is_authentic(received, "chg-me ")
    tampered = Connect(3, "900002", received.authenticator_source, V20, received.timestamp)
    assert not connect_is_authentic(tampered, "chg-me")
    later = Connect(3, "900001", received.authenticator_source, V20, received.timestamp + 1)
    assert not connect_is_authentic(later, "chg-me")


def test_unknown_version() -> None:
    """The ISMG authenticator needs a known version (the Status width depends on it)."""
    with pytest.raises(ValueError, match="0x21"):
        authenticator_ismg(0, bytes(16), "s", 0x21)
