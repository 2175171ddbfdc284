"""The SMTP side of email opt-outs (filterd/smtp/oneclick.py), against a real
Valkey/Redis registry and a real RSA key: which recipients are unsubscribe
addresses, what their tokens ask for, the refusal they record, and the
one-click headers and signature of relayed commercial mail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dkim
import pytest

from filterd.identity import ConsumerHasher
from filterd.model import Channel, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.signing import DkimSigner, SigningError, header_value
from filterd.smtp.oneclick import LOCAL_PREFIX, OneClick
from filterd.storage.redis import RedisRegistry
from filterd.tokens import TokenKeys, derive_key, mailto_form, sender_table
from tests.conftest import ServerPool, flush
from tests.helpers import dkim_key

SECRET = bytes.fromhex("5e" * 32)
NOW = 1_790_000_000
MESSAGE = b"From: news@acme.test\r\nTo: x@example.com\r\nSubject: sale\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A 2048-bit RSA key (PEM) and its DKIM TXT record."""
    path, record = dkim_key(tmp_path_factory.mktemp("dkim"))
    return path.read_bytes(), record


@pytest.fixture
def service(server_pool: ServerPool, event_loop_runner: asyncio.Runner) -> Iterator[Service]:
    """A service on a flushed Valkey registry (used from `event_loop_runner`)."""
    server = server_pool.get("valkey")
    flush(server)
    registry = RedisRegistry.from_url(server.url)
    yield Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600, clock=lambda: NOW)
    event_loop_runner.run(registry.close())


def make(
    service: Service, signer: DkimSigner | None = None, domain: str | None = "unsub.test"
) -> OneClick:
    """A OneClick for sender acme with a fixed clock."""
    return OneClick(
        service,
        TokenKeys(derive_key(SECRET), max_age_s=400 * 86400),
        sender_table(["acme"]),
        public_url="https://u.acme.test",
        domain=domain,
        signer=signer,
        clock=lambda: NOW,
    )


def test_only_unsubscribe_addresses_at_the_configured_domain_carry_a_token(
    service: Service,
    event_loop_runner: asyncio.Runner,
) -> None:
    """unsubscribe+TOKEN@domain (prefix and domain in any case) yields TOKEN; any
    other local part or domain, or no configured domain, yields None."""
    one = make(service)
    assert one.intake_token("unsubscribe+AbC@unsub.test") == "AbC"
    assert one.intake_token("Unsubscribe+AbC@UNSUB.TEST") == "AbC"
    assert one.intake_token("unsubscribe+AbC@other.test") is None
    assert one.intake_token("unsub+AbC@unsub.test") is None
    assert one.intake_token("unsubscribe+AbC") is None
    assert make(service, domain=None).intake_token("unsubscribe+AbC@unsub.test") is None


def test_headers_for_a_recipient_round_trip_to_a_refusal(
    service: Service, event_loop_runner: asyncio.Runner
) -> None:
    """The https and mailto targets made for a recipient carry one token; verifying
    it and recording it writes a refusal for that consumer, sender and channel."""
    run = event_loop_runner.run
    one = make(service)
    jane = normalize("jane@example.com")
    url, mailto = one.headers_for("acme", jane)
    token = url.rsplit("/", 1)[1]
    assert url == f"https://u.acme.test/unsubscribe/{token}"
    assert mailto == f"{LOCAL_PREFIX}{mailto_form(token)}@unsub.test"
    spelt = one.intake_token(mailto)
    assert spelt is not None
    assert len(spelt) == 52
    assert len(mailto.split("@")[0]) <= 64  # a local part's limit
    assert one.verify(spelt) == one.verify(spelt.upper()) == one.verify(token)
    wanted = one.verify(token)
    assert wanted is not None
    assert (wanted.sender, wanted.channel) == ("acme", Channel.EMAIL)
    run(one.record(wanted, "192.0.2.7"))
    facts = run(service.registry.facts(service.hasher.consumer_id(jane)))
    assert [(f.kind, f.sender, f.channel, f.source) for f in facts] == [
        (Kind.REFUSAL, "acme", Channel.EMAIL, "mailto")
    ]
    assert facts[0].evidence is not None
    assert "192.0.2.7" in facts[0].evidence


