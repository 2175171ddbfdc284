"""DKIM signing of relayed commercial mail, and the RFC 8058 one-click headers (dkimpy).

Only filterd's own signature may cover headers filterd added: the one-click
headers are added only when filterd signs, and a message that already carries
a DKIM-Signature is left untouched (SPEC §4: no rewriting of signed mail).
Signing uses relaxed/relaxed canonicalisation and rsa-sha256; `h=` lists the
usual headers present plus List-Unsubscribe and List-Unsubscribe-Post, as
RFC 8058 §4 requires.
"""

from __future__ import annotations

import re

import dkim

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ONE_CLICK = (b"list-unsubscribe", b"list-unsubscribe-post")


class SigningError(ValueError):
    """The key cannot sign (bad PEM, wrong type) or the message cannot be signed."""


class DkimSigner:
    """Signs messages for one domain with one selector and private key."""

    def __init__(self, selector: str, domain: str, private_key_pem: bytes) -> None:
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")
        self._key = private_key_pem
        try:  # fail at start, not on the first message
            self.signature_header(b"From: check@" + self.domain + b"\r\n\r\nkey check\r\n")
        except SigningError as exc:
            raise SigningError(f"DKIM key unusable: {exc}") from None

    def signature_header(self, message: bytes) -> bytes:
        """The `DKIM-Signature:` header (CRLF-terminated) for `message`."""
        try:
            signer = dkim.DKIM(message)
            headers = list(signer.default_sign_headers())
            present = {name.lower() for name, _ in signer.headers}
            headers += [name for name in _ONE_CLICK if name in present and name not in headers]
            signature: bytes = signer.sign(
                self.selector,
                self.domain,
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=headers,
            )
        except (dkim.DKIMException, ValueError, IndexError) as exc:
            raise SigningError(str(exc) or type(exc).__name__) from None
        return signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def sign(self, message: bytes) -> bytes:
        """`message` with the signature header prepended."""
        return self.signature_header(message) + message


def is_signed(message: bytes) -> bool:
    """True when the header block already holds a DKIM-Signature."""
    return header_value(message, b"dkim-signature") is not None


def header_value(message: bytes, name: bytes) -> bytes | None:
    """The first value of header `name` (case-insensitive), unfolded; None when absent."""
    end = _HEADER_END.search(message)
    block = message[: end.start()] if end else message
    wanted = name.lower() + b":"
    lines = block.split(b"\n")
    for index, line in enumerate(lines):
        if line.lower().startswith(wanted):
            value = [line[len(wanted) :].strip()]
            for more in lines[index + 1 :]:
                if more[:1] not in (b" ", b"\t"):
                    break
                value.append(more.strip())
            return b" ".join(value)
    return None


def add_one_click(message: bytes, https_url: str, mailto: str | None) -> bytes:
    """Prepend List-Unsubscribe (https, then mailto) and List-Unsubscribe-Post.

    Nothing is added when the message already has a List-Unsubscribe header
    (the sender's own stays, and is signed as it is).
    """
    if header_value(message, b"list-unsubscribe") is not None:
        return message
    targets = [f"<{https_url}>"] + ([f"<mailto:{mailto}>"] if mailto else [])
    added = (
        b"List-Unsubscribe: " + ", ".join(targets).encode("ascii") + b"\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    )
    return added + message
