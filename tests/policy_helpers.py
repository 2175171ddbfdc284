"""Shared by the tests of the Postfix policy service (tests/test_policy_*.py): requests
exactly as Postfix's smtpd writes them."""

from __future__ import annotations

JANE, BOB, CAROL = "jane@example.com", "bob@example.com", "carol@example.com"


def request(
    recipient: str | bytes = JANE,
    *,
    state: str = "RCPT",
    sasl_username: str = "newsletter",
    client_address: str = "127.0.0.1",
    queue_id: str = "",
) -> bytes:
    """One request exactly as Postfix 3.7's smtpd writes it (attribute order and all)."""
    rcpt = recipient if isinstance(recipient, bytes) else recipient.encode()
    attributes: list[tuple[str, bytes]] = [
        ("request", b"smtpd_access_policy"),
        ("protocol_state", state.encode()),
        ("protocol_name", b"ESMTP"),
        ("client_address", client_address.encode()),
        ("client_name", b"tool.test"),
        ("client_port", b"40000"),
        ("reverse_client_name", b"tool.test"),
        ("server_address", b"127.0.0.1"),
        ("server_port", b"25"),
        ("helo_name", b"tool.test"),
        ("sender", b"shop@acme.test"),
        ("recipient", rcpt),
        ("recipient_count", b"0"),
        ("queue_id", queue_id.encode()),
        ("instance", b"53da.6b0bfc24.cdafa.0"),
        ("size", b"0"),
        ("etrn_domain", b""),
        ("stress", b""),
        ("sasl_method", b"PLAIN" if sasl_username else b""),
        ("sasl_username", sasl_username.encode()),
        ("sasl_sender", b""),
        ("ccert_subject", b""),
        ("ccert_issuer", b""),
        ("ccert_fingerprint", b""),
        ("ccert_pubkey_fingerprint", b""),
        ("encryption_protocol", b""),
        ("encryption_cipher", b""),
        ("encryption_keysize", b"0"),
        ("policy_context", b""),
    ]
    return b"".join(name.encode() + b"=" + value + b"\n" for name, value in attributes) + b"\n"
