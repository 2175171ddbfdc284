"""The SMPP PDU header and command ids (filterd/smpp/header.py)."""

from __future__ import annotations

import pytest

from filterd.smpp.header import (
    BIND_RECEIVER,
    BIND_RECEIVER_RESP,
    BIND_TRANSCEIVER,
    BIND_TRANSCEIVER_RESP,
    BIND_TRANSMITTER,
    BIND_TRANSMITTER_RESP,
    DATA_SM,
    DATA_SM_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    GENERIC_NACK,
    HEADER,
    HEADER_LENGTH,
    INTERFACE_VERSION,
    OUTBIND,
    RESPONSE_BIT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    UNBIND,
    UNBIND_RESP,
)


def test_header_is_four_big_endian_words() -> None:
    """The header is command_length, command_id, command_status and sequence_number as
    four big-endian 32-bit words: 16 octets."""
    assert HEADER.size == HEADER_LENGTH == 16
    wire = HEADER.pack(16, ENQUIRE_LINK, 0, 5)
    assert wire == bytes.fromhex("00000010 00000015 00000000 00000005")
    assert HEADER.unpack(wire) == (16, ENQUIRE_LINK, 0, 5)


def test_command_ids() -> None:
    """The command ids have their SMPP 3.4 values; generic_nack is the response bit alone."""
    assert (BIND_RECEIVER, BIND_TRANSMITTER, SUBMIT_SM, DELIVER_SM, UNBIND) == (1, 2, 4, 5, 6)
    assert (BIND_TRANSCEIVER, OUTBIND, ENQUIRE_LINK, DATA_SM) == (0x09, 0x0B, 0x15, 0x103)
    assert GENERIC_NACK == RESPONSE_BIT == 0x80000000
    assert INTERFACE_VERSION == 0x34


@pytest.mark.parametrize(
    ("request_id", "response_id"),
    [
        (BIND_RECEIVER, BIND_RECEIVER_RESP),
        (BIND_TRANSMITTER, BIND_TRANSMITTER_RESP),
        (BIND_TRANSCEIVER, BIND_TRANSCEIVER_RESP),
        (UNBIND, UNBIND_RESP),
        (ENQUIRE_LINK, ENQUIRE_LINK_RESP),
        (SUBMIT_SM, SUBMIT_SM_RESP),
        (DELIVER_SM, DELIVER_SM_RESP),
        (DATA_SM, DATA_SM_RESP),
    ],
)
def test_a_response_id_is_its_request_id_with_the_response_bit(
    request_id: int, response_id: int
) -> None:
    """Each *_resp command id is its request's with the response bit (bit 31) set."""
    assert not request_id & RESPONSE_BIT
    assert response_id == request_id | RESPONSE_BIT
