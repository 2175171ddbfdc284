"""The decision and consent API over a real listening socket, against a real
Valkey/Redis server: `HttpFrontEnd(ApiSite(...)).start(("127.0.0.1", 0))`, and
aiohttp's client over loopback.

- /v1/check answers in request order with one registry read for the batch (1,000
  addresses too), a bad address in its own slot wherever it is, and writes nothing;
- /v1/facts writes durably before 201, audited with origin api and the key's name;
  a consent over a refusal without evidence is 409 and writes nothing;
- /v1/status and /v1/audit read, newest first, within the key's senders;
- /v1/openapi.json serves the document of `filterd.api_schema` without a key;
- 401 (with WWW-Authenticate: Bearer) and the login back-off, 403 for a scope or a
  sender, 400 naming the field, 413, 503 with Retry-After and nothing written;
- no raw address reaches the logs; the listener keeps its idle deadline and caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from filterd import logs
from filterd.api import ApiSite
from filterd.api_schema import MAX_ADDRESSES, MAX_BODY_BYTES, openapi_document
from filterd.guard import FailureBackoff, LoginGate
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.metrics import Metrics
from filterd.model import Channel, Fact, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import ApiKey, ListenerLimits
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from filterd.web import TOO_MANY_CONNECTIONS, HttpFrontEnd
from tests.conftest import ServerPool
from tests.helpers import RedisProcess

SECRET = bytes.fromhex("6a" * 32)
EMAIL = "Jane.Doe@Example.com"
PHONE = "+8613800138000"
RAW_FORMS = (b"jane.doe@example.com", b"Jane.Doe", b"8613800138000", b"13800138000")
CRM = ApiKey("crm", "c" * 40, ("acme",), frozenset({"check", "read", "write"}))
DIALER = ApiKey("dialer", "d" * 40, ("acme",), frozenset({"check"}))
ADMIN = ApiKey("admin", "a" * 40, ("*",), frozenset({"check", "read", "write"}))
TWO = ApiKey("two", "t" * 40, ("acme", "beta"), frozenset({"read"}))
KEYS = (CRM, DIALER, ADMIN, TWO)
FIRST_BACKOFF_S = 0.3


def bearer(key: ApiKey | str) -> dict[str, str]:
    """The Authorization header of `key`."""
    return {"Authorization": f"Bearer {key.key if isinstance(key, ApiKey) else key}"}


@dataclass
class Api:
    """A running API, its service and registry, and a client session."""

    base: str
    service: Service
    registry: RedisRegistry
    client: aiohttp.ClientSession
    lookups: list[int]

    async def call(
        self, method: str, path: str, key: ApiKey | str | None = CRM, **kw: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """(status, JSON body, headers) of one request."""
        headers = bearer(key) if key is not None else {}
        async with self.client.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json(), r.headers

    async def facts(self, address: str = EMAIL) -> list[Fact]:
        """Every fact on record for `address`."""
        return await self.registry.facts(self.service.hasher.consumer_id(normalize(address)))


@contextlib.asynccontextmanager
async def running(
    redis_url: str,
    *,
    limits: ListenerLimits | None = None,
    body_timeout_s: float = 30.0,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Api]:
    """Serve the API on 127.0.0.1:<OS port> over the registry at `redis_url`."""
    registry = RedisRegistry.from_url(redis_url)
    lookups: list[int] = []
    lookup = registry.lookup

    async def counted(sender: str, consumers: Any) -> list[list[Fact]]:
        lookups.append(len(consumers))
        return await lookup(sender, consumers)

    registry.lookup = counted  # type: ignore[method-assign]
    service = Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600, metrics=Metrics())
    gate = LoginGate(FailureBackoff(first_s=FIRST_BACKOFF_S, max_s=2.0))
    site = ApiSite(service, KEYS, gate, default_region="CN", clock=clock)
    front_end = HttpFrontEnd(site, limits, body_timeout_s=body_timeout_s, name="api")
    server = await front_end.start(("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as client:
            yield Api(f"http://127.0.0.1:{port}", service, registry, client, lookups)
    finally:
        server.close()
        await front_end.close()
        await service.close()
        await registry.close()


def serve(server: RedisProcess, scenario: Callable[[Api], Any], **options: Any) -> None:
    """Run `scenario(api)` on a fresh event loop with an API over `server`."""

    async def main() -> None:
        async with running(server.url, **options) as api:
            await scenario(api)

    asyncio.run(main())


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every JSON log line written meanwhile, at INFO and above."""
    stream = io.StringIO()
    logs.configure(stream, "INFO")
    try:
        yield stream
    finally:
        logs.configure(sys.stderr, "WARNING")


