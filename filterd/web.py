"""HTTP front end: RFC 8058 one-click unsubscribe, `/healthz` and `/metrics` (aiohttp).

- `POST /unsubscribe/{token}` with the form field `List-Unsubscribe=One-Click`
  (urlencoded or multipart) records a refusal for the token's sender, channel
  and consumer, durably, then answers 200 (no redirect). Posting again
  changes nothing more. A registry outage answers 503 with Retry-After, so
  a mailbox provider retries.
- `GET /unsubscribe/{token}` shows a page (Chinese and English) whose button
  posts that form; the GET itself writes nothing. No cookies, no script.
- A forged, altered or expired token: 400; a token for a sender not in the
  config: 404. A POST body that is not the one-click form (another content
  type, field or value; undecodable, malformed multipart, an unknown
  charset): 400; over MAX_BODY_BYTES: 413. Nothing is written for any of these.
- `GET /healthz`: 200 when the registry answers a PING, else 503; JSON body
  that never names the registry's host. `GET /metrics`: the Prometheus text
  exposition. Both only to clients in `http.status_networks` (default
  loopback); others get 403.

Against hostile peers (SPEC §11): the listener takes at most `max_connections`
(`max_connections_per_address` from one address); beyond them a connection
gets a bare 503 and is closed. A connection must deliver a complete request
head within `idle_timeout` (10 s; from its opening, or from the end of its
previous answer) and then its body and the answer must be done within
`body_timeout` (30 s), else it is closed: one timer per listener
(`filterd.guard.ConnectionTable`) enforces both.

The access log is off: an unsubscribe URL is a capability and stays out of
the logs; the refusal itself is logged and audited by the service.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from filterd.errors import RegistryUnavailable
from filterd.guard import ACCEPT_BATCH, ConnectionTable, Network, Ticket, in_networks, widen_queue
from filterd.logs import get_logger
from filterd.metrics import CONTENT_TYPE
from filterd.service import Service
from filterd.settings import HTTP_IDLE_S, LOOPBACK, ListenerLimits
from filterd.tokens import TokenError, TokenKeys, Unsubscribe

log = get_logger("http")

MAX_BODY_BYTES = 16 * 1024
"""A one-click body is 26 bytes; anything over this is refused with 413."""
_HEALTH_TIMEOUT_S = 2.0
_RETRY_AFTER_S = "30"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNREADABLE_FORM = (
    ValueError,  # bad percent-encoding or UTF-8, a multipart body without a boundary
    LookupError,  # a charset Python does not know (whole body or one multipart part)
    HttpProcessingError,  # malformed multipart part headers, undecodable Content-Encoding
    web.RequestPayloadError,  # the body stream itself failed (bad encoding, cut short)
)
_PLAIN_TRANSFER = ("", "7bit", "8bit", "binary")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}
_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1.1rem;padding:.6rem 1.2rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


class UnsubscribeSite:
    """The request handlers, over one Service and one set of token keys."""

    def __init__(
        self,
        service: Service,
        tokens: TokenKeys,
        senders: Mapping[bytes, str],
        *,
        clock: Callable[[], float] = time.time,
        status_networks: Iterable[Network] = LOOPBACK,
    ) -> None:
        self.service = service
        self.tokens = tokens
        self.senders = senders
        self.status_networks = tuple(status_networks)
        self._clock = clock

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = guarded_application(MAX_BODY_BYTES)
        app.router.add_get("/unsubscribe/{token}", self.confirm_page)
        app.router.add_post("/unsubscribe/{token}", self.unsubscribe)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _verify(self, request: web.Request) -> Unsubscribe | web.Response:
        try:
            return self.tokens.verify(request.match_info["token"], self.senders, int(self._clock()))
        except TokenError as exc:
            return _error(exc.status, exc.reason)

    async def confirm_page(self, request: web.Request) -> web.Response:
        """GET: a page whose button posts the one-click form; writes nothing."""
        wanted = self._verify(request)
        if isinstance(wanted, web.Response):
            return wanted
        sender = html.escape(wanted.sender)
        body = (
            f"<p>确认不再接收 <b>{sender}</b> 的商业信息？</p>"
            f"<p>Stop commercial messages from <b>{sender}</b>?</p>"
            '<form method="post">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit" id="confirm">确认退订 / Unsubscribe</button>'
            "</form>"
        )
        return _page(200, "退订 / Unsubscribe", body)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """POST: record the refusal durably, then 200."""
        wanted = self._verify(request)
        if isinstance(wanted, web.Response):
            return wanted
        refused = await _check_form(request)
        if refused is not None:
            return refused
        fact = wanted.refusal(
            source="one-click", how="one-click POST", peer=request.remote, now_s=self._clock()
        )
        try:
            await self.service.record_consumer(wanted.consumer, fact, origin="one-click")
        except RegistryUnavailable as exc:
            log.warning("unsubscribe_deferred", error=str(exc), sender=wanted.sender)
            response = _page(503, "请稍后再试 / Try again later", "<p>503</p>")
            response.headers["Retry-After"] = _RETRY_AFTER_S
            return response
        body = (
            f"<p>已退订：您将不再收到 <b>{html.escape(wanted.sender)}</b> 的商业信息。</p>"
            f"<p>Unsubscribed: no more commercial messages from "
            f"<b>{html.escape(wanted.sender)}</b>.</p>"
        )
        return _page(200, "已退订 / Unsubscribed", body)

    def _status_refused(self, request: web.Request) -> web.Response | None:
        """403 for a client outside `http.status_networks`, else None."""
        if in_networks(request.remote or "", self.status_networks):
            return None
        return web.json_response(
            {"error": "served only to http.status_networks"},
            status=403,
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        """200 when the registry answers a PING in time, else 503 (naming no host)."""
        refused = self._status_refused(request)
        if refused is not None:
            return refused
        try:
            await asyncio.wait_for(self.service.registry.ping(), _HEALTH_TIMEOUT_S)
        except (RegistryUnavailable, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            return web.json_response(
                {"status": "unavailable", "registry": reason},
                status=503,
                headers={"Cache-Control": "no-store"},
            )
        return web.json_response(
            {"status": "ok", "registry": "ok"}, headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """The Prometheus text exposition."""
        refused = self._status_refused(request)
        if refused is not None:
            return refused
        response = web.Response(body=self.service.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response


def guarded_application(max_body_bytes: int) -> web.Application:
    """An aiohttp application for `HttpFrontEnd`: bodies up to `max_body_bytes`, the
    body deadline of SPEC §11 applied to every request, `Server: filterd`."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_deadlines])
    app.on_response_prepare.append(_name_server)
    return app


