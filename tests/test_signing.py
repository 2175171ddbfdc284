"""filterd.signing: DKIM signatures (dkimpy) and the RFC 8058 one-click headers.

A message DkimSigner signs verifies with dkim.verify against the TXT record of
the key's public half; `h=` covers List-Unsubscribe and List-Unsubscribe-Post
when present; add_one_click adds both headers only when the message has no
List-Unsubscribe; header_value reads folded headers of the header block only;
an unusable key fails at construction with SigningError.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from filterd.signing import DkimSigner, SigningError, add_one_click, header_value, is_signed
from tests.helpers import dkim_key

MESSAGE = (
    b"From: Shop <shop@acme.test>\r\n"
    b"To: jane@example.com\r\n"
    b"Subject: =?utf-8?b?5bm/5ZGK?= spring sale\r\n"
    b"Date: Sun, 15 Jun 2025 12:00:00 +0000\r\n"
    b"Message-ID: <m1@acme.test>\r\n"
    b"\r\n"
    b"Hello Jane,\r\nour spring sale starts today.\r\n"
)
URL = "https://unsub.acme.test/unsubscribe/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
MAILTO = "unsubscribe+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@unsub.acme.test"


def openssl(*args: str) -> bytes:
    """Run openssl; its stdout."""
    return subprocess.run(["openssl", *args], capture_output=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(private key PEM, DKIM TXT record) of a fresh 2048-bit RSA key."""
    path, record = dkim_key(Path(tmp_path_factory.mktemp("dkim")))
    return path.read_bytes(), record


def dns_for(record: bytes, name: bytes = b"mail._domainkey.acme.test.") -> Callable[..., bytes]:
    """A dkimpy dnsfunc answering `record` for `name` only."""

    def lookup(query: bytes, timeout: int = 5) -> bytes:
        return record if query == name else b""

    return lookup


def signed_headers(message: bytes) -> list[str]:
    """The header names in the h= tag of the message's DKIM-Signature."""
    value = header_value(message, b"dkim-signature")
    assert value is not None
    match = re.search(rb"h=([^;]+)", value.replace(b" ", b""))
    assert match is not None
    return match.group(1).decode().lower().split(":")


def test_signed_message_verifies(rsa_key: tuple[bytes, bytes]) -> None:
    """A signed message verifies with dkim.verify against the key's TXT record, with
    d=, s=, relaxed/relaxed and rsa-sha256; the body and headers are unchanged."""
    pem, record = rsa_key
    signer = DkimSigner("mail", "acme.test", pem)
    signed = signer.sign(MESSAGE)
    assert signed.endswith(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    assert dkim.verify(signed, dnsfunc=dns_for(record))
    value = header_value(signed, b"dkim-signature")
    assert value is not None
    for tag in (b"d=acme.test", b"s=mail", b"c=relaxed/relaxed", b"a=rsa-sha256"):
        assert tag in value.replace(b" ", b"")
    assert {"from", "to", "subject"} <= set(signed_headers(signed))


def test_one_click_headers_are_signed(rsa_key: tuple[bytes, bytes]) -> None:
    """With the one-click headers added, h= lists list-unsubscribe and
    list-unsubscribe-post and the signature verifies."""
    pem, record = rsa_key
    signed = DkimSigner("mail", "acme.test", pem).sign(add_one_click(MESSAGE, URL, MAILTO))
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_headers(signed))
    assert dkim.verify(signed, dnsfunc=dns_for(record))


def test_altered_signed_message_fails_verification(rsa_key: tuple[bytes, bytes]) -> None:
    """Changing the signed List-Unsubscribe header (or the body) breaks the signature."""
    pem, record = rsa_key
    signed = DkimSigner("mail", "acme.test", pem).sign(add_one_click(MESSAGE, URL, None))
    dns = dns_for(record)
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"unsub.acme.test", b"evil.example"), dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"spring sale starts", b"sale ends"), dnsfunc=dns)


def test_lf_message_gets_crlf_signature(rsa_key: tuple[bytes, bytes]) -> None:
    """For a message with bare LF line ends, the signature header still ends every
    (folded) line with CRLF."""
    pem, _ = rsa_key
    header = DkimSigner("mail", "acme.test", pem).signature_header(MESSAGE.replace(b"\r\n", b"\n"))
    assert header.endswith(b"\r\n")
    assert b"\n" not in header.replace(b"\r\n", b"")


