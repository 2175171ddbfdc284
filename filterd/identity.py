"""Consumer identity: HMAC-SHA256(secret, canonical address), truncated.

The registry and the audit log know a consumer only by this hash (SPEC §5).
Ten bytes (80 bits) keep a collision between two consumers out of reach even
at 250M consumers (~3e-8), while keeping each stored fact small.
"""

from __future__ import annotations

import hashlib
import hmac

from filterd.model import Address

CONSUMER_ID_BYTES = 10
MIN_SECRET_BYTES = 32


class ConsumerHasher:
    """Turns canonical addresses into consumer ids with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
        self._base = hmac.new(secret, digestmod=hashlib.sha256)

    def consumer_id(self, address: Address) -> bytes:
        """The 10-byte consumer id of `address`."""
        mac = self._base.copy()
        mac.update(address.canonical.encode())
        return mac.digest()[:CONSUMER_ID_BYTES]


def consumer_hex(consumer_id: bytes) -> str:
    """The printable consumer hash used in the audit log and exports."""
    return consumer_id.hex()
