"""The mandatory body fields of the SMPP PDUs (filterd/smpp/fields.py): their SMPP 3.4
sizes."""

from __future__ import annotations

from filterd.smpp.decode import decode
from filterd.smpp.encode import encode
from filterd.smpp.fields import (
    BIND_LAYOUT,
    BIND_RESP_LAYOUT,
    DATA_SM_LAYOUT,
    MAX_SHORT_MESSAGE,
    MESSAGE_ID_LAYOUT,
    SM_LAYOUT,
    CString,
    Field,
    ShortMessage,
)
from filterd.smpp.pdu import BindTransceiver, SubmitSm


def test_fields_at_their_maximum_are_accepted() -> None:
    """A field exactly at its SMPP maximum (20 digits + NUL for source_addr) is valid."""
    pdu = SubmitSm(sequence_number=1, source_addr="1" * 20, validity_period="240101120000000+")
    assert decode(encode(pdu)) == pdu
    bind = BindTransceiver(sequence_number=1, system_id="s" * 15, password="p" * 8)
    assert decode(encode(bind)) == bind


def test_layouts_have_the_smpp_sizes() -> None:
    """The C-Octet String maxima (NUL included) are SMPP 3.4's: addresses 21 octets in
    submit_sm / deliver_sm and 65 in data_sm, system_id 16, password 9, message_id 65;
    short_message carries at most 254 octets."""

    def sizes(layout: tuple[Field, ...]) -> dict[str, int]:
        return {f.name: f.size for f in layout if isinstance(f, CString)}

    assert sizes(SM_LAYOUT)["source_addr"] == sizes(SM_LAYOUT)["destination_addr"] == 21
    assert sizes(DATA_SM_LAYOUT)["source_addr"] == sizes(DATA_SM_LAYOUT)["destination_addr"] == 65
    assert (sizes(BIND_LAYOUT)["system_id"], sizes(BIND_LAYOUT)["password"]) == (16, 9)
    assert sizes(BIND_RESP_LAYOUT) == {"system_id": 16}
    assert sizes(MESSAGE_ID_LAYOUT) == {"message_id": 65}
    assert MAX_SHORT_MESSAGE == 254
    assert SM_LAYOUT[-1] == ShortMessage()
