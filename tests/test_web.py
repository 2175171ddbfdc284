"""The HTTP front end over a real listening socket, against a real Valkey/Redis server.

`HttpFrontEnd.start(("127.0.0.1", 0))` serves the site; aiohttp's client (and
headless Chromium for the confirmation page) talk to it over loopback:

- GET /unsubscribe/{token} shows a Chinese and English page whose button posts
  `List-Unsubscribe=One-Click`, and writes nothing;
- POST (urlencoded or multipart) records a refusal for the token's sender and
  channel, source "one-click", evidence with the client address, with an audit
  entry; a repeat is 200 again and changes nothing more;
- forged, altered, truncated or expired tokens are 400, unknown senders 404,
  other methods 405, bad bodies 400, huge bodies 413 -- and nothing is written;
- registry down: POST 503 with Retry-After (nothing acknowledged), /healthz 503;
  registry back: /healthz 200;
- /metrics shows the counters moving; no raw address reaches the logs or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from filterd import logs
from filterd.guard import Network
from filterd.identity import ConsumerHasher, consumer_hex
from filterd.metrics import Metrics
from filterd.model import Action, Channel, Fact, Kind, MessageClass, Reason
from filterd.normalize import normalize
from filterd.service import Service
from filterd.settings import LOOPBACK, ListenerLimits
from filterd.storage.port import AuditQuery
from filterd.storage.redis import RedisRegistry
from filterd.tokens import TokenKeys, derive_key, sender_table
from filterd.web import MAX_BODY_BYTES, TOO_MANY_CONNECTIONS, HttpFrontEnd, UnsubscribeSite
from tests.helpers import RedisProcess

SECRET = bytes.fromhex("5e" * 32)
EMAIL = "Jane.Doe@Example.com"
PHONE = "+8613800138000"
RAW_FORMS = (b"jane.doe@example.com", b"Jane.Doe", b"8613800138000", b"13800138000")
DAY = 86_400
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
URLENCODED = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=xx"}
FIELD_PART = b'--xx\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n'
FILE_PART = (
    b'--xx\r\nContent-Disposition: form-data; name="List-Unsubscribe"; filename="f.txt"\r\n'
    b"\r\nOne-Click\r\n"
)
FIXED_NOW = 1_749_988_800  # 2025-06-15T12:00:00Z
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@dataclass
class Site:
    """A running HTTP front end, its service and registry, and a client session."""

    base: str
    service: Service
    registry: RedisRegistry
    keys: TokenKeys
    client: aiohttp.ClientSession
    redis_url: str

    def consumer(self, address: str = EMAIL) -> bytes:
        """The consumer id of `address` under the test secret."""
        return self.service.hasher.consumer_id(normalize(address))

    def token(self, address: str = EMAIL, sender: str = "acme", at: float | None = None) -> str:
        """A genuine token for `address` (its own channel) and `sender`."""
        normalized = normalize(address)
        when = int(time.time() if at is None else at)
        return self.keys.issue(sender, normalized.channel, self.consumer(address), when)

    def url(self, token: str) -> str:
        """The unsubscribe URL of `token`."""
        return f"{self.base}/unsubscribe/{token}"

    async def facts(self, address: str = EMAIL) -> list[Fact]:
        """Every fact on record for `address`."""
        return await self.registry.facts(self.consumer(address))

    async def key_count(self) -> int:
        """How many keys the registry server holds (0: nothing was ever written)."""
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            return int(await client.dbsize())
        finally:
            await client.aclose()

    async def metric(self, name: str, **labels: str) -> float | None:
        """A sample of GET /metrics, or None when absent."""
        async with self.client.get(f"{self.base}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for found in family.samples:
                if found.name == name and found.labels == labels:
                    return float(found.value)
        return None


@contextlib.asynccontextmanager
async def running(
    redis_url: str,
    clock: Callable[[], float] = time.time,
    max_age_s: int = 30 * DAY,
    *,
    limits: ListenerLimits | None = None,
    body_timeout_s: float = 30.0,
    status_networks: tuple[Network, ...] = LOOPBACK,
) -> AsyncIterator[Site]:
    """Serve the site on 127.0.0.1:<OS port> over the registry at `redis_url`."""
    registry = RedisRegistry.from_url(redis_url)
    service = Service(registry, ConsumerHasher(SECRET), request_ttl_s=3600, metrics=Metrics())
    keys = TokenKeys(derive_key(SECRET), max_age_s=max_age_s)
    site = UnsubscribeSite(
        service,
        keys,
        sender_table(["acme", "beta"]),
        clock=clock,
        status_networks=status_networks,
    )
    front_end = HttpFrontEnd(site, limits, body_timeout_s=body_timeout_s)
    server = await front_end.start(("127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as client:
            yield Site(f"http://127.0.0.1:{port}", service, registry, keys, client, redis_url)
    finally:
        server.close()
        await front_end.close()
        await service.close()
        await registry.close()


def serve(server: RedisProcess, scenario: Callable[[Site], Any], **options: Any) -> None:
    """Run `scenario(site)` on a fresh event loop with a site over `server`."""

    async def main() -> None:
        async with running(server.url, **options) as site:
            await scenario(site)

    asyncio.run(main())


async def post(site: Site, url: str, **kw: Any) -> tuple[int, str]:
    """POST to `url`; (status, body text)."""
    async with site.client.post(url, allow_redirects=False, **kw) as response:
        return response.status, await response.text()


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every JSON log line written meanwhile, at INFO and above."""
    stream = io.StringIO()
    logs.configure(stream, "INFO")
    try:
        yield stream
    finally:
        logs.configure(sys.stderr, "WARNING")