# ---- the OpenAPI document ---------------------------------------------------------


def test_openapi_document_is_served_without_a_key(valkey_server: RedisProcess) -> None:
    """GET /v1/openapi.json needs no key and serves the OpenAPI document of the schema
    module; an unknown path (404) or method (405, with Allow) gets a JSON error too."""

    async def scenario(api: Api) -> None:
        status, document, _ = await api.call("GET", "/v1/openapi.json", key=None)
        assert status == 200
        assert document == json.loads(json.dumps(openapi_document()))
        status, answer, headers = await api.call("GET", "/v1/facts", key=None)
        assert (status, headers["Allow"]) == (405, "POST")
        assert answer["error"]
        status, answer, _ = await api.call("GET", "/v1/nothing", key=None)
        assert status == 404
        assert answer["error"]

    serve(valkey_server, scenario)


# ---- authentication and authorisation ---------------------------------------------


def test_no_or_unknown_key_is_401_with_www_authenticate(valkey_server: RedisProcess) -> None:
    """No Authorization header, another scheme, or an unknown key: 401 with
    `WWW-Authenticate: Bearer ...` and a JSON error; nothing is written."""

    async def scenario(api: Api) -> None:
        body = {"address": EMAIL, "kind": "refusal", "sender": "acme"}
        for key in (None, "x" * 40, CRM.key[:-1]):
            status, answer, headers = await api.call("POST", "/v1/facts", key=key, json=body)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert answer["error"]
        async with api.client.post(
            api.base + "/v1/facts", json=body, headers={"Authorization": f"Basic {CRM.key}"}
        ) as response:
            assert response.status == 401
        assert await api.facts() == []

    serve(valkey_server, scenario)


def test_after_a_wrong_key_every_next_request_waits_the_backoff(
    valkey_server: RedisProcess,
) -> None:
    """After a wrong key from an address, the next request, with the right key, is
    answered only after the back-off (and succeeds); a success clears it; two wrong
    keys in parallel take turns, the second waiting the first's back-off."""

    async def scenario(api: Api) -> None:
        status, _, _ = await api.call("POST", "/v1/status", key="w" * 40, json={"address": EMAIL})
        assert status == 401
        started = time.monotonic()
        status, _, _ = await api.call("POST", "/v1/status", json={"address": EMAIL})
        assert status == 200
        assert time.monotonic() - started >= FIRST_BACKOFF_S * 0.9
        started = time.monotonic()
        status, _, _ = await api.call("POST", "/v1/status", json={"address": EMAIL})
        assert status == 200
        assert time.monotonic() - started < FIRST_BACKOFF_S
        started = time.monotonic()
        results = await asyncio.gather(
            *(api.call("GET", "/v1/audit", key="w" * 40) for _ in range(2))
        )
        assert [r[0] for r in results] == [401, 401]
        assert time.monotonic() - started >= FIRST_BACKOFF_S * 0.9

    serve(valkey_server, scenario)


