"""The SMPP relay's deliveries on the hub between its processes (`smpp.workers > 1`,
see `filterd.hub`): a deliver_sm or data_sm travels as its whole PDU, header
included."""

from __future__ import annotations

from filterd.hub import HubProtocolError
from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.framer import MAX_PDU_LENGTH
from filterd.smpp.pdu import DataSm, DeliverSm
from filterd.smpp.receipt import is_receipt

SmppDelivery = DeliverSm | DataSm


class SmppWire:
    """deliver_sm / data_sm as PDUs on the hub."""

    name = "smpp"
    max_length = MAX_PDU_LENGTH

    def encode(self, delivery: SmppDelivery) -> bytes:
        """The PDU's bytes."""
        return encode(delivery)

    def decode(self, data: bytes) -> SmppDelivery:
        """One whole PDU; HubProtocolError unless it is a valid deliver_sm or data_sm."""
        try:
            pdu = decode(data)
        except SmppProtocolError as exc:
            raise HubProtocolError(f"DELIVER with a bad PDU: {exc.reason}") from None
        if not isinstance(pdu, DeliverSm | DataSm):
            raise HubProtocolError(f"DELIVER with a {type(pdu).__name__}")
        return pdu

    def is_receipt(self, delivery: SmppDelivery) -> bool:
        """True for a delivery receipt."""
        return is_receipt(delivery)


SMPP_WIRE = SmppWire()