# ---- GET: the confirmation page ---------------------------------------------------


def test_get_shows_confirm_page_and_writes_nothing(valkey_server: RedisProcess) -> None:
    """GET answers a Chinese + English page with a form posting List-Unsubscribe=One-Click
    (button id "confirm"), sets no cookie, is not cached, and writes nothing."""

    async def scenario(site: Site) -> None:
        async with site.client.get(site.url(site.token())) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.charset == "utf-8"
            assert "Set-Cookie" not in response.headers
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["Server"] == "filterd"
            assert "form-action 'self'" in response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "退订" in page
        assert "Unsubscribe" in page
        assert "<b>acme</b>" in page
        assert '<form method="post">' in page
        assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
        assert 'id="confirm"' in page
        assert "<script" not in page
        assert await site.facts() == []
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


def test_get_with_bad_token_is_400(valkey_server: RedisProcess) -> None:
    """GET with an altered token answers 400 (no confirm button); unknown sender 404."""

    async def scenario(site: Site) -> None:
        token = site.token()
        altered = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
        async with site.client.get(site.url(altered)) as response:
            assert response.status == 400
            assert 'id="confirm"' not in await response.text()
        async with site.client.get(site.url(site.token(sender="gamma"))) as response:
            assert response.status == 404
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


# ---- POST: one-click ------------------------------------------------------------------


def test_post_records_refusal_with_evidence_and_audit(valkey_server: RedisProcess) -> None:
    """POST List-Unsubscribe=One-Click answers 200 (no redirect) after recording a refusal
    for the token's sender and channel: source one-click, evidence naming the client
    address; the audit log has the refusal; a commercial email from that sender now drops."""

    async def scenario(site: Site) -> None:
        status, page = await post(site, site.url(site.token(at=FIXED_NOW)), data=ONE_CLICK)
        assert status == 200
        assert "已退订" in page
        assert "Unsubscribed" in page
        [fact] = await site.facts()
        assert (fact.kind, fact.sender, fact.channel) == (Kind.REFUSAL, "acme", Channel.EMAIL)
        assert fact.source == "one-click"
        assert fact.evidence == "one-click POST at 2025-06-15T12:00:00+00:00 from 127.0.0.1"
        assert fact.at_ms == FIXED_NOW * 1000
        [entry] = await site.registry.read_audit(AuditQuery(limit=10))
        assert (entry.event, entry.sender, entry.channel) == ("refusal", "acme", "email")
        assert (entry.source, entry.origin) == ("one-click", "one-click")
        assert entry.consumer == consumer_hex(site.consumer())
        [decision] = await site.service.screen(
            "acme", MessageClass.COMMERCIAL, [normalize(EMAIL)], origin="test"
        )
        assert (decision.action, decision.reason) == (Action.DROP, Reason.REFUSED)

    serve(valkey_server, scenario, clock=lambda: FIXED_NOW)