def test_scope_and_sender_the_key_lacks_are_403(valkey_server: RedisProcess) -> None:
    """A key without the write scope may not write, one without read may not read; a key
    for acme may not act for beta, nor record a refusal of all senders (that takes "*");
    nothing is written."""

    async def scenario(api: Api) -> None:
        refusal = {"address": EMAIL, "kind": "refusal", "sender": "acme"}
        assert (await api.call("POST", "/v1/facts", key=DIALER, json=refusal))[0] == 403
        assert (await api.call("GET", "/v1/audit", key=DIALER))[0] == 403
        assert (await api.call("POST", "/v1/status", key=DIALER, json=refusal))[0] == 403
        beta = {**refusal, "sender": "beta"}
        status, answer, _ = await api.call("POST", "/v1/facts", json=beta)
        assert (status, answer["field"]) == (403, "sender")
        global_refusal = {"address": EMAIL, "kind": "refusal", "all_senders": True}
        assert (await api.call("POST", "/v1/facts", json=global_refusal))[0] == 403
        check = {"sender": "beta", "addresses": [EMAIL]}
        assert (await api.call("POST", "/v1/check", key=DIALER, json=check))[0] == 403
        assert (await api.call("GET", "/v1/audit?sender=beta"))[0] == 403
        assert await api.facts() == []
        assert (await api.call("POST", "/v1/facts", key=ADMIN, json=global_refusal))[0] == 201

    serve(valkey_server, scenario)


# ---- POST /v1/check -----------------------------------------------------------------


def test_check_answers_in_request_order_with_one_registry_read(
    valkey_server: RedisProcess,
) -> None:
    """Each address gets its decision in request order, the input string as given; a bad
    address gets decision null and an error in its slot; a transactional question
    delivers; one registry read for the batch; nothing audited; sender "*" is 400."""

    async def scenario(api: Api) -> None:
        refused, consented = "refused@example.com", "13800138001"
        await api.call("POST", "/v1/facts", json={"address": refused, "kind": "refusal",
                                                   "sender": "acme"})  # fmt: skip
        await api.call("POST", "/v1/facts", json={"address": consented, "kind": "consent",
                                                   "sender": "acme"})  # fmt: skip
        audited = len(await api.registry.read_audit(AuditQuery()))
        api.lookups.clear()
        addresses = [consented, "not an address", refused, EMAIL]
        status, answer, _ = await api.call(
            "POST", "/v1/check", key=DIALER, json={"sender": "acme", "addresses": addresses}
        )
        assert status == 200
        results = answer["results"]
        assert [r["address"] for r in results] == addresses
        assert results[0] == {"address": consented, "decision": "deliver"}
        assert results[1]["decision"] is None
        assert "invalid address" in results[1]["error"]
        assert results[2] == {"address": refused, "decision": "drop", "reason": "refused"}
        assert results[3] == {"address": EMAIL, "decision": "drop", "reason": "no_consent"}
        assert api.lookups == [3]
        status, answer, _ = await api.call(
            "POST", "/v1/check",
            json={"sender": "acme", "addresses": [refused], "class": "transactional"},
        )  # fmt: skip
        assert answer["results"][0]["decision"] == "deliver"
        assert len(await api.registry.read_audit(AuditQuery())) == audited
        status, answer, _ = await api.call(
            "POST", "/v1/check", key=ADMIN, json={"sender": "*", "addresses": [EMAIL]}
        )
        assert (status, answer["field"]) == (400, "sender")

    serve(valkey_server, scenario)


def test_check_takes_a_channel_that_fits_the_address(valkey_server: RedisProcess) -> None:
    """A consent on sms does not answer for email; `channel` sms for an email address is
    an error in that address's slot."""

    async def scenario(api: Api) -> None:
        await api.call("POST", "/v1/facts", json={"address": PHONE, "kind": "consent",
                                                   "sender": "acme", "channel": "sms"})  # fmt: skip
        status, answer, _ = await api.call(
            "POST", "/v1/check",
            json={"sender": "acme", "addresses": [PHONE, EMAIL], "channel": "sms"},
        )  # fmt: skip
        assert status == 200
        assert answer["results"][0]["decision"] == "deliver"
        assert answer["results"][1]["decision"] is None
        assert "channel" in answer["results"][1]["error"]

    serve(valkey_server, scenario)


