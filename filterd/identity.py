"""Consumer identity: HMAC-SHA256(secret, canonical address), truncated.

The registry and the audit log know a consumer only by this hash (SPEC §5).
Ten bytes (80 bits) keep a collision between two consumers out of reach even
at 250M consumers (~3e-8), while keeping each stored fact small.
"""

from __future__ import annotations

import hashlib

from filterd.model import Address

CONSUMER_ID_BYTES = 10
MIN_SECRET_BYTES = 32
_BLOCK = 64
"""SHA-256's block size: HMAC pads (or first hashes) the key to it."""


class ConsumerHasher:
    """Turns canonical addresses into consumer ids with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
        # HMAC (RFC 2104) with its two padded-key states hashed once: an id then costs
        # two state copies and two short updates (a /v1/check makes a thousand at once).
        block = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
        block = block.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def consumer_id(self, address: Address) -> bytes:
        """The 10-byte consumer id of `address`: HMAC-SHA256(secret, canonical text),
        truncated."""
        inner = self._inner.copy()
        inner.update(address.canonical.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:CONSUMER_ID_BYTES]


def consumer_hex(consumer_id: bytes) -> str:
    """The printable consumer hash used in the audit log and exports."""
    return consumer_id.hex()