def test_post_multipart_form_is_accepted(valkey_server: RedisProcess) -> None:
    """The one-click form sent as multipart/form-data is accepted like the urlencoded one."""

    async def scenario(site: Site) -> None:
        form = aiohttp.FormData(ONE_CLICK, default_to_multipart=True)
        async with site.client.post(site.url(site.token()), data=form) as response:
            assert response.request_info.headers["Content-Type"].startswith("multipart/form-data")
            assert response.status == 200
        assert [f.source for f in await site.facts()] == ["one-click"]

    serve(valkey_server, scenario)


def test_post_sms_token_refuses_the_sms_channel_only(valkey_server: RedisProcess) -> None:
    """A token issued for a phone number refuses that sender on the sms channel."""

    async def scenario(site: Site) -> None:
        status, _ = await post(site, site.url(site.token(PHONE, sender="beta")), data=ONE_CLICK)
        assert status == 200
        [fact] = await site.facts(PHONE)
        assert (fact.sender, fact.channel) == ("beta", Channel.SMS)

    serve(valkey_server, scenario)


def test_repeat_post_is_idempotent(valkey_server: RedisProcess) -> None:
    """Posting the same URL again answers 200 and leaves the consumer refused by one fact."""

    async def scenario(site: Site) -> None:
        url = site.url(site.token())
        for _ in range(3):
            assert (await post(site, url, data=ONE_CLICK))[0] == 200
        facts = await site.facts()
        assert [(f.kind, f.sender, f.channel) for f in facts] == [
            (Kind.REFUSAL, "acme", Channel.EMAIL)
        ]
        [decision] = await site.service.screen(
            "acme", MessageClass.COMMERCIAL, [normalize(EMAIL)], origin="test"
        )
        assert decision.reason is Reason.REFUSED

    serve(valkey_server, scenario)


def test_refusal_applies_to_the_token_sender_only(valkey_server: RedisProcess) -> None:
    """A one-click refusal to acme leaves beta's consent for the same consumer intact."""

    async def scenario(site: Site) -> None:
        assert (await post(site, site.url(site.token()), data=ONE_CLICK))[0] == 200
        decisions = await site.service.screen(
            "beta", MessageClass.COMMERCIAL, [normalize(EMAIL)], origin="test"
        )
        assert decisions[0].reason is Reason.NO_CONSENT  # not refused: scope is acme

    serve(valkey_server, scenario)


# ---- POST: refused requests write nothing --------------------------------------------


def altered_tokens(token: str) -> list[str]:
    """A forged, a flipped, a truncated, an extended and a non-base64 variant."""
    flipped = token[:20] + ("B" if token[20] != "B" else "C") + token[21:]
    other_key = TokenKeys(derive_key(b"an attacker's own secret, 32 bytes+"), max_age_s=DAY)
    forged = other_key.issue("acme", Channel.EMAIL, b"\x01" * 10, int(time.time()))
    return [flipped, token[:-1], token + "A", token[:42] + "=", forged, "x" * 43, "abc"]


def test_forged_or_altered_token_is_400_and_writes_nothing(valkey_server: RedisProcess) -> None:
    """Forged, altered, truncated, extended or non-base64 tokens answer 400; no key is
    written to the registry."""

    async def scenario(site: Site) -> None:
        for bad in altered_tokens(site.token()):
            status, _ = await post(site, site.url(bad), data=ONE_CLICK)
            assert status == 400, bad
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