def _page(status: int, title: str, body: str) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers=_SECURITY_HEADERS,
    )


async def _name_server(request: web.Request, response: web.StreamResponse) -> None:
    """Say `filterd`, not the library and Python versions, in the Server header."""
    response.headers["Server"] = "filterd"


async def _check_form(request: web.Request) -> web.Response | None:
    """None when the body is the RFC 8058 one-click form, else the error to answer."""
    if request.content_type not in _FORM_TYPES:
        return _error(400, "the body must be a form (List-Unsubscribe=One-Click)")
    value: object
    try:
        if request.content_type == "multipart/form-data":
            value = await _multipart_field(request, "List-Unsubscribe")
        else:
            value = (await request.post()).get("List-Unsubscribe")
    except (web.HTTPRequestEntityTooLarge, _TooLarge):
        return _error(413, "request body too large")
    except _UNREADABLE_FORM:
        return _error(400, "unreadable form body")
    if value != "One-Click":
        return _error(400, "the form must carry List-Unsubscribe=One-Click")
    return None


class _TooLarge(Exception):
    """The request body passed MAX_BODY_BYTES."""


async def _multipart_field(request: web.Request, name: str) -> str | None:
    """The first plain text field `name` of a multipart/form-data body, or None.

    Not `request.post()`: that spools every file part to a temporary file and
    leaks those files when a later part is malformed. Here every other part,
    and any file part (never the field), is read into memory and dropped;
    the whole body, part headers included, stays within MAX_BODY_BYTES.
    """
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _TooLarge
    reader = await request.multipart()
    value: str | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            return None  # a nested multipart is no form field
        data = bytearray()
        while chunk := await part.read_chunk():
            if request.content.total_bytes > MAX_BODY_BYTES:
                raise _TooLarge
            data += chunk
        if value is not None or part.name != name or part.filename is not None:
            continue
        encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").lower()
        if encoding not in _PLAIN_TRANSFER or hdrs.CONTENT_ENCODING in part.headers:
            return None  # RFC 7578: a form field is sent as it is
        content_type = part.headers.get(hdrs.CONTENT_TYPE, "text/plain")
        if not content_type.lower().startswith("text/"):
            return None
        value = bytes(data).decode(part.get_charset(default="utf-8"))
    if request.content.total_bytes > MAX_BODY_BYTES:
        raise _TooLarge
    return value


