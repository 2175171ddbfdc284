"""The wire format of the decision and consent API (SPEC §8): the msgspec structs of
every request and answer body, the limits they carry, the converters from the model
(`fact_out`, `audit_out`, `iso_time`) and the OpenAPI 3.1 document generated from
the same structs. No HTTP here: `filterd.api.ApiSite` decodes and serves these.

Request structs forbid unknown fields and bound their strings and lists, so one
msgspec decode checks a body; a fact's consumer appears by hash only, and a fact
for every channel shows `"channel": "all"`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec

from filterd.model import (
    MAX_EVIDENCE_BYTES,
    Action,
    AuditEntry,
    Channel,
    Fact,
    Kind,
    MessageClass,
    Reason,
    WriteResult,
)

MAX_BODY_BYTES = 1024 * 1024
"""A request body over this (1 MiB) is refused with 413."""
MAX_ADDRESSES = 1000
"""Addresses one /v1/check may ask about."""
MAX_AUDIT_LIMIT = 1000
JSON = "application/json"
"""The media type of every body, request and answer."""
ALL_CHANNELS = "all"
"""The channel of a refusal on every channel, as the API names it."""
_CHANNEL_CHOICES = [c.value for c in Channel] + [ALL_CHANNELS]

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=256, examples=["acme"])]
AddressText = Annotated[str, msgspec.Meta(examples=["jane@example.com", "+8613800138000"])]
Evidence = Annotated[str, msgspec.Meta(max_length=MAX_EVIDENCE_BYTES)]


# ---- request and answer bodies (also the OpenAPI schemas) -------------------------


class CheckBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/check: may `sender` send a message of `class` to each address?"""

    sender: Sender
    addresses: Annotated[list[AddressText], msgspec.Meta(min_length=1, max_length=MAX_ADDRESSES)]
    channel: Channel | None = None
    """Default: each address's own channel (email, or sms for a phone number)."""
    message_class: MessageClass = msgspec.field(name="class", default=MessageClass.COMMERCIAL)


class CheckResult(msgspec.Struct, omit_defaults=True):
    """One address's answer, in request order."""

    address: str
    decision: Action | None
    reason: Reason | None = None
    resume: str | None = None
    """Quiet hours: when sending may resume."""
    error: str | None = None
    """Why the address could not be judged (decision null)."""


class CheckAnswer(msgspec.Struct):
    """200 of /v1/check."""

    results: list[CheckResult]


class FactBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/facts: a consent, request or refusal for one address."""

    address: AddressText
    kind: Kind
    sender: Sender | None = None
    all_senders: bool = False
    """A refusal of every sender (needs a key for `"*"`); instead of `sender`."""
    channel: Annotated[str, msgspec.Meta(extra_json_schema={"enum": _CHANNEL_CHOICES})] | None = (
        None
    )
    """Default: the address's own channel; `all` (refusals only): every channel."""
    ttl: Annotated[str, msgspec.Meta(pattern=r"^[0-9]+[smhd]$")] | None = None
    """A request's lifetime (`30d`); default `registry.request_ttl`."""
    source: Text | None = None
    evidence: Evidence | None = None


class FactOut(msgspec.Struct):
    """A fact on record (its consumer known by hash only)."""

    fact: Kind
    sender: str
    channel: str
    created_at: str
    expires_at: str | None
    source: str
    evidence: str | None
    message_id: str | None


class FactAnswer(msgspec.Struct):
    """201 of /v1/facts."""

    fact: FactOut
    result: WriteResult
    consumer: str
    """The consumer's hash (as in the audit log)."""


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/status: the facts of one address."""

    address: AddressText
    sender: Sender | None = None
    """Only the facts of this sender (and global refusals)."""


class StatusAnswer(msgspec.Struct):
    """200 of /v1/status."""

    facts: list[FactOut]


class AuditOut(msgspec.Struct):
    """One audit-log entry."""

    at: str
    event: str
    sender: str | None
    consumer: str | None
    channel: str | None
    reason: str | None
    source: str | None
    origin: str | None
    message_id: str | None
    detail: str | None


class AuditAnswer(msgspec.Struct):
    """200 of /v1/audit."""

    entries: list[AuditOut]


class ErrorAnswer(msgspec.Struct, omit_defaults=True):
    """Every 4xx and 5xx answer."""

    error: str
    field: str | None = None


# ---- from the model ---------------------------------------------------------------


def iso_time(ms: int) -> str:
    """A time in ms as ISO 8601 UTC with milliseconds (`2025-01-02T03:04:05.000Z`)."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def fact_out(fact: Fact) -> FactOut:
    """A fact as the API shows it."""
    return FactOut(
        fact=fact.kind,
        sender=fact.sender,
        channel=fact.channel.value if fact.channel else ALL_CHANNELS,
        created_at=iso_time(fact.at_ms),
        expires_at=iso_time(fact.expires_ms) if fact.expires_ms is not None else None,
        source=fact.source,
        evidence=fact.evidence,
        message_id=fact.message_id,
    )


def audit_out(entry: AuditEntry) -> AuditOut:
    """An audit entry as the API shows it."""
    return AuditOut(
        at=iso_time(entry.at_ms), event=entry.event, sender=entry.sender,
        consumer=entry.consumer, channel=entry.channel, reason=entry.reason,
        source=entry.source, origin=entry.origin, message_id=entry.message_id,
        detail=entry.detail,
    )  # fmt: skip


# ---- the OpenAPI document ---------------------------------------------------------

_Method = Literal["get", "post"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API, its schemas generated from the structs."""
    structs = (CheckBody, CheckAnswer, FactBody, FactAnswer, StatusBody, StatusAnswer,
               AuditAnswer, ErrorAnswer)  # fmt: skip
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )

    def ref(struct: type) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{struct.__name__}"}

    def body(struct: type) -> dict[str, Any]:
        return {"content": {JSON: {"schema": ref(struct)}}}

    def error(text: str) -> dict[str, Any]:
        return {"description": text, **body(ErrorAnswer)}

    def operation(
        summary: str, scope: str, answer: type, status: str, request: type | None
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {
            status: {"description": summary, **body(answer)},
            "400": error("malformed JSON or a bad field (named in `field`)"),
            "401": {
                "description": "no or unknown key",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                **body(ErrorAnswer),
            },
            "403": error(f"the key lacks the {scope} scope or the sender"),
            "413": error(f"a body over {MAX_BODY_BYTES} bytes"),
            "503": {
                "description": "registry unavailable; nothing written",
                "headers": {"Retry-After": {"schema": {"type": "string"}}},
                **body(ErrorAnswer),
            },
        }
        if status == "201":
            responses["409"] = error("a consent or request over a refusal, without evidence")
        op: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "x-scope": scope,
            "responses": responses,
        }
        if request is not None:
            op["requestBody"] = {"required": True, **body(request)}
        return op

    audit = operation("audit entries, newest first", "read", AuditAnswer, "200", None)
    audit["parameters"] = [
        {"name": "sender", "in": "query", "schema": {"type": "string"}},
        {"name": "since", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]+[smhd]$"}},
        {"name": "limit", "in": "query",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT}},
    ]  # fmt: skip
    paths: dict[str, dict[_Method, Any]] = {
        "/v1/check": {
            "post": operation("decisions in request order", "check", CheckAnswer, "200", CheckBody)
        },
        "/v1/facts": {
            "post": operation("the fact, written durably", "write", FactAnswer, "201", FactBody)
        },
        "/v1/status": {
            "post": operation("facts, newest first", "read", StatusAnswer, "200", StatusBody)
        },
        "/v1/audit": {"get": audit},
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "filterd decision and consent API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
