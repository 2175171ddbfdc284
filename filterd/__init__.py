"""filterd: a commercial-message opt-out filter for SMTP and SMPP relays."""

__version__ = "0.1.0"