def _error(status: int, reason: str) -> web.Response:
    return _page(status, str(status), f"<p>{html.escape(reason)}</p>")


class _BadRequests(logging.Filter):
    """aiohttp answers a request it cannot parse with 400 and logs it at ERROR, with a
    traceback and the offending bytes (which may hold an address). That is the client's
    bad input, not filterd's fault: logged at INFO as `http_bad_request` with the error's
    class and status only."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite aiohttp's record of a client's unparsable request; keep the others."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= (error.code or 0) < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "http_bad_request", ()
            record.exc_info, record.exc_text = None, None
            record.error, record.status = type(error).__name__, error.code
        return True


TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: filterd\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 38\r\nRetry-After: 10\r\nConnection: close\r\n\r\n"
    b"too many connections, try again later\n"
)
"""The whole answer of a connection beyond the listener's caps (then closed)."""


@web.middleware
async def _deadlines(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The head is in: body and answer within body_timeout; then the next head
    within idle_timeout."""
    connection = request.protocol
    if not isinstance(connection, _GuardedHandler) or connection.ticket is None:
        return await handler(request)
    ticket = connection.ticket
    ticket.extend(connection.body_timeout_s)
    try:
        return await handler(request)
    finally:
        ticket.extend()


class _GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, admitted within the listener's caps and deadlines."""

    def __init__(
        self, manager: web.Server, table: ConnectionTable, body_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.table = table
        self.body_timeout_s = body_timeout_s
        self.ticket: Ticket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit (the first head due within idle_timeout), or answer 503 and close."""
        self.ticket = self.table.admit_transport(
            transport, refusal=TOO_MANY_CONNECTIONS, close=self.force_close
        )
        if self.ticket is not None:
            super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """aiohttp's parser, for an admitted connection only."""
        if self.ticket is not None:
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Free the connection's place (a refused one never had aiohttp's state)."""
        if self.ticket is None:
            return
        self.ticket.release()
        super().connection_lost(exc)


class Site(Protocol):
    """What `HttpFrontEnd` serves: an application made by `guarded_application`."""

    def application(self) -> web.Application:
        """The aiohttp application with every route."""


class HttpFrontEnd:
    """A site served on listening sockets: `start`, then `close` to drain."""

    def __init__(
        self,
        site: Site,
        limits: ListenerLimits | None = None,
        *,
        body_timeout_s: float = 30.0,
        name: str = "http",
    ) -> None:
        self._runner = web.AppRunner(site.application(), handle_signals=False, access_log=None)
        self.table = ConnectionTable(name, limits or ListenerLimits(HTTP_IDLE_S))
        self.body_timeout_s = body_timeout_s
        server_log = logging.getLogger("aiohttp.server")
        if not any(isinstance(f, _BadRequests) for f in server_log.filters):
            server_log.addFilter(_BadRequests())

    async def start(self, listen: tuple[str, int]) -> asyncio.Server:
        """Set the site up and listen on `listen`; return the server (for its address)."""
        await self._runner.setup()
        manager = self._runner.server
        if manager is None:  # setup() always makes it
            raise RuntimeError("aiohttp runner has no request handler")
        loop = asyncio.get_running_loop()

        def connection() -> _GuardedHandler:
            return _GuardedHandler(
                manager, self.table, self.body_timeout_s, loop=loop, access_log=None
            )

        try:
            server = await loop.create_server(
                connection, listen[0], listen[1], backlog=ACCEPT_BATCH
            )
            widen_queue(server)
        except OSError:
            await self._runner.cleanup()
            raise
        self.table.start()
        return server

    async def close(self) -> None:
        """Finish the requests in flight (bounded by aiohttp's shutdown timeout), then clean up."""
        self.table.stop()
        await self._runner.shutdown()
        await self._runner.cleanup()
