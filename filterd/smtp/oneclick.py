"""Email opt-outs on the SMTP side: `unsubscribe+TOKEN@…` intake, and the
RFC 8058 headers and DKIM signature of relayed commercial mail.

- Intake: a recipient `unsubscribe+TOKEN@{smtp.unsubscribe_domain}` is not
  relayed; its signed token (filterd/tokens.py) is checked at RCPT (bad →
  550 5.1.1) and the refusal is recorded durably at DATA, before the 250. No
  login is needed for these recipients, and only for them.
- One-click headers and signing: a commercial message gets
  `List-Unsubscribe: <https…>, <mailto:…>` and `List-Unsubscribe-Post` when
  smtp/cancel.py says so (no List-Unsubscribe of its own, one recipient: the
  token names one consumer), then, with `[dkim]`, filterd's signature covering
  both. A message with a DKIM-Signature is passed on byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from filterd.logs import get_logger
from filterd.model import Address, Channel
from filterd.service import Service
from filterd.signing import DkimSigner, SigningError, add_one_click, is_signed
from filterd.tokens import TokenError, TokenKeys, Unsubscribe, from_mailto_form, mailto_form

log = get_logger("smtp")

LOCAL_PREFIX = "unsubscribe+"
BAD_UNSUBSCRIBE_ADDRESS = "550 5.1.1 <{address}>: invalid or expired unsubscribe address"
UNSUBSCRIBED = "250 2.0.0 unsubscribed"


class OneClick:
    """Token checks, refusal records and header signing for one SMTP relay."""

    def __init__(
        self,
        service: Service,
        tokens: TokenKeys,
        senders: Mapping[bytes, str],
        *,
        public_url: str,
        domain: str | None,
        signer: DkimSigner | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.tokens = tokens
        self.senders = senders
        self.public_url = public_url
        self.domain = domain
        self.signer = signer
        self._clock = clock

    # ---- intake ---------------------------------------------------------------------

    def intake_token(self, address: str) -> str | None:
        """The token when `address` is `unsubscribe+TOKEN@{unsubscribe_domain}`, else None."""
        if self.domain is None:
            return None
        local, at, domain = address.rpartition("@")
        if not at or domain.lower().rstrip(".") != self.domain:
            return None
        if not local.lower().startswith(LOCAL_PREFIX):
            return None
        return local[len(LOCAL_PREFIX) :]

    def verify(self, token: str, *, origin: str = "mailto") -> Unsubscribe | None:
        """The opt-out a token asks for (base64url, or its base32 mailto spelling in
        any case), or None when it must be refused (logged with `origin`)."""
        token = from_mailto_form(token) or token
        try:
            return self.tokens.verify(token, self.senders, int(self._clock()))
        except TokenError as exc:
            log.info("unsubscribe_token_refused", reason=exc.reason, origin=origin)
            return None

    async def record(self, wanted: Unsubscribe, peer: str) -> None:
        """Write the refusal durably (raises RegistryUnavailable when it cannot)."""
        fact = wanted.refusal(
            source="mailto", how="mailto unsubscribe", peer=peer, now_s=self._clock()
        )
        await self.service.record_consumer(wanted.consumer, fact, origin="mailto")

    # ---- signing --------------------------------------------------------------------

    @property
    def signs(self) -> bool:
        """True when relayed commercial mail is DKIM-signed."""
        return self.signer is not None

    def headers_for(self, sender: str, recipient: Address) -> tuple[str, str | None]:
        """The https and mailto one-click targets for one recipient of `sender`."""
        consumer = self.service.hasher.consumer_id(recipient)
        token = self.tokens.issue(sender, Channel.EMAIL, consumer, int(self._clock()))
        mailto = f"{LOCAL_PREFIX}{mailto_form(token)}@{self.domain}" if self.domain else None
        return f"{self.public_url}/unsubscribe/{token}", mailto

    async def outgoing(
        self, content: bytes, sender: str, recipients: list[Address], *, add: bool
    ) -> bytes:
        """The message as it goes upstream: with the one-click headers naming its one
        recipient when `add` (smtp/cancel.py decides; never on a message with one
        recipient too many or a DKIM-Signature, which they would break), then signed
        when [dkim] is set and it carries no DKIM-Signature yet. A signature that
        fails is logged and the message goes on unsigned, its headers kept (refusing
        it would not help the consumer)."""
        if add and len(recipients) == 1 and not is_signed(content):
            url, mailto = self.headers_for(sender, recipients[0])
            content = add_one_click(content, url, mailto)
        if self.signer is None or is_signed(content):
            return content
        try:
            return await asyncio.to_thread(self.signer.sign, content)
        except SigningError as exc:
            log.warning("dkim_not_signed", sender=sender, error=str(exc))
        except Exception as exc:  # a signing fault must not lose the message
            log.error("dkim_not_signed", sender=sender, error=type(exc).__name__)
        return content
