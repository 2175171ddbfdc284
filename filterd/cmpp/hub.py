"""The CMPP relay's deliveries on the hub between its processes (`cmpp.workers > 1`,
see `filterd.hub`): a CMPP_DELIVER travels as a whole message in the 3.0 layout,
which holds every field of both versions (a status report's content is carried
as it is)."""

from __future__ import annotations

from filterd.cmpp.decode import CmppProtocolError, decode
from filterd.cmpp.encode import encode
from filterd.cmpp.header import MAX_LENGTH, V30
from filterd.cmpp.pdu import Deliver
from filterd.hub import HubProtocolError


class CmppWire:
    """CMPP_DELIVER as 3.0 messages on the hub."""

    name = "cmpp"
    max_length = MAX_LENGTH

    def encode(self, delivery: Deliver) -> bytes:
        """The message's bytes (3.0 layout)."""
        return encode(delivery, V30)

    def decode(self, data: bytes) -> Deliver:
        """One whole message; HubProtocolError unless it is a valid CMPP_DELIVER."""
        try:
            pdu = decode(data, V30)
        except CmppProtocolError as exc:
            raise HubProtocolError(f"DELIVER with a bad message: {exc.reason}") from None
        if not isinstance(pdu, Deliver):
            raise HubProtocolError(f"DELIVER with a {type(pdu).__name__}")
        return pdu

    def is_receipt(self, delivery: Deliver) -> bool:
        """True for a status report (Registered_Delivery = 1)."""
        return delivery.registered_delivery == 1


CMPP_WIRE = CmppWire()
