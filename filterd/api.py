"""The decision and consent API (SPEC §8): JSON over HTTP/1.1 for CRMs, web forms
and dialers, served by `filterd.web.HttpFrontEnd` on `[api] listen`.

- `POST /v1/check` (scope check): decisions for up to MAX_ADDRESSES addresses of one
  sender, in request order, with one registry read for the batch. It is a question,
  like `filterctl check`, not a message: it goes through `Service.judge`, so nothing
  is logged per address, counted or audited (a CRM asking about its list is no drop).
  A bad address gets `"decision": null` and an `"error"` in its slot.
- `POST /v1/facts` (scope write): a consent, request or refusal written durably before
  201; a consent or request over a refusal on record without evidence is 409 and
  writes nothing (as `filterctl consent`). Audited with origin `api` and the key's
  name (`detail: "key=NAME"`).
- `POST /v1/status` (scope read): the facts of one consumer, newest first.
- `GET /v1/audit?sender=&since=&limit=` (scope read): audit entries, newest first.
- `GET /v1/openapi.json`: the OpenAPI 3.1 document of this API, without a key.

Every other request carries `Authorization: Bearer KEY`. Keys are compared in
constant time and never logged; each attempt goes through the process's
`LoginGate` (SPEC §11), so after a wrong key *every* next request from that address
waits out the back-off. A key acts only within its scopes and senders (else 403).

Bodies are decoded and checked by the msgspec structs of `filterd.api_schema` (the
same structs give the OpenAPI document): malformed JSON or a bad field is 400 naming
the field; a body over MAX_BODY_BYTES is 413; a registry outage is 503 with
Retry-After and nothing written. Addresses travel in bodies only: never in a URL,
and never logged (the service logs the masked form of a fact written; the access log
is off).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from filterd.api_schema import (
    ALL_CHANNELS,
    JSON,
    MAX_AUDIT_LIMIT,
    MAX_BODY_BYTES,
    AuditAnswer,
    CheckAnswer,
    CheckBody,
    CheckResult,
    ErrorAnswer,
    FactAnswer,
    FactBody,
    StatusAnswer,
    StatusBody,
    audit_out,
    fact_out,
    openapi_document,
)
from filterd.errors import InvalidAddress, RegistryUnavailable
from filterd.guard import Abandoned, LoginGate
from filterd.identity import consumer_hex
from filterd.logs import get_logger
from filterd.model import (
    ALL_SENDERS,
    Address,
    Channel,
    Decision,
    FactRequest,
    Kind,
    Reason,
    WriteResult,
)
from filterd.normalize import normalize
from filterd.service import Service, private_fact
from filterd.settings import ApiKey
from filterd.storage.port import AuditQuery
from filterd.units import parse_duration
from filterd.web import guarded_application

log = get_logger("api")
T = TypeVar("T")

_RETRY_AFTER_S = "30"
CHUNK = 250
"""A check reads this many addresses per turn of the event loop, so a batch of
1,000 does not hold other requests back for all of its reading."""
_NO_STORE = {"Cache-Control": "no-store"}


class Problem(Exception):
    """A request the API refuses: its status, reason and the field at fault."""

    def __init__(
        self,
        status: int,
        error: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers or {}


# ---- the site ---------------------------------------------------------------------


class ApiSite:
    """The request handlers over one Service, the keys and the process's login gate."""

    def __init__(
        self,
        service: Service,
        keys: Sequence[ApiKey],
        gate: LoginGate,
        *,
        default_region: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.keys = tuple(keys)
        self.gate = gate
        self.region = default_region
        self._clock = clock
        self._openapi = msgspec.json.encode(openapi_document())

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = guarded_application(MAX_BODY_BYTES)
        app.middlewares.append(_json_errors)
        app.router.add_post("/v1/check", self._guarded(self.check, "check"))
        app.router.add_post("/v1/facts", self._guarded(self.facts, "write"))
        app.router.add_post("/v1/status", self._guarded(self.status, "read"))
        app.router.add_get("/v1/audit", self._guarded(self.audit, "read"))
        app.router.add_get("/v1/openapi.json", self.openapi)
        return app

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document (no key needed)."""
        return web.Response(body=self._openapi, content_type=JSON, headers=_NO_STORE)

    def _guarded(
        self, handler: Callable[[web.Request, ApiKey], Any], scope: str
    ) -> Callable[[web.Request], Any]:
        async def guarded(request: web.Request) -> web.Response:
            try:
                key = await self._authenticate(request, scope)
                answer: msgspec.Struct = await handler(request, key)
            except Problem as problem:
                return _error(problem)
            status = 201 if isinstance(answer, FactAnswer) else 200
            return web.Response(
                body=msgspec.json.encode(answer), status=status, content_type=JSON,
                headers=_NO_STORE,
            )  # fmt: skip

        return guarded

    async def _authenticate(self, request: web.Request, scope: str) -> ApiKey:
        """The key of the request's bearer token, through the login gate (else 401),
        if it has `scope` (else 403)."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise Problem(401, "an Authorization: Bearer key is required")
        transport = request.transport
        try:
            async with self.gate.attempt(
                request.remote or "", lambda: transport is None or transport.is_closing()
            ) as attempt:
                key = self._match(given)
                if key is None:
                    attempt.failed()  # recorded when the block ends: raise only after it
                else:
                    attempt.succeeded()
        except Abandoned:
            key = None
        if key is None:
            log.info("api_key_refused", peer=request.remote)
            raise Problem(401, "unknown key")
        if scope not in key.scopes:
            raise Problem(403, f"this key does not have the {scope} scope")
        return key

    def _match(self, given: str) -> ApiKey | None:
        """The key equal to `given`, every key compared in constant time."""
        wanted = given.encode("utf-8", "surrogateescape")
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.key.encode(), wanted):
                found = key
        return found

    # ---- POST /v1/check -------------------------------------------------------------

    async def check(self, request: web.Request, key: ApiKey) -> CheckAnswer:
        """The decisions for every address, one registry read for the batch."""
        body = await _decode(request, CheckBody)
        if body.sender == ALL_SENDERS:
            raise Problem(400, 'a check is for one sender, not "*"', "sender")
        _may_act(key, body.sender)
        judged: list[Address] = []
        slots: list[CheckResult | int] = []
        raws = body.addresses
        for start in range(0, len(raws), CHUNK):
            if start:
                await asyncio.sleep(0)  # let other requests in between the chunks
            self._read_chunk(raws[start : start + CHUNK], body.channel, judged, slots)
        decisions: list[Decision] = []
        if judged:
            decisions = await self.service.judge(body.sender, body.message_class, judged)
        if any(d.reason is Reason.REGISTRY_UNAVAILABLE for d in decisions):
            raise _unavailable()
        results = [
            slot
            if isinstance(slot, CheckResult)
            else CheckResult(
                raw,
                decisions[slot].action,
                decisions[slot].reason,
                resume=decisions[slot].resume,
            )
            for raw, slot in zip(raws, slots, strict=True)
        ]
        return CheckAnswer(results)

    def _read_chunk(
        self,
        raws: Sequence[str],
        channel: Channel | None,
        judged: list[Address],
        slots: list[CheckResult | int],
    ) -> None:
        """Normalise `raws` onto `judged`; each one's slot is its index there, or its
        error result."""
        region = self.region
        for raw in raws:
            try:
                address = normalize(raw, region)
                if channel is not None and channel is not address.channel:
                    address = _on_channel(address, channel)
            except InvalidAddress as exc:
                slots.append(CheckResult(raw, None, error=f"invalid address: {exc.reason}"))
                continue
            except Problem as problem:
                slots.append(CheckResult(raw, None, error=problem.error))
                continue
            slots.append(len(judged))
            judged.append(address)

    def _address(self, raw: str, channel: Channel | None) -> Address:
        """`raw` normalised, on `channel` when given (a phone number's channels are
        every one but email); Problem 400 naming `field`."""
        try:
            address = normalize(raw, self.region)
        except InvalidAddress as exc:
            raise Problem(400, f"invalid address: {exc.reason}", "address") from None
        if channel is None or channel is address.channel:
            return address
        return _on_channel(address, channel)

    # ---- POST /v1/facts -------------------------------------------------------------

    async def facts(self, request: web.Request, key: ApiKey) -> FactAnswer:
        """Record one fact durably (201), audited with origin api and the key's name."""
        body = await _decode(request, FactBody)
        if body.all_senders == (body.sender is not None):
            raise Problem(400, "give sender or all_senders: true (one of them)", "sender")
        if body.all_senders and body.kind is not Kind.REFUSAL:
            raise Problem(400, "only a refusal may be for all senders", "all_senders")
        sender = ALL_SENDERS if body.all_senders else str(body.sender)
        if sender == ALL_SENDERS and not body.all_senders:
            raise Problem(400, 'use all_senders: true, not sender "*"', "sender")
        _may_act(key, sender)
        address = self._address(body.address, None)
        channel: Channel | None = address.channel
        if body.channel == ALL_CHANNELS:
            if body.kind is not Kind.REFUSAL:
                raise Problem(400, "only a refusal may be for all channels", "channel")
            channel = None
        elif body.channel is not None:
            try:
                wanted = Channel(body.channel)
            except ValueError:
                raise Problem(400, f"unknown channel {body.channel!r}", "channel") from None
            address = self._address(body.address, wanted)
            channel = address.channel
        ttl_s = None
        if body.ttl is not None:
            if body.kind is not Kind.REQUEST:
                raise Problem(400, "only a request has a ttl", "ttl")
            try:
                ttl_s = parse_duration(body.ttl)
            except ValueError as exc:
                raise Problem(400, str(exc), "ttl") from None
        fact_request = FactRequest(
            address=address,
            kind=body.kind,
            sender=sender,
            channel=channel,
            source=body.source or f"api:{key.name}",
            evidence=body.evidence or None,
            at_ms=int(self._clock() * 1000),
            ttl_s=ttl_s,
        )
        try:
            result = await self.service.record(fact_request, origin="api", detail=f"key={key.name}")
        except RegistryUnavailable as exc:
            log.warning("api_write_deferred", error=str(exc), key=key.name)
            raise _unavailable() from None
        if result is WriteResult.REFUSAL_ON_RECORD:
            raise Problem(
                409,
                f"a refusal is on record; a {body.kind.value} needs evidence (nothing written)",
                "evidence",
            )
        fact = private_fact(self.service.build_fact(fact_request))
        consumer = consumer_hex(self.service.hasher.consumer_id(address))
        return FactAnswer(fact_out(fact), result, consumer)

    # ---- reads ----------------------------------------------------------------------

    async def status(self, request: web.Request, key: ApiKey) -> StatusAnswer:
        """The facts of one consumer (of the key's senders), newest first."""
        body = await _decode(request, StatusBody)
        if body.sender is not None:
            _may_act(key, body.sender)
        address = self._address(body.address, None)
        consumer = self.service.hasher.consumer_id(address)
        try:
            found = await self.service.registry.facts(consumer)
        except RegistryUnavailable:
            raise _unavailable() from None
        shown = [
            f
            for f in found
            if (body.sender is None or f.sender in (body.sender, ALL_SENDERS))
            and (f.sender == ALL_SENDERS or key.may_act_for(f.sender))
        ]
        return StatusAnswer([fact_out(f) for f in shown])

    async def audit(self, request: web.Request, key: ApiKey) -> AuditAnswer:
        """Audit entries, newest first: `sender` (required for a key of named senders
        when it has several), `since` (a duration back from now), `limit`."""
        query = request.rel_url.query
        sender = query.get("sender") or None
        if sender is not None:
            _may_act(key, sender)
        elif "*" not in key.senders:
            if len(key.senders) != 1:
                raise Problem(400, "name the sender (this key acts for several)", "sender")
            sender = key.senders[0]
        since_ms = 0
        if query.get("since"):
            try:
                back_ms = 1000 * parse_duration(query["since"])
                since_ms = max(0, int(self._clock() * 1000) - back_ms)  # 9999d: everything
            except ValueError as exc:
                raise Problem(400, str(exc), "since") from None
        limit = 100
        if query.get("limit"):
            raw = query["limit"]
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_LIMIT:
                raise Problem(400, f"limit must be 1-{MAX_AUDIT_LIMIT}", "limit")
            limit = int(raw)
        try:
            entries = await self.service.registry.read_audit(
                AuditQuery(since_ms=since_ms, limit=limit, sender=sender)
            )
        except RegistryUnavailable:
            raise _unavailable() from None
        return AuditAnswer([audit_out(e) for e in entries])


