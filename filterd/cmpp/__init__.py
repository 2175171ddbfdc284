"""The CMPP 2.0 / 3.0 relay (see each module's docstring).

The sans-IO codec (pure):
header.py        the message header, the command ids, the versions and limits
fields.py        the kinds of body fields (fixed-width strings, integers, lists)
pdu.py           the messages as values, one layout per version, `response_to`
encode.py        a message to its bytes; decode.py: bytes to a message, or CmppProtocolError
framer.py        a byte stream cut into messages by Total_Length
result.py        CONNECT Status and SUBMIT / DELIVER Result values, filterd's included
auth.py          AuthenticatorSource / AuthenticatorISMG and the CONNECT Timestamp
msgid.py         Msg_Id: packing (time, gateway, sequence) and a generator
report.py        status reports: the content of a DELIVER with Registered_Delivery = 1
text.py          message text: Msg_Fmt 0 / 8 / 15, the UDH, concatenation
answers.py       what the server answers: CONNECT Status, a submit's Result, REFUSED/NOCONST reports
rules.py         the text rules on CMPP messages (signature, cancel text by Msg_Fmt)

The relay:
server.py        CmppRelay: the listener, its sessions, deliveries to an SP's connections
session.py       one SP connection: login in the login gate, window, ACTIVE_TEST, TERMINATE
submit.py        a CMPP_SUBMIT: one registry read for all destinations, then the ISMG
deliveries.py    CMPP_DELIVER from the ISMG: status reports routed back, replies (MO) acted on
ismg.py          IsmgClient: filterd's SP link to the carrier's ISMG
hub.py           CMPP_DELIVER on the hub between the processes of cmpp.workers > 1
"""