def test_unknown_sender_is_404_and_writes_nothing(valkey_server: RedisProcess) -> None:
    """A genuine token for a sender not in the config answers 404 and writes nothing."""

    async def scenario(site: Site) -> None:
        status, _ = await post(site, site.url(site.token(sender="gamma")), data=ONE_CLICK)
        assert status == 404
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


def test_expired_token_is_400(valkey_server: RedisProcess) -> None:
    """A token older than max_age is 400 for GET and POST; nothing is written."""
    issued = time.time()

    async def scenario(site: Site) -> None:
        url = site.url(site.token(at=issued))
        assert (await post(site, url, data=ONE_CLICK))[0] == 400
        async with site.client.get(url) as response:
            assert response.status == 400
            assert "expired" in await response.text()
        assert await site.key_count() == 0

    serve(valkey_server, scenario, clock=lambda: issued + 2 * DAY, max_age_s=DAY)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(valkey_server: RedisProcess, method: str) -> None:
    """Methods other than GET/HEAD/POST on an unsubscribe URL answer 405 with Allow."""

    async def scenario(site: Site) -> None:
        async with site.client.request(method, site.url(site.token()), data=ONE_CLICK) as reply:
            assert reply.status == 405
            assert "POST" in reply.headers["Allow"]
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


BAD_BODIES = [
    pytest.param({}, id="no-body"),
    pytest.param(
        {"data": b"", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        id="empty-form",
    ),
    pytest.param({"data": {"List-Unsubscribe": "Yes"}}, id="wrong-value"),
    pytest.param({"data": {"Unsubscribe": "One-Click"}}, id="wrong-field"),
    pytest.param({"data": {"list-unsubscribe": "one-click"}}, id="wrong-case"),
    pytest.param({"json": ONE_CLICK}, id="json-body"),
    pytest.param(
        {"data": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "text/plain"}},
        id="text-plain",
    ),
    pytest.param(
        {"data": b"\xff\xfe", "headers": {"Content-Type": "multipart/form-data"}},
        id="multipart-without-boundary",
    ),
    pytest.param({"data": b"List-Unsubscribe=%FF%FE", "headers": URLENCODED}, id="bad-utf8"),
    # the following four answered 500 before web.py caught every unreadable-form error
    pytest.param(
        {
            "data": b"List-Unsubscribe=One-Click",
            "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=klingon"},
        },
        id="unknown-charset",
    ),
    pytest.param({"data": b"--xx\r\ngarbage", "headers": MULTIPART}, id="multipart-cut-short"),
    pytest.param(
        {
            "data": b'--xx\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n'
            b"Content-Type: text/plain; charset=klingon\r\n\r\nOne-Click\r\n--xx--\r\n",
            "headers": MULTIPART,
        },
        id="multipart-part-unknown-charset",
    ),
    pytest.param(
        {
            "data": b"List-Unsubscribe=One-Click",
            "headers": {**URLENCODED, "Content-Encoding": "gzip"},
        },
        id="undecodable-content-encoding",
    ),
    pytest.param(
        {
            "data": FILE_PART + b'--xx\r\nContent-Disposition: form-data; name="x"\r\n'
            b"Content-Type: text/plain; charset=klingon\r\n\r\nv\r\n--xx--\r\n",
            "headers": MULTIPART,
        },
        id="file-part-then-bad-part",  # leaked the file part's temporary file
    ),
    pytest.param({"data": FILE_PART + b"--xx--\r\n", "headers": MULTIPART}, id="file-part-only"),
    pytest.param(
        {
            "data": FIELD_PART.replace(
                b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            )
            + b"--xx--\r\n",
            "headers": MULTIPART,
        },
        id="field-transfer-encoded",
    ),
    pytest.param(
        {
            "data": FIELD_PART.replace(b"\r\n\r\n", b"\r\nContent-Type: application/json\r\n\r\n")
            + b"--xx--\r\n",
            "headers": MULTIPART,
        },
        id="field-not-text",
    ),
]


