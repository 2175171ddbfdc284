"""The SMTP relay. Inbound (aiosmtpd): `listener` (the listening socket),
`connection` (one client's protocol, caps and login gate), `inbound` (the
handler hooks), `envelope` (MAIL and RCPT), `data` (DATA), `transaction` (a
client's transaction and its upstream leg). Outbound: a pooled aiosmtplib client
(`outbound`). Between them the pure header checks (`signals`) and email opt-outs
and signing (`oneclick`)."""