def test_a_dialer_checks_its_calls_on_the_voice_channel(valkey_server: RedisProcess) -> None:
    """A dialer asks with `channel` voice: a voice refusal drops the call while the
    sms consent of the same number still delivers SMS; a consent on sms alone answers
    no_consent for a call; an email address is an error in its slot."""

    async def scenario(api: Api) -> None:
        for channel, kind in (("sms", "consent"), ("voice", "consent"), ("voice", "refusal")):
            status, _, _ = await api.call("POST", "/v1/facts", json={
                "address": PHONE, "kind": kind, "sender": "acme", "channel": channel})  # fmt: skip
            assert status == 201
        calls = {"sender": "acme", "addresses": [PHONE, EMAIL], "channel": "voice"}
        status, answer, _ = await api.call("POST", "/v1/check", json=calls)
        assert status == 200
        first, second = answer["results"]
        assert (first["decision"], first["reason"]) == ("drop", "refused")
        assert second["decision"] is None
        assert "channel" in second["error"]
        sms = {"sender": "acme", "addresses": [PHONE], "channel": "sms"}
        _, answer, _ = await api.call("POST", "/v1/check", json=sms)
        assert answer["results"][0]["decision"] == "deliver"
        other = "+8613900139000"
        await api.call("POST", "/v1/facts", json={
            "address": other, "kind": "consent", "sender": "acme", "channel": "sms"})  # fmt: skip
        only_sms = {"sender": "acme", "addresses": [other], "channel": "voice"}
        _, answer, _ = await api.call("POST", "/v1/check", json=only_sms)
        assert (answer["results"][0]["decision"], answer["results"][0]["reason"]) == (
            "drop", "no_consent"
        )  # fmt: skip

    serve(valkey_server, scenario)


def test_check_of_a_thousand_addresses_is_one_read(valkey_server: RedisProcess) -> None:
    """1,000 addresses are answered in order with one registry read; 1,001 are 400
    naming `addresses`."""

    async def scenario(api: Api) -> None:
        addresses = [f"user{i}@example.com" for i in range(MAX_ADDRESSES)]
        await api.call("POST", "/v1/facts", json={"address": addresses[500], "kind": "consent",
                                                   "sender": "acme"})  # fmt: skip
        api.lookups.clear()
        status, answer, _ = await api.call(
            "POST", "/v1/check", json={"sender": "acme", "addresses": addresses}
        )
        assert status == 200
        assert api.lookups == [MAX_ADDRESSES]
        assert [r["address"] for r in answer["results"]] == addresses
        delivered = [i for i, r in enumerate(answer["results"]) if r["decision"] == "deliver"]
        assert delivered == [500]
        status, answer, _ = await api.call(
            "POST", "/v1/check", json={"sender": "acme", "addresses": [*addresses, "x@y.cn"]}
        )
        assert (status, answer["field"]) == (400, "addresses")

    serve(valkey_server, scenario)


def test_check_errors_keep_their_slots_across_a_whole_batch(
    valkey_server: RedisProcess,
) -> None:
    """In a batch of 1,000 on channel sms (read a part at a time), an email address or a
    bad number anywhere, at the first, last or any middle position, gets its error in its
    own slot; every other number its decision, in order, from one registry read."""

    async def scenario(api: Api) -> None:
        numbers = [f"+86138{i:08d}" for i in range(MAX_ADDRESSES)]
        await api.call("POST", "/v1/facts", json={"address": numbers[251], "kind": "consent",
                                                   "sender": "acme"})  # fmt: skip
        wrong = {0: EMAIL, 249: "not a number", 250: EMAIL, 500: "+86", 999: EMAIL}
        addresses = [wrong.get(i, number) for i, number in enumerate(numbers)]
        api.lookups.clear()
        status, answer, _ = await api.call(
            "POST", "/v1/check",
            json={"sender": "acme", "addresses": addresses, "channel": "sms"},
        )  # fmt: skip
        assert status == 200
        assert api.lookups == [MAX_ADDRESSES - len(wrong)]
        results = answer["results"]
        assert [r["address"] for r in results] == addresses
        errors = {i: r["error"] for i, r in enumerate(results) if r["decision"] is None}
        assert sorted(errors) == sorted(wrong)
        assert all("channel" in errors[i] for i in (0, 250, 999))
        assert all("invalid address" in errors[i] for i in (249, 500))
        delivered = [i for i, r in enumerate(results) if r["decision"] == "deliver"]
        assert delivered == [251]

    serve(valkey_server, scenario)


# ---- POST /v1/facts -----------------------------------------------------------------