def test_multipart_field_with_a_file_part_is_accepted(valkey_server: RedisProcess) -> None:
    """A multipart form with a file part besides the one-click field is accepted (the file
    is read and dropped, never spooled to disk)."""

    async def scenario(site: Site) -> None:
        body = FILE_PART + FIELD_PART + b"--xx--\r\n"
        status, _ = await post(site, site.url(site.token()), data=body, headers=MULTIPART)
        assert status == 200
        assert [f.source for f in await site.facts()] == ["one-click"]

    serve(valkey_server, scenario)


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_body_is_400_and_writes_nothing(
    valkey_server: RedisProcess, body: dict[str, Any]
) -> None:
    """A POST without the one-click form (missing body, other field or value, JSON, plain
    text, broken multipart) answers 400 and writes nothing."""

    async def scenario(site: Site) -> None:
        status, _ = await post(site, site.url(site.token()), **body)
        assert status == 400
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


CHARSETS = st.one_of(
    st.sampled_from(["utf-8", "latin-1", "utf-16", "ascii", "klingon", ""]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", max_size=12),
)
CONTENT_TYPES = st.one_of(
    st.just("application/x-www-form-urlencoded"),
    st.builds("application/x-www-form-urlencoded; charset={}".format, CHARSETS),
    st.just("multipart/form-data; boundary=xx"),
    st.just("multipart/form-data"),
)
PART_HEADERS = st.lists(
    st.one_of(
        st.just('Content-Disposition: form-data; name="List-Unsubscribe"'),
        st.just('Content-Disposition: form-data; name="List-Unsubscribe"; filename="f"'),
        st.builds("Content-Type: text/plain; charset={}".format, CHARSETS),
        st.sampled_from(["Content-Transfer-Encoding: base64", "Content-Encoding: gzip",
                         "Content-Encoding: deflate", "Content-Length: 3", "X: y"]),
        st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=30),
    ),
    max_size=4,
)  # fmt: skip
MULTIPART_BODIES = st.builds(
    lambda headers, value, end: (
        b"--xx\r\n" + "\r\n".join(headers).encode("latin-1") + b"\r\n\r\n" + value + end
    ),
    PART_HEADERS,
    st.one_of(st.just(b"One-Click"), st.binary(max_size=40)),
    st.sampled_from([b"\r\n--xx--\r\n", b"\r\n--xx", b"", b"\r\n--yy--\r\n"]),
)
FORM_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: b"List-Unsubscribe=" + v, st.binary(max_size=30)),
    MULTIPART_BODIES,
)


def test_any_form_body_is_200_400_or_413(valkey_server: RedisProcess) -> None:
    """Fuzz: whatever bytes a POST carries under a form content type (random, a near-miss
    urlencoded form, multipart with odd part headers, charsets or a cut-short end), the
    answer is 200, 400 or 413 -- never a 500."""
    with asyncio.Runner() as runner:
        context = running(valkey_server.url)
        site = runner.run(context.__aenter__())
        try:
            url = site.url(site.token())

            @settings(max_examples=150, deadline=None)
            @given(body=FORM_BODIES, content_type=CONTENT_TYPES)
            def check(body: bytes, content_type: str) -> None:
                headers = {"Content-Type": content_type}
                status, _ = runner.run(post(site, url, data=body, headers=headers))
                assert status in (200, 400, 413), (body, content_type)

            check()
        finally:
            runner.run(context.__aexit__(None, None, None))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_body_is_413_and_writes_nothing(valkey_server: RedisProcess, chunked: bool) -> None:
    """A form body over MAX_BODY_BYTES, urlencoded or multipart, declared or streamed
    chunked, answers 413."""

    async def scenario(site: Site) -> None:
        body = b"List-Unsubscribe=One-Click&pad=" + b"x" * (MAX_BODY_BYTES * 4)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}

        async def stream() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        data: Any = stream() if chunked else body
        status, _ = await post(site, site.url(site.token()), data=data, headers=headers)
        assert status == 413
        padding = b"x" * (MAX_BODY_BYTES * 4)
        form = FIELD_PART + b'--xx\r\nContent-Disposition: form-data; name="pad"\r\n\r\n'
        body = form + padding + b"\r\n--xx--\r\n"
        data = stream() if chunked else body
        status, _ = await post(site, site.url(site.token()), data=data, headers=MULTIPART)
        assert status == 413
        assert await site.key_count() == 0

    serve(valkey_server, scenario)


