"""Complaints from feedback loops (filterd/smtp/complaints.py), against a real
Valkey/Redis registry: which reports name an opt-out (filterd's own https or
mailto target, a token that verifies, the email channel), the refusal a complaint
records and its evidence, and the audit entry of one that names none."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from filterd.identity import ConsumerHasher
from filterd.model import Channel, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smtp.complaints import Complaints
from filterd.smtp.feedback import FeedbackReport, read_report
from filterd.smtp.oneclick import OneClick
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from filterd.tokens import TokenKeys, Unsubscribe, derive_key, mailto_form, sender_table
from tests.arf_helpers import RFC5965_FIELDS, one_click, original, report
from tests.conftest import ServerPool, flush

SECRET = bytes.fromhex("5e" * 32)
NOW = 1_790_000_000
KEYS = TokenKeys(derive_key(SECRET), max_age_s=400 * 86400)
JANE = ConsumerHasher(SECRET).consumer_id(normalize("jane@example.com"))


@pytest.fixture
def service(server_pool: ServerPool, event_loop_runner: asyncio.Runner) -> Iterator[Service]:
    """A service on a flushed Valkey registry (used from `event_loop_runner`)."""
    server = server_pool.get("valkey")
    flush(server)
    registry = RedisRegistry.from_url(server.url)
    yield Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600, clock=lambda: NOW)
    event_loop_runner.run(registry.close())


def complaints(service: Service) -> Complaints:
    """Complaints at fbl@acme.test for sender acme, with a fixed clock."""
    oneclick = OneClick(
        service, KEYS, sender_table(["acme"]), public_url="https://u.acme.test",
        domain="unsub.test", signer=None, clock=lambda: NOW,
    )  # fmt: skip
    return Complaints(service, oneclick, "FBL@acme.test", clock=lambda: NOW)


def token(sender: str = "acme", channel: Channel = Channel.EMAIL, issued: int = NOW - 60) -> str:
    """A token for jane@example.com."""
    return KEYS.issue(sender, channel, JANE, issued)


def abuse(list_unsubscribe: str | None, fields: str = RFC5965_FIELDS) -> FeedbackReport:
    """The report a provider sends about a message with this List-Unsubscribe."""
    got = read_report(report(original(list_unsubscribe), fields=fields))
    assert got is not None
    return got


def test_the_feedback_address_in_any_case(service: Service) -> None:
    """The configured address matches in any letter case, nothing else does."""
    taken = complaints(service)
    assert taken.is_feedback_address("fbl@ACME.test")
    assert not taken.is_feedback_address("fbl2@acme.test")
    assert not taken.is_feedback_address("unsubscribe+x@unsub.test")


def test_filterds_own_targets_name_the_opt_out(service: Service) -> None:
    """The https URL, or the mailto target alone (any case), names the token's opt-out."""
    taken = complaints(service)
    spelt = mailto_form(token())
    wanted = Unsubscribe("acme", Channel.EMAIL, JANE, (NOW - 60) // 60 * 60)
    for value in (
        one_click("https://u.acme.test", token(), "unsub.test", spelt),
        f"<mailto:UNSUBSCRIBE+{spelt.upper()}@unsub.test?subject=unsubscribe>",
        f"<https://U.ACME.TEST/unsubscribe/{token()}>",
    ):
        assert taken.match(abuse(value)) == wanted, value


def test_reports_that_name_no_opt_out_say_why(service: Service) -> None:
    """Not abuse, no target of filterd's, a forged, expired, unknown-sender or SMS
    token, a report without its parts: each named by its reason."""
    taken = complaints(service)
    forged = token()[:-6] + "AAAAAA"
    cases = {
        "not_abuse": abuse(
            f"<https://u.acme.test/unsubscribe/{token()}>",
            RFC5965_FIELDS.replace("abuse", "not-spam"),
        ),
        "no_token": abuse("<https://other.test/unsubscribe/x>, <mailto:u@unsub.test>"),
        "bad_token": abuse(f"<https://u.acme.test/unsubscribe/{forged}>"),
        "not_email": abuse(f"<https://u.acme.test/unsubscribe/{token(channel=Channel.SMS)}>"),
        "no_parts": FeedbackReport(problem="no_parts"),
    }
    for reason, got in cases.items():
        assert taken.match(got) == reason
    expired = token(issued=NOW - 401 * 86400)
    unknown = token(sender="other")
    for bad in (expired, unknown):
        assert taken.match(abuse(f"<https://u.acme.test/unsubscribe/{bad}>")) == "bad_token"
    assert taken.match(abuse(None)) == "no_token"


def test_a_complaint_records_the_refusal_with_its_evidence(
    service: Service, event_loop_runner: asyncio.Runner
) -> None:
    """The refusal: the token's sender, email, source complaint; evidence the report's
    Arrival-Date and Source-IP and the reporting peer, any address in it masked."""
    taken = complaints(service)
    evidence: list[str] = []
    fields = RFC5965_FIELDS.replace(
        "Arrival-Date: Mon, 07 Dec 2026 09:59:58 +0000", "Arrival-Date: sent to bob@example.com"
    )
    bob = ConsumerHasher(SECRET).consumer_id(normalize("bob@example.com"))
    bobs = KEYS.issue("acme", Channel.EMAIL, bob, NOW)
    for consumer, got in (
        (JANE, abuse(f"<https://u.acme.test/unsubscribe/{token()}>")),
        (bob, abuse(f"<https://u.acme.test/unsubscribe/{bobs}>", fields)),
    ):
        event_loop_runner.run(taken.take(got, "198.51.100.7", message_id="t1"))
        facts = event_loop_runner.run(service.registry.facts(consumer))
        assert [(f.kind, f.sender, f.channel, f.source) for f in facts] == [
            (Kind.REFUSAL, "acme", Channel.EMAIL, "complaint"),
        ]
        assert facts[0].evidence is not None
        assert facts[0].evidence.endswith(" at 2026-09-21T14:13:20+00:00 from 198.51.100.7")
        evidence.append(facts[0].evidence)
    assert evidence[0].startswith(
        "abuse report, Arrival-Date 2026-12-07T09:59:58+00:00, Source-IP 192.0.2.25 at "
    )
    assert evidence[1].startswith("abuse report, Arrival-Date sent to b***@example.com, ")


def test_an_unmatched_report_is_audited_and_changes_nothing(
    service: Service, event_loop_runner: asyncio.Runner
) -> None:
    """complaint_unmatched is audited with its reason and message id; no fact is written."""
    taken = complaints(service)
    event_loop_runner.run(taken.take(abuse(None), "198.51.100.7", message_id="t2"))
    event_loop_runner.run(service.flush_audit())
    entries = event_loop_runner.run(service.registry.read_audit(AuditQuery(limit=10)))
    assert [(e.event, e.reason, e.origin, e.message_id, e.consumer) for e in entries] == [
        ("complaint_unmatched", "no_token", "complaint", "t2", None),
    ]
    assert event_loop_runner.run(service.registry.facts(JANE)) == []
