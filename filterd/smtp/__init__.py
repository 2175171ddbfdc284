"""The SMTP relay: aiosmtpd in (inbound.py), a pooled aiosmtplib client out
(outbound.py), and the pure header checks between them (signals.py)."""
