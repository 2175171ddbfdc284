"""Each front end's life in `filterd serve`: listen (a bind failure names its key),
serve until `stop`, then drain: the SMTP relay and its unsubscribe listener, the
Postfix policy service, the HTTP front end and the SMPP relay with its carrier link
and (with workers) its hub link."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from typing import Any

from filterd import logs
from filterd.daemon.live import Live
from filterd.errors import ConfigError
from filterd.keywords import Keywords
from filterd.policy_service import start_policy_server
from filterd.settings import HttpSettings, PolicySettings, SmppSettings, SmtpSettings
from filterd.smpp.carrier import CarrierClient
from filterd.smpp.hub import HubClient
from filterd.smpp.server import SmppRelay
from filterd.smtp.inbound import RelayHandler, start_smtp_server
from filterd.smtp.oneclick import OneClick
from filterd.smtp.outbound import UpstreamPool
from filterd.web import HttpFrontEnd, UnsubscribeSite


async def open_listener(
    live: Live,
    name: str,
    listen: tuple[str, int],
    starting: Coroutine[Any, Any, asyncio.Server],
) -> asyncio.Server:
    """Await a front end's listener; a bind failure names the key; log the bound address.

    A listener that cannot bind stops the daemon: `stop` is set (so that every task
    ends, even one whose cancellation got lost: redis-py on Python 3.11 can swallow
    one) and the OSError goes to the task group. When the group cancels this task
    because another front end failed first, the bind still runs to its end, so that
    every listener that cannot bind is named, not only the first: its failure is
    raised as above; a listener that did bind is closed and the cancellation goes on.
    """
    key = "smtp.unsubscribe_listen" if name == "smtp.unsubscribe" else f"{name}.listen"
    attempt = asyncio.ensure_future(starting)
    try:
        try:
            server = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            server = await attempt  # a local bind: it ends at once
            server.close()
            raise
    except OSError as exc:
        live.stop.set()
        raise OSError(f"{key} {listen[0]}:{listen[1]}: {exc.strerror}") from exc
    bound = server.sockets[0].getsockname()
    logs.get_logger(name).info("listening", front_end=name, host=bound[0], port=bound[1])
    live.listened()
    return server


async def run_smtp(
    live: Live,
    smtp: SmtpSettings,
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    intake: tuple[str, int] | None = None,
) -> None:
    """The SMTP relay (and, with `intake`, the unsubscribe listener) until `stop`;
    then drain: no new connections, finish transactions."""
    log = logs.get_logger("smtp")
    host, port = upstream
    hostname = smtp.hostname or socket.gethostname()
    pool = UpstreamPool(host, port, tls=smtp.upstream_tls, local_hostname=hostname)
    oneclick = _oneclick(live, smtp)
    handlers = [
        RelayHandler(
            smtp,
            live.runtime.service,
            live.accounts,
            pool,
            default_region=live.settings.registry.default_region,
            oneclick=oneclick,
            intake_only=only,
            gate=live.gate,
        )
        for only in ([False, True] if intake is not None else [False])
    ]
    servers = [
        await open_listener(
            live,
            "smtp.unsubscribe" if handler.intake_only else "smtp",
            where,
            start_smtp_server(smtp, where, handler, hostname=hostname),
        )
        for handler, where in zip(handlers, [listen, intake], strict=False)
        if where is not None
    ]
    try:
        await live.stop.wait()
    finally:
        for server in servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(h.drained() for h in handlers)),
                live.settings.daemon.drain_timeout_s,
            )
        for handler in handlers:
            handler.close_all()
        for server in servers:
            await server.wait_closed()
        await pool.close()
        log.info("drained", front_end="smtp")


def _oneclick(live: Live, smtp: SmtpSettings) -> OneClick | None:
    """Opt-out intake and signing for the SMTP relay, when configured ([http] needed)."""
    runtime, http = live.runtime, live.settings.http
    if http is None or runtime.tokens is None:
        return None
    if smtp.unsubscribe_domain is None and runtime.signer is None:
        return None
    return OneClick(
        runtime.service,
        runtime.tokens,
        runtime.senders,
        public_url=http.public_url,
        domain=smtp.unsubscribe_domain,
        signer=runtime.signer,
    )


async def run_policy(live: Live, policy: PolicySettings) -> None:
    """The Postfix policy service until `stop`; then finish the requests in flight."""
    log = logs.get_logger("policy")
    starting = start_policy_server(
        policy.listen,
        live.runtime.service,
        live.accounts,
        default_region=live.settings.registry.default_region,
        limits=policy.limits,
    )
    server = await open_listener(live, "policy", policy.listen, starting)
    try:
        await live.stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), live.settings.daemon.drain_timeout_s)
        log.info("drained", front_end="policy")


async def run_http(live: Live, http: HttpSettings) -> None:
    """The HTTP front end (unsubscribe, health, metrics) until `stop`."""
    log = logs.get_logger("http")
    runtime = live.runtime
    if runtime.tokens is None:  # build() makes the keys whenever [http] is set
        raise ConfigError("http", "no token keys")
    site = UnsubscribeSite(
        runtime.service, runtime.tokens, runtime.senders, status_networks=http.status_networks
    )
    front_end = HttpFrontEnd(site, http.limits, body_timeout_s=http.body_timeout_s)
    try:
        server = await open_listener(live, "http", http.listen, front_end.start(http.listen))
    except asyncio.CancelledError:  # it did listen, then stopped before serving: take it down
        await front_end.close()
        raise
    try:
        await live.stop.wait()
    finally:
        server.close()
        await front_end.close()
        log.info("drained", front_end="http")


async def run_smpp(live: Live, smpp: SmppSettings) -> None:
    """The SMPP relay and its carrier link until `stop`; then unbind both sides."""
    log = logs.get_logger("smpp")
    kw = live.settings.keywords
    relay = SmppRelay(
        smpp,
        live.runtime.service,
        live.runtime.registry,
        Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
        default_region=live.settings.registry.default_region,
        drain_s=live.settings.daemon.drain_timeout_s,
        gate=live.gate,
    )
    live.relay = relay
    if live.hub is not None:  # the parent of SMPP workers: its own clients are on the hub too
        live.hub.local = relay.deliver_local
        relay.hub = live.hub
    hub_link = None
    if live.hub_fd is not None:
        client = await HubClient.open(live.hub_fd, relay.deliver_local)
        relay.hub = client
        hub_link = asyncio.create_task(_hub_link(client, live.stop))
    carrier_task = None
    carrier_stop = asyncio.Event()  # set only once the clients' submits are answered
    if smpp.upstream is not None:
        relay.carrier = CarrierClient(smpp.upstream, relay.from_carrier)
        carrier_task = asyncio.create_task(relay.carrier.run(carrier_stop))
    server = await open_listener(live, "smpp", smpp.listen, relay.start())
    try:
        await live.stop.wait()
    finally:
        server.close()
        await relay.unbind_all()
        if hub_link is not None:
            hub_link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hub_link
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), live.settings.daemon.drain_timeout_s)
        carrier_stop.set()
        if carrier_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(carrier_task, 10)
        log.info("drained", front_end="smpp")


async def _hub_link(client: HubClient, stop: asyncio.Event) -> None:
    """An SMPP worker's link to the hub; lost while serving: stop, so that `filterd serve`
    starts this worker afresh with a new link (its clients bind again)."""
    try:
        await client.run()
    finally:
        await client.close()
    if not stop.is_set():
        logs.get_logger("daemon").error("hub_link_lost")
        stop.set()
