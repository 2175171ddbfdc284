"""The wire format of the decision and consent API (filterd/api_schema.py): the OpenAPI
3.1 document generated from the structs, the structs decoding and encoding bodies, and
the model converted to answers. No HTTP here (tests/test_api.py serves them)."""

from __future__ import annotations

import json

import msgspec
import pytest
from openapi_spec_validator import validate

from filterd.api_schema import (
    ALL_CHANNELS,
    MAX_ADDRESSES,
    AuditOut,
    CheckBody,
    CheckResult,
    ErrorAnswer,
    FactBody,
    FactOut,
    audit_out,
    fact_out,
    iso_time,
    openapi_document,
)
from filterd.model import Action, AuditEntry, Channel, Fact, Kind, MessageClass

JAN_2 = 1_735_787_045_123
"""2025-01-02T03:04:05.123Z in ms."""


def test_openapi_document_is_valid_and_names_every_endpoint() -> None:
    """The document (as JSON) is a valid OpenAPI 3.1 document naming every endpoint, its
    request schema generated from the structs (class, ≤ 1,000 addresses)."""
    document = json.loads(json.dumps(openapi_document()))
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/check", "/v1/facts", "/v1/status", "/v1/audit", "/v1/openapi.json",
    }  # fmt: skip
    check = document["components"]["schemas"]["CheckBody"]
    assert check["properties"]["addresses"]["maxItems"] == MAX_ADDRESSES
    assert "class" in check["properties"]
    assert check["additionalProperties"] is False


def test_check_body_decodes_class_with_a_commercial_default() -> None:
    """A check body names its message class `class`; without it the class is
    commercial and the channel is each address's own (None)."""
    body = msgspec.json.decode(
        b'{"sender": "acme", "addresses": ["a@example.com"], "class": "transactional"}',
        type=CheckBody,
    )
    assert body.message_class is MessageClass.TRANSACTIONAL
    plain = msgspec.json.decode(b'{"sender": "acme", "addresses": ["a@b.c"]}', type=CheckBody)
    assert (plain.message_class, plain.channel) == (MessageClass.COMMERCIAL, None)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (CheckBody, {"sender": "acme", "addresses": ["a@b.c"], "extra": 1}),
        (CheckBody, {"sender": "acme", "addresses": []}),
        (CheckBody, {"sender": "acme", "addresses": ["a@b.c"] * (MAX_ADDRESSES + 1)}),
        (CheckBody, {"sender": "", "addresses": ["a@b.c"]}),
        (FactBody, {"address": "a@b.c", "kind": "consent", "sender": "acme", "ttl": "30x"}),
        (FactBody, {"address": "a@b.c", "kind": "maybe", "sender": "acme"}),
    ],
)
def test_request_bodies_refuse_unknown_fields_and_values_out_of_bounds(
    kind: type[msgspec.Struct], body: dict[str, object]
) -> None:
    """An unknown field, an empty or over-long address list, an empty sender, a
    malformed ttl or an unknown kind fails to decode."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body), type=kind)


def test_answers_omit_what_is_unset() -> None:
    """An error answer without a field, and a check result without reason, resume or
    error, leave those keys out."""
    assert msgspec.json.encode(ErrorAnswer("unknown key")) == b'{"error":"unknown key"}'
    result = CheckResult("a@b.c", Action.DELIVER)
    assert json.loads(msgspec.json.encode(result)) == {
        "address": "a@b.c",
        "decision": Action.DELIVER.value,
    }


def test_iso_time_is_utc_with_milliseconds() -> None:
    """A time in ms reads as ISO 8601 UTC with milliseconds."""
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(JAN_2) == "2025-01-02T03:04:05.123Z"


def test_fact_out_shows_iso_times_and_all_for_every_channel() -> None:
    """A fact shows ISO times and its channel's name, `all` for a refusal of every
    channel; a request shows when it expires."""
    refusal = Fact(Kind.REFUSAL, "*", None, JAN_2, "web", evidence="form 7")
    assert fact_out(refusal) == FactOut(
        fact=Kind.REFUSAL, sender="*", channel=ALL_CHANNELS,
        created_at="2025-01-02T03:04:05.123Z", expires_at=None, source="web",
        evidence="form 7", message_id=None,
    )  # fmt: skip
    request = Fact(Kind.REQUEST, "acme", Channel.SMS, JAN_2, "api:crm", expires_ms=JAN_2 + 1000)
    shown = fact_out(request)
    assert (shown.channel, shown.expires_at) == ("sms", "2025-01-02T03:04:06.123Z")


def test_audit_out_keeps_every_field_with_an_iso_time() -> None:
    """An audit entry shows every field as recorded, its time in ISO 8601."""
    entry = AuditEntry(
        JAN_2, "fact", sender="acme", consumer="ab" * 16, channel="email", reason="r",
        source="s", origin="api", message_id="m", detail="key=crm",
    )  # fmt: skip
    assert audit_out(entry) == AuditOut(
        at="2025-01-02T03:04:05.123Z", event="fact", sender="acme", consumer="ab" * 16,
        channel="email", reason="r", source="s", origin="api", message_id="m",
        detail="key=crm",
    )  # fmt: skip