def test_fact_is_written_durably_and_audited_with_the_key(valkey_server: RedisProcess) -> None:
    """201 with the fact once it is stored; the registry has it (channel of the address,
    source naming the key by default); the audit entry has origin api and the key's
    name; a request carries its ttl."""

    async def scenario(api: Api) -> None:
        status, answer, _ = await api.call(
            "POST", "/v1/facts",
            json={"address": EMAIL, "kind": "consent", "sender": "acme",
                  "evidence": "form https://acme.example/join from 192.0.2.1"},
        )  # fmt: skip
        assert status == 201
        assert answer["fact"]["fact"] == "consent"
        assert answer["fact"]["channel"] == "email"
        assert answer["fact"]["source"] == "api:crm"
        consumer = consumer_hex(api.service.hasher.consumer_id(normalize(EMAIL)))
        assert answer["consumer"] == consumer
        [fact] = await api.facts()
        assert (fact.kind, fact.sender, fact.channel) == (Kind.CONSENT, "acme", Channel.EMAIL)
        assert fact.evidence == "form https://acme.example/join from 192.0.2.1"
        [entry] = await api.registry.read_audit(AuditQuery(consumer=consumer))
        assert (entry.origin, entry.detail, entry.event) == ("api", "key=crm", "consent")
        status, answer, _ = await api.call(
            "POST", "/v1/facts",
            json={"address": PHONE, "kind": "request", "sender": "acme", "ttl": "2d"},
        )  # fmt: skip
        assert status == 201
        assert answer["fact"]["expires_at"] is not None
        [request] = await api.facts(PHONE)
        assert request.expires_ms is not None
        assert request.expires_ms - request.at_ms == 2 * 86_400_000

    serve(valkey_server, scenario)


def test_consent_over_a_refusal_without_evidence_is_409(valkey_server: RedisProcess) -> None:
    """A consent after a refusal on record, without evidence, is 409 naming `evidence`
    and writes nothing; with evidence it is 201; a global refusal on every channel is
    recorded with channel all."""

    async def scenario(api: Api) -> None:
        refusal = {"address": EMAIL, "kind": "refusal", "all_senders": True, "channel": "all"}
        status, answer, _ = await api.call("POST", "/v1/facts", key=ADMIN, json=refusal)
        assert status == 201
        assert (answer["fact"]["sender"], answer["fact"]["channel"]) == ("*", "all")
        consent = {"address": EMAIL, "kind": "consent", "sender": "acme"}
        status, answer, _ = await api.call("POST", "/v1/facts", json=consent)
        assert (status, answer["field"]) == (409, "evidence")
        assert [f.kind for f in await api.facts()] == [Kind.REFUSAL]
        status, _, _ = await api.call(
            "POST", "/v1/facts", json={**consent, "evidence": "signed form, ticket 42"}
        )
        assert status == 201
        assert sorted(f.kind.value for f in await api.facts()) == ["consent", "refusal"]

    serve(valkey_server, scenario)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": EMAIL, "kind": "maybe", "sender": "acme"}, "kind"),
        ({"address": EMAIL, "kind": "consent"}, "sender"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "all_senders": True}, "sender"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "channel": "all"}, "channel"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "channel": "sms"}, "channel"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "channel": "fax"}, "channel"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "ttl": "2d"}, "ttl"),
        ({"address": EMAIL, "kind": "request", "sender": "acme", "ttl": "soon"}, "ttl"),
        ({"address": "nobody", "kind": "consent", "sender": "acme"}, "address"),
        ({"address": 42, "kind": "consent", "sender": "acme"}, "address"),
        ({"kind": "consent", "sender": "acme"}, "address"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "extra": 1}, "extra"),
        ({"address": EMAIL, "kind": "consent", "sender": "acme", "evidence": "e" * 5000},
         "evidence"),
    ],
)  # fmt: skip
def test_bad_field_is_400_naming_it(
    valkey_server: RedisProcess, body: dict[str, Any], field: str
) -> None:
    """A body with a bad, missing or unknown field is 400 naming the field; nothing is
    written."""

    async def scenario(api: Api) -> None:
        status, answer, _ = await api.call("POST", "/v1/facts", json=body)
        assert (status, answer.get("field")) == (400, field), answer
        assert answer["error"]
        assert await api.facts() == []

    serve(valkey_server, scenario)