def test_bad_tokens_are_refused(service: Service, event_loop_runner: asyncio.Runner) -> None:
    """An altered or foreign token verifies to None (the caller answers 550 5.1.1)."""
    one = make(service)
    url, _ = one.headers_for("acme", normalize("jane@example.com"))
    token = url.rsplit("/", 1)[1]
    altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert one.verify(altered) is None
    assert one.verify("x" * 43) is None
    assert one.verify("") is None


def test_single_recipient_mail_gets_one_click_headers_and_a_valid_signature(
    service: Service, event_loop_runner: asyncio.Runner, rsa_key: tuple[bytes, bytes]
) -> None:
    """One recipient, no List-Unsubscribe: both one-click headers are added, with
    that recipient's token, and the DKIM signature (covering them) verifies."""
    run = event_loop_runner.run
    pem, record = rsa_key
    one = make(service, DkimSigner("mail", "acme.test", pem))
    jane = normalize("jane@example.com")
    signed = run(one.outgoing(MESSAGE, "acme", [jane], add=True))
    url, mailto = one.headers_for("acme", jane)
    assert header_value(signed, b"list-unsubscribe") == f"<{url}>, <mailto:{mailto}>".encode()
    assert header_value(signed, b"list-unsubscribe-post") == b"List-Unsubscribe=One-Click"
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
    signature = header_value(signed, b"dkim-signature") or b""
    assert b"list-unsubscribe-post" in signature


def test_signed_or_multi_recipient_mail_is_not_given_headers(
    service: Service, event_loop_runner: asyncio.Runner, rsa_key: tuple[bytes, bytes]
) -> None:
    """A message already DKIM-signed passes byte for byte; with several recipients
    no one-click header is added (a token names one consumer) but it is signed."""
    run = event_loop_runner.run
    pem, record = rsa_key
    one = make(service, DkimSigner("mail", "acme.test", pem))
    already = b"DKIM-Signature: v=1; d=else.test; b=xyz\r\n" + MESSAGE
    two = [normalize("jane@example.com"), normalize("joe@example.com")]
    assert run(one.outgoing(already, "acme", two[:1], add=True)) == already
    signed = run(one.outgoing(MESSAGE, "acme", two, add=True))
    assert header_value(signed, b"list-unsubscribe") is None
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


def test_without_a_signer_nothing_changes(
    service: Service, event_loop_runner: asyncio.Runner
) -> None:
    """No [dkim] (and no cancel_method = "add" asking for headers): the message goes on
    exactly as received."""
    run = event_loop_runner.run
    one = make(service)
    assert not one.signs
    assert run(one.outgoing(MESSAGE, "acme", [normalize("jane@example.com")], add=False)) == MESSAGE


def test_a_signature_that_fails_keeps_the_added_headers(
    service: Service, event_loop_runner: asyncio.Runner, rsa_key: tuple[bytes, bytes]
) -> None:
    """When signing fails after the one-click headers were added, the message goes on
    unsigned but with its List-Unsubscribe headers: a commercial message never leaves
    without its way to cancel because the signer broke."""

    class Broken(DkimSigner):
        """A signer whose signing fails."""

        def sign(self, message: bytes) -> bytes:
            raise SigningError("key gone")

    run = event_loop_runner.run
    one = make(service, Broken("mail", "acme.test", rsa_key[0]))
    jane = normalize("jane@example.com")
    sent = run(one.outgoing(MESSAGE, "acme", [jane], add=True))
    url, mailto = one.headers_for("acme", jane)
    assert header_value(sent, b"list-unsubscribe") == f"<{url}>, <mailto:{mailto}>".encode()
    assert header_value(sent, b"list-unsubscribe-post") == b"List-Unsubscribe=One-Click"
    assert header_value(sent, b"dkim-signature") is None