# ---- registry outage ----------------------------------------------------------------


def test_registry_down_is_503_and_nothing_acknowledged(private_server: RedisProcess) -> None:
    """With the registry stopped, POST answers 503 with Retry-After and no refusal exists
    afterwards; /healthz answers 503 with a JSON body; once the server is back /healthz
    is 200 and the same POST records the refusal."""

    async def scenario(site: Site) -> None:
        async with site.client.get(f"{site.base}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "registry": "ok"}
        url = site.url(site.token())
        await asyncio.to_thread(private_server.stop)

        async with site.client.post(url, data=ONE_CLICK) as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) > 0
            assert "Unsubscribed" not in await response.text()
        async with site.client.get(f"{site.base}/healthz") as response:
            assert response.status == 503
            health = await response.json()
            # no error text: it would name the registry's host and port (or socket path)
            assert health == {"status": "unavailable", "registry": "unreachable"}
        assert await site.metric("filterd_registry_errors_total", operation="record") == 1
        assert await site.metric("filterd_optouts_total", origin="one-click") is None

        await asyncio.to_thread(private_server.start)
        assert await site.facts() == []  # the 503 acknowledged nothing, and stored nothing
        async with site.client.get(f"{site.base}/healthz") as response:
            assert response.status == 200
        assert (await post(site, url, data=ONE_CLICK))[0] == 200
        assert [f.source for f in await site.facts()] == ["one-click"]

    serve(private_server, scenario)


# ---- metrics ----------------------------------------------------------------------


