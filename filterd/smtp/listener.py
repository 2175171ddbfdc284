"""The listening socket of an SMTP relay listener: its STARTTLS context and the
options every connection's aiosmtpd protocol gets.

aiosmtpd is given `hostname` (else a blocking `getfqdn()` per connection), the
message size limit (it buffers DATA in memory), SMTPUTF8, the idle timeout, and
AUTH only after STARTTLS when TLS is configured. The unsubscribe listener
offers no AUTH and needs no STARTTLS (mailbox providers deliver there as to any
MX; STARTTLS is still offered).
"""

from __future__ import annotations

import asyncio
import ssl

from filterd.guard import ACCEPT_BATCH, widen_queue
from filterd.settings import SmtpSettings
from filterd.smtp.connection import RelaySMTP
from filterd.smtp.inbound import RelayHandler


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """The STARTTLS context of the listener, when tls_cert/tls_key are set."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_smtp_server(
    settings: SmtpSettings, listen: tuple[str, int], handler: RelayHandler, *, hostname: str
) -> asyncio.Server:
    """Listen on `listen`; every connection gets a RelaySMTP.

    With several workers every process listens on the same port (SO_REUSEPORT)
    and the kernel spreads connections over them. The unsubscribe listener
    (`handler.intake_only`) offers no AUTH and needs no STARTTLS.
    """
    context = tls_context(settings)
    intake = handler.intake_only
    loop = asyncio.get_running_loop()  # given to each connection: aiosmtpd would look it up

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            connections=handler.connections,
            envelope_stage=handler.envelope_stage,
            gate=handler.gate,
            hostname=hostname,
            ident="filterd ESMTP",
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=context,
            require_starttls=context is not None and not intake,
            auth_required=False,
            auth_require_tls=context is not None,
            authenticator=None if intake else handler.authenticate,
            auth_exclude_mechanism=["LOGIN", "PLAIN"] if intake else None,
            timeout=settings.limits.idle_timeout_s,
            loop=loop,
        )

    host, port = listen
    server = await loop.create_server(
        factory, host, port, reuse_port=settings.workers > 1 or None, backlog=ACCEPT_BATCH
    )
    widen_queue(server)
    return server
