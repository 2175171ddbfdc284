"""The SMPP 3.4 relay (see each module's docstring).

The sans-IO codec (pure):
status.py        command_status values (SMPP's and filterd's 0x400 / 0x401)
header.py        the PDU header and the command ids
tlv.py           optional parameters: tags, message_state values, lookups
fields.py        the mandatory body fields and their layouts, esm_class bits
pdu.py           the PDU values and `response_to`
encode.py        a PDU to its bytes; decode.py: bytes to a PDU, or SmppProtocolError
framer.py        a byte stream cut into PDUs by command_length
receipt.py       delivery receipts: read, and the message id rewritten
text.py          SMS text: data_coding, concatenation (UDH / SAR), splitting

The relay:
server.py        SmppRelay: the listener, its sessions, deliveries to receiver binds
session.py       one client connection: bind, window of submits, writes
submit.py        a client's submit_sm: one decision per message, then the carrier
deliveries.py    the carrier's deliver_sm: receipts routed back, replies acted on
carrier.py       the ESME link to the carrier's SMSC
hub.py           deliveries between the processes of smpp.workers > 1
"""