def test_malformed_json_is_400_and_a_huge_body_413(valkey_server: RedisProcess) -> None:
    """A body that is not JSON (or not an object) is 400; one over 1 MiB is 413; a JSON
    error body either way, nothing written."""

    async def scenario(api: Api) -> None:
        for raw in (b"{", b"", b"[1, 2]", b"\xff\xfe"):
            status, answer, _ = await api.call("POST", "/v1/facts", data=raw)
            assert status == 400, raw
            assert answer["error"]
        huge = json.dumps({"address": EMAIL, "kind": "refusal", "sender": "acme",
                           "evidence": "x" * MAX_BODY_BYTES}).encode()  # fmt: skip
        status, answer, _ = await api.call("POST", "/v1/facts", data=io.BytesIO(huge))
        assert status == 413
        assert answer["error"]
        assert await api.facts() == []

    serve(valkey_server, scenario)


# ---- reads --------------------------------------------------------------------------


def test_status_shows_the_keys_senders_newest_first(valkey_server: RedisProcess) -> None:
    """/v1/status lists the consumer's facts newest first: a key for acme sees acme's
    facts and global refusals, not beta's; `sender` narrows the list."""

    async def scenario(api: Api) -> None:
        await api.call("POST", "/v1/facts", key=ADMIN,
                       json={"address": EMAIL, "kind": "consent", "sender": "beta"})  # fmt: skip
        await api.call("POST", "/v1/facts",
                       json={"address": EMAIL, "kind": "consent", "sender": "acme"})  # fmt: skip
        await api.call("POST", "/v1/facts", key=ADMIN,
                       json={"address": EMAIL, "kind": "refusal", "all_senders": True})  # fmt: skip
        status, answer, _ = await api.call("POST", "/v1/status", key=ADMIN, json={"address": EMAIL})
        assert status == 200
        assert [(f["fact"], f["sender"]) for f in answer["facts"]] == [
            ("refusal", "*"), ("consent", "acme"), ("consent", "beta"),
        ]  # fmt: skip
        _, answer, _ = await api.call("POST", "/v1/status", json={"address": EMAIL})
        assert [f["sender"] for f in answer["facts"]] == ["*", "acme"]
        _, answer, _ = await api.call(
            "POST", "/v1/status", key=ADMIN, json={"address": EMAIL, "sender": "beta"}
        )
        assert [f["sender"] for f in answer["facts"]] == ["*", "beta"]

    ticks = iter(range(1_750_000_000, 1_750_001_000))
    serve(valkey_server, scenario, clock=lambda: float(next(ticks)))


def test_audit_reads_newest_first_within_the_keys_senders(valkey_server: RedisProcess) -> None:
    """/v1/audit lists entries newest first, of the key's one sender by default, bounded
    by `limit`; a key of several senders must name one; a bad limit or since is 400."""

    async def scenario(api: Api) -> None:
        for address in ("a@example.com", "b@example.com"):
            refusal = {"address": address, "kind": "refusal", "sender": "acme"}
            await api.call("POST", "/v1/facts", json=refusal)
        await api.call("POST", "/v1/facts", key=ADMIN,
                       json={"address": EMAIL, "kind": "refusal", "sender": "beta"})  # fmt: skip
        status, answer, _ = await api.call("GET", "/v1/audit")
        assert status == 200
        entries = answer["entries"]
        assert [e["sender"] for e in entries] == ["acme", "acme"]
        assert entries[0]["at"] >= entries[1]["at"]
        assert all(e["origin"] == "api" and e["detail"] == "key=crm" for e in entries)
        _, answer, _ = await api.call("GET", "/v1/audit?limit=1&since=1h")
        assert len(answer["entries"]) == 1
        _, answer, _ = await api.call("GET", "/v1/audit?since=089994790d")
        assert len(answer["entries"]) == 2
        _, answer, _ = await api.call("GET", "/v1/audit", key=ADMIN)
        assert len(answer["entries"]) == 3
        status, answer, _ = await api.call("GET", "/v1/audit", key=TWO)
        assert (status, answer["field"]) == (400, "sender")
        _, answer, _ = await api.call("GET", "/v1/audit?sender=beta", key=TWO)
        assert [e["sender"] for e in answer["entries"]] == ["beta"]
        for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("since=x", "since")):
            status, answer, _ = await api.call("GET", f"/v1/audit?{query}")
            assert (status, answer["field"]) == (400, field)

    serve(valkey_server, scenario)