def _on_channel(address: Address, channel: Channel) -> Address:
    """`address` on `channel` (a phone number's channels are every one but email);
    Problem 400 naming the channel when it does not fit."""
    if (channel is Channel.EMAIL) != (address.channel is Channel.EMAIL):
        raise Problem(400, f"channel {channel.value} does not fit the address", "channel")
    return Address(address.canonical, channel)


def _may_act(key: ApiKey, sender: str) -> None:
    """Problem 403 unless `key` acts for `sender`."""
    if not key.may_act_for(sender):
        raise Problem(403, "this key may not act for this sender", "sender")


_AT_FIELD = re.compile(r" - at `\$\.?([^`]*)`$")
"""Where msgspec says the bad value is (`... - at `$.kind``)."""
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`")
_INDEX = re.compile(r"\[\d+\].*$")


async def _decode(request: web.Request, kind: type[T]) -> T:
    """The JSON body as `kind`; Problem 400 naming the field, 413 over MAX_BODY_BYTES."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Problem(413, f"request body over {MAX_BODY_BYTES} bytes") from None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_FIELD.search(text)
        named = _NAMED_FIELD.search(text)
        field = named.group(1) if named else (at.group(1) if at else "")
        raise Problem(400, _AT_FIELD.sub("", text), _INDEX.sub("", field) or None) from None
    except msgspec.DecodeError:
        raise Problem(400, "the body is not a JSON document") from None


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own answers (404 no such path, 405 another method) as JSON errors too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(Problem(exc.status, exc.reason.lower()))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


def _unavailable() -> Problem:
    return Problem(
        503, "consent registry unavailable, try again later",
        headers={"Retry-After": _RETRY_AFTER_S},
    )  # fmt: skip


def _error(problem: Problem) -> web.Response:
    headers = {**_NO_STORE, **problem.headers}
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="filterd"'
    return web.Response(
        body=msgspec.json.encode(ErrorAnswer(problem.error, problem.field)),
        status=problem.status,
        content_type=JSON,
        headers=headers,
    )