def test_add_one_click_when_absent() -> None:
    """Without List-Unsubscribe, both headers are prepended: https first, then mailto;
    List-Unsubscribe-Post is the RFC 8058 value; the original message follows unchanged."""
    out = add_one_click(MESSAGE, URL, MAILTO)
    assert out.endswith(MESSAGE)
    assert header_value(out, b"List-Unsubscribe") == f"<{URL}>, <mailto:{MAILTO}>".encode()
    assert header_value(out, b"list-unsubscribe-post") == b"List-Unsubscribe=One-Click"
    https_only = add_one_click(MESSAGE, URL, None)
    assert header_value(https_only, b"list-unsubscribe") == f"<{URL}>".encode()


@pytest.mark.parametrize(
    "existing",
    [
        b"List-Unsubscribe: <https://acme.test/u/1>\r\n",
        b"list-unsubscribe: <mailto:u@acme.test>\r\n",
        b"LIST-UNSUBSCRIBE:\r\n <https://acme.test/u/2>\r\n",
    ],
)
def test_add_one_click_keeps_the_senders_own(existing: bytes) -> None:
    """A message that already has List-Unsubscribe (any case, folded) is returned as is:
    no second List-Unsubscribe and no List-Unsubscribe-Post added."""
    message = existing + MESSAGE
    assert add_one_click(message, URL, MAILTO) == message


def test_list_unsubscribe_in_the_body_does_not_count() -> None:
    """A 'List-Unsubscribe:' line in the body is not a header: the headers are added."""
    message = MESSAGE + b"List-Unsubscribe: <https://nope.test>\r\n"
    out = add_one_click(message, URL, None)
    assert header_value(out, b"list-unsubscribe") == f"<{URL}>".encode()


def test_header_value_unfolds_and_ignores_case() -> None:
    """header_value finds a header by any case and joins its folded lines with spaces."""
    message = (
        b"From: a@acme.test\r\nX-Long: first part\r\n\tsecond part\r\n  third\r\n"
        b"Subject: s\r\n\r\nX-Long: body\r\n"
    )
    assert header_value(message, b"x-long") == b"first part second part third"
    assert header_value(message, b"SUBJECT") == b"s"
    assert header_value(message, b"x-missing") is None
    assert header_value(b"X-Only: headers\n", b"x-only") == b"headers"


def test_is_signed_sees_folded_signature_in_the_header_block_only() -> None:
    """is_signed is true for a (folded) DKIM-Signature header, false for none or one in
    the body."""
    folded = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\td=acme.test; s=s1;\r\n b=xyz\r\n" + MESSAGE
    assert is_signed(folded)
    assert header_value(folded, b"dkim-signature") == b"v=1; a=rsa-sha256; d=acme.test; s=s1; b=xyz"
    assert not is_signed(MESSAGE)
    assert not is_signed(MESSAGE + b"DKIM-Signature: v=1; b=in the body\r\n")
    assert is_signed(b"dkim-signature: v=1\n\nbody\n")


def test_signer_output_is_recognised_as_signed(rsa_key: tuple[bytes, bytes]) -> None:
    """A message filterd signed is seen as signed (so it is never rewritten again)."""
    pem, _ = rsa_key
    assert is_signed(DkimSigner("mail", "acme.test", pem).sign(MESSAGE))


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a key at all", id="garbage"),
        pytest.param(
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            id="truncated-pem",
        ),
    ],
)
def test_unusable_key_is_a_signing_error(pem: bytes) -> None:
    """A key that cannot sign is refused when the signer is built, with SigningError."""
    with pytest.raises(SigningError, match="DKIM key unusable"):
        DkimSigner("mail", "acme.test", pem)


def test_public_key_is_not_a_signing_key(rsa_key: tuple[bytes, bytes], tmp_path: Path) -> None:
    """A public key PEM (the DNS half) is refused with SigningError."""
    key = tmp_path / "k.pem"
    key.write_bytes(rsa_key[0])
    public = openssl("rsa", "-in", str(key), "-pubout")
    with pytest.raises(SigningError):
        DkimSigner("mail", "acme.test", public)


def test_message_without_from_is_a_signing_error(rsa_key: tuple[bytes, bytes]) -> None:
    """A message dkimpy cannot sign (no From header) raises SigningError, not a dkimpy
    exception."""
    signer = DkimSigner("mail", "acme.test", rsa_key[0])
    with pytest.raises(SigningError):
        signer.sign(b"To: jane@example.com\r\nSubject: s\r\n\r\nbody\r\n")


def test_signing_error_is_a_value_error() -> None:
    """SigningError is a ValueError (a bad configuration value)."""
    assert issubclass(SigningError, ValueError)