def test_metrics_move(valkey_server: RedisProcess) -> None:
    """/metrics is Prometheus text; a screen moves the decision counter and the lookup
    latency histogram; a one-click POST moves opt-outs by origin and the record histogram."""

    async def scenario(site: Site) -> None:
        async with site.client.get(f"{site.base}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
        drop = {"front_end": "smtp", "decision": "drop", "reason": "no_consent"}
        assert await site.metric("filterd_decisions_total", **drop) is None
        await site.service.screen("acme", MessageClass.COMMERCIAL, [normalize(EMAIL)],
                                  origin="smtp")  # fmt: skip
        assert await site.metric("filterd_decisions_total", **drop) == 1
        assert await site.metric("filterd_registry_seconds_count", operation="lookup") == 1
        assert (await post(site, site.url(site.token()), data=ONE_CLICK))[0] == 200
        assert await site.metric("filterd_optouts_total", origin="one-click") == 1
        assert await site.metric("filterd_registry_seconds_count", operation="record") == 1
        await site.service.screen("acme", MessageClass.COMMERCIAL, [normalize(EMAIL)],
                                  origin="smtp")  # fmt: skip
        refused = {"front_end": "smtp", "decision": "drop", "reason": "refused"}
        assert await site.metric("filterd_decisions_total", **refused) == 1
        assert await site.metric("filterd_registry_seconds_count", operation="lookup") == 2

    serve(valkey_server, scenario)


# ---- privacy ----------------------------------------------------------------------


def test_no_raw_address_or_token_in_logs_or_redis(valkey_server: RedisProcess) -> None:
    """After GET, POST and a screen, neither the logs nor any Redis key, hash field, value
    or stream entry holds a raw address; the logs do not hold the token (a capability)."""

    async def scenario(site: Site) -> None:
        token = site.token()
        async with site.client.get(site.url(token)) as response:
            assert response.status == 200
        assert (await post(site, site.url(token), data=ONE_CLICK))[0] == 200
        assert (await post(site, site.url(site.token(PHONE)), data=ONE_CLICK))[0] == 200
        await site.service.screen("acme", MessageClass.COMMERCIAL,
                                  [normalize(EMAIL), normalize(PHONE)], origin="smtp")  # fmt: skip
        await site.service.flush_audit()
        client = aioredis.Redis.from_url(site.redis_url)
        blob: list[Any] = []
        try:
            async for key in client.scan_iter():
                blob.append(key)
                kind = await client.type(key)
                if kind == b"hash":
                    blob += [b for pair in (await client.hgetall(key)).items() for b in pair]
                elif kind == b"stream":
                    entries: Any = await client.xrange(key)
                    blob += [b for _, entry in entries for pair in entry.items() for b in pair]
                elif kind == b"string":
                    blob.append(await client.get(key) or b"")
        finally:
            await client.aclose()
        stored = b"\n".join(blob)
        assert b"one-click" in stored
        for raw in RAW_FORMS:
            assert raw not in stored
        written = log.getvalue()
        assert '"event": "fact"' in written or '"event":"fact"' in written
        for raw in RAW_FORMS:
            assert raw.decode() not in written
        assert token not in written

    with captured_logs() as log:
        serve(valkey_server, scenario)
    events = [json.loads(line)["event"] for line in log.getvalue().splitlines()]
    assert events.count("fact") == 2


# ---- headless browser ------------------------------------------------------------


class Browser:
    """Headless Chromium driven by chromedriver (blocking calls: run them in a thread)."""

    def __init__(self, profile: Path) -> None:
        from selenium import webdriver  # noqa: PLC0415 - only the browser test needs it
        from selenium.webdriver.chrome.service import Service as DriverService  # noqa: PLC0415

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", f"--user-data-dir={profile}"):  # fmt: skip
            options.add_argument(argument)
        self.driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))

    def open(self, url: str) -> str:
        """Load `url`; the text of its #confirm button."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        self.driver.get(url)
        return str(self.driver.find_element(By.ID, "confirm").text)

    def confirm(self) -> tuple[str, str]:
        """Click #confirm and wait for the answer page; (title, body text)."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415
        from selenium.webdriver.support import expected_conditions  # noqa: PLC0415
        from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

        self.driver.find_element(By.ID, "confirm").click()
        WebDriverWait(self.driver, 30).until(expected_conditions.title_contains("Unsubscribed"))
        return str(self.driver.title), str(self.driver.find_element(By.TAG_NAME, "body").text)

    def quit(self) -> None:
        """End the browser and chromedriver."""
        self.driver.quit()


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="headless browser test needs Debian's chromium and chromium-driver "
    "(/usr/bin/chromium, /usr/bin/chromedriver)",
)
def test_browser_confirm_button_records_refusal(
    valkey_server: RedisProcess, tmp_path: Path
) -> None:
    """In headless Chromium, the GET page's confirm button posts the form: the browser
    shows the 200 "Unsubscribed" page and the refusal is in the registry; the page load
    alone wrote nothing."""

    async def scenario(site: Site) -> None:
        browser = await asyncio.to_thread(Browser, tmp_path / "profile")
        try:
            button = await asyncio.to_thread(browser.open, site.url(site.token()))
            assert "Unsubscribe" in button
            assert await site.key_count() == 0
            title, text = await asyncio.to_thread(browser.confirm)
        finally:
            await asyncio.to_thread(browser.quit)
        assert title == "已退订 / Unsubscribed"
        assert "acme" in text
        [fact] = await site.facts()
        assert (fact.kind, fact.sender, fact.source) == (Kind.REFUSAL, "acme", "one-click")
        assert fact.evidence is not None
        assert "127.0.0.1" in fact.evidence

    serve(valkey_server, scenario)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /unsubscribe/jane@example.com\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /unsubscribe/jane@example.com HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /unsubscribe/jane@example.com" + b"A" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz?to=jane@example.com HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 200 + b"\r\n",
    ],
)
def test_unparsable_request_is_400_logged_at_info_without_its_bytes(
    valkey_server: RedisProcess, request_bytes: bytes
) -> None:
    """A request aiohttp cannot parse (bad byte in the path, bad Content-Length, an
    overlong request line, too many headers) is answered 400; the log gets one info line
    `http_bad_request` with the error's class and status, no traceback and none of the
    request's bytes (no address), not an error line; the site goes on serving."""

    async def scenario(site: Site) -> None:
        host, port = site.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_bytes)
        status_line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        assert status_line.split()[1] == b"400"
        async with site.client.get(f"{site.base}/healthz") as response:
            assert response.status == 200

    with captured_logs() as stream:
        serve(valkey_server, scenario)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [bad] = [line for line in lines if line["event"] == "http_bad_request"]
    assert (bad["level"], bad["status"]) == ("info", 400)
    assert bad["error"].isidentifier()
    assert "jane" not in stream.getvalue()
    assert not [line for line in lines if line["level"] in ("error", "critical")]


