"""The SMPP 3.4 relay: the sans-IO PDU codec (pdu.py) and SMS text handling (text.py)."""
