"""CMPP login authenticators and the CONNECT Timestamp (pure).

- AuthenticatorSource = MD5(Source_Addr ‖ 9 NUL octets ‖ shared secret ‖ Timestamp),
  the Timestamp written as 10 digits MMDDHHMMSS (leading zeros kept).
- AuthenticatorISMG = MD5(Status ‖ AuthenticatorSource ‖ shared secret), Status
  as on the wire: one octet in CMPP 2.0, four (big-endian) in 3.0.

Source_Addr is taken as its Latin-1 octets (as the codec reads it) and the
secret as UTF-8. Comparisons run in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from filterd.cmpp.header import V20, check_version
from filterd.cmpp.pdu import Connect

AUTHENTICATOR_LENGTH = 16


def timestamp_of(moment: datetime) -> int:
    """The CONNECT Timestamp of `moment`: MMDDHHMMSS as a number (0107120000 is 107120000)."""
    return int(moment.strftime("%m%d%H%M%S"))


def timestamp_text(timestamp: int) -> str:
    """The 10 digits MMDDHHMMSS that enter the authenticator; ValueError outside 4 octets."""
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {timestamp} does not fit 4 octets")
    return f"{timestamp:010d}"


def authenticator_source(source_addr: str, secret: str, timestamp: int) -> bytes:
    """The AuthenticatorSource an SP sends in its CONNECT."""
    data = (
        source_addr.encode("latin-1")
        + bytes(9)
        + secret.encode("utf-8")
        + timestamp_text(timestamp).encode("ascii")
    )
    return hashlib.md5(data, usedforsecurity=False).digest()


def authenticator_ismg(status: int, source: bytes, secret: str, version: int) -> bytes:
    """The AuthenticatorISMG answering a CONNECT whose AuthenticatorSource was `source`."""
    check_version(version)
    width = 1 if version == V20 else 4
    data = status.to_bytes(width, "big") + source + secret.encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).digest()


def connect_is_authentic(connect: Connect, secret: str) -> bool:
    """True when `connect`'s AuthenticatorSource was made with `secret` (constant time)."""
    expected = authenticator_source(connect.source_addr, secret, connect.timestamp)
    return hmac.compare_digest(expected, connect.authenticator_source)


def ismg_is_authentic(
    authenticator: bytes, status: int, source: bytes, secret: str, version: int
) -> bool:
    """True when a CONNECT_RESP's AuthenticatorISMG matches (an SP checking its ISMG)."""
    return hmac.compare_digest(authenticator_ismg(status, source, secret, version), authenticator)


def connect_for(
    sequence_id: int, source_addr: str, secret: str, moment: datetime, version: int
) -> Connect:
    """A CONNECT for `source_addr` logging in with `secret` at `moment` in `version`."""
    check_version(version)
    timestamp = timestamp_of(moment)
    return Connect(
        sequence_id,
        source_addr=source_addr,
        authenticator_source=authenticator_source(source_addr, secret, timestamp),
        version=version,
        timestamp=timestamp,
    )