# ---- registry down, privacy, the listener ----------------------------------------


def test_registry_down_is_503_with_retry_after(private_server: RedisProcess) -> None:
    """With the registry stopped, every endpoint that needs it answers 503 with
    Retry-After; once it is back, nothing was written."""

    async def scenario(api: Api) -> None:
        await asyncio.to_thread(private_server.stop)
        calls = [
            ("POST", "/v1/check", {"sender": "acme", "addresses": [EMAIL]}),
            ("POST", "/v1/facts", {"address": EMAIL, "kind": "refusal", "sender": "acme"}),
            ("POST", "/v1/status", {"address": EMAIL}),
            ("GET", "/v1/audit", None),
        ]
        for method, path, body in calls:
            status, answer, headers = await api.call(method, path, json=body)
            assert status == 503, path
            assert int(headers["Retry-After"]) > 0
            assert "unavailable" in answer["error"]
        await asyncio.to_thread(private_server.start)
        assert await api.facts() == []

    serve(private_server, scenario)


def test_no_raw_address_or_key_in_the_logs(valkey_server: RedisProcess) -> None:
    """Facts written, checks, status reads and refused keys log no raw address and no
    key (masked addresses only)."""

    async def scenario(api: Api) -> None:
        for address in (EMAIL, PHONE):
            refusal = {"address": address, "kind": "refusal", "sender": "acme"}
            await api.call("POST", "/v1/facts", json=refusal)
        await api.call("POST", "/v1/check", json={"sender": "acme", "addresses": [EMAIL, PHONE]})
        await api.call("POST", "/v1/status", json={"address": EMAIL})
        await api.call("POST", "/v1/status", key="z" * 40, json={"address": EMAIL})

    with captured_logs() as stream:
        serve(valkey_server, scenario)
    text = stream.getvalue().encode()
    assert b'"fact"' in text
    for raw in (*RAW_FORMS, CRM.key.encode(), b"z" * 40):
        assert raw not in text


def test_listener_keeps_its_idle_deadline_and_caps(valkey_server: RedisProcess) -> None:
    """A connection that sends no complete request head within idle_timeout is closed;
    beyond max_connections a connection gets the bare 503 and is closed."""

    async def scenario(api: Api) -> None:
        port = int(api.base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/check HTTP/1.1\r\n")
        await writer.drain()
        second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(second_reader.read(), 5) == TOO_MANY_CONNECTIONS
        second_writer.close()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 3
        writer.close()

    serve(valkey_server, scenario, limits=ListenerLimits(0.5, 1, 1))


# ---- Schemathesis against the live API -------------------------------------------

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
"""What every generated request must meet: no 5xx (a registry that answers), a status,
content type, body and headers the document declares."""


@pytest.fixture(scope="module")
def live_api(server_pool: ServerPool) -> Iterator[str]:
    """The API served from a thread of its own (its own event loop) over a shared
    registry server, for the length of this module's Schemathesis run; its base URL."""
    server = server_pool.get("valkey")
    ready = threading.Event()
    handle: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        done = asyncio.Event()
        async with running(server.url) as api:
            handle.append((api.base, asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    base, loop, done = handle[0]
    yield base
    loop.call_soon_threadsafe(done.set)
    thread.join(30)


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_generated_request_gets_a_conforming_answer(
    case: schemathesis.Case, live_api: str
) -> None:
    """Schemathesis requests of every operation, valid and not, with the admin key: no
    5xx, and every answer conforms to the OpenAPI document (status, type, body,
    headers)."""
    case.call_and_validate(base_url=live_api, headers=bearer(ADMIN), checks=CONFORMANCE)