# ---- hostile peers: status networks, caps, deadlines ----------------------------------


def test_status_endpoints_only_to_status_networks(valkey_server: RedisProcess) -> None:
    """/metrics and /healthz answer 403 to a client outside http.status_networks (here
    loopback is outside); the unsubscribe pages are served to anyone all the same."""

    async def scenario(site: Site) -> None:
        for path in ("/metrics", "/healthz"):
            async with site.client.get(f"{site.base}{path}") as response:
                assert response.status == 403
                assert "Prometheus" not in await response.text()
        async with site.client.get(site.url(site.token())) as response:
            assert response.status == 200

    outside = (ipaddress.ip_network("10.9.9.0/24"),)
    serve(valkey_server, scenario, status_networks=outside)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before it closed the connection (waiting at most `seconds`)."""
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(4096):
            data += chunk
    return data


def test_connections_beyond_the_cap_get_503_and_are_closed(valkey_server: RedisProcess) -> None:
    """With max_connections_per_address = 2, a third connection from the same address
    gets the bare 503 and is closed; once one of the two closes, a new one is served."""

    async def scenario(site: Site) -> None:
        host, port = site.base.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        reader, writer = await asyncio.open_connection(host, int(port))
        assert await _closed_within(reader, 10) == TOO_MANY_CONNECTIONS
        writer.close()
        held[0][1].close()
        await held[0][1].wait_closed()
        for _ in range(100):  # the server sees the close a moment later
            async with aiohttp.ClientSession() as fresh, fresh.get(site.url(site.token())) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no place freed after a connection closed")
        held[1][1].close()

    limits = ListenerLimits(idle_timeout_s=10.0, max_connections=10, max_connections_per_address=2)
    serve(valkey_server, scenario, limits=limits)


@pytest.mark.parametrize(
    "opening",
    [
        b"",  # connects and says nothing
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # a head that never ends
    ],
)
def test_a_connection_without_a_complete_head_is_closed(
    valkey_server: RedisProcess, opening: bytes
) -> None:
    """A connection that does not complete a request head within idle_timeout is closed,
    also while it trickles header bytes (a slowloris)."""

    async def scenario(site: Site) -> None:
        host, port = site.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(opening)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(100):
                    await asyncio.sleep(0.2)
                    writer.write(b"X")

        dripping = asyncio.create_task(trickle()) if opening else None
        try:
            assert await _closed_within(reader, 15) == b""
        finally:
            if dripping is not None:
                dripping.cancel()
            writer.close()

    limits = ListenerLimits(idle_timeout_s=1.0)
    serve(valkey_server, scenario, limits=limits)


def test_a_body_that_does_not_arrive_is_cut_at_body_timeout(valkey_server: RedisProcess) -> None:
    """A POST whose announced body does not arrive within body_timeout is closed (the
    refusal is not recorded); a keep-alive connection idle after its answer is closed
    at idle_timeout."""

    async def scenario(site: Site) -> None:
        host, port = site.base.removeprefix("http://").split(":")
        path = site.url(site.token()).removeprefix(site.base)
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n"
        )
        writer.write(head.encode() + b"List-Unsub")
        assert await _closed_within(reader, 15) == b""
        writer.close()
        assert await site.facts() == []
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = await _closed_within(reader, 15)
        assert answered.startswith(b"HTTP/1.1 200")
        writer.close()

    limits = ListenerLimits(idle_timeout_s=1.0)
    serve(valkey_server, scenario, limits=limits, body_timeout_s=1.0)
