"""Each front end of `filterd serve` as a small object: `start` (listen; a bind
failure names its key) and `drain` (stop accepting, finish what is in flight,
close), run by `run` until `stop`: the SMTP relay and its unsubscribe listener, the
Postfix policy service, the HTTP front end, the decision and consent API, the
SMPP relay with its carrier link and (with workers) its hub link, and the CMPP
relay with its ISMG link and (with workers) its hub link. `drain` is safe
after a `start` that failed part-way."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from typing import Any, Protocol

from filterd import logs
from filterd.api import ApiSite
from filterd.cmpp.hub import CMPP_WIRE
from filterd.cmpp.ismg import IsmgClient
from filterd.cmpp.server import CmppRelay
from filterd.daemon.live import Live
from filterd.errors import ConfigError
from filterd.guard import ConnectionTable
from filterd.hub import HubClient
from filterd.keywords import Keywords
from filterd.policy_service import start_policy_server
from filterd.settings import (
    ApiSettings,
    CancelMethod,
    CmppSettings,
    HttpSettings,
    PolicySettings,
    SmppSettings,
    SmtpSettings,
)
from filterd.smpp.carrier import CarrierClient
from filterd.smpp.hub import SMPP_WIRE
from filterd.smpp.server import SmppRelay
from filterd.smtp.complaints import Complaints
from filterd.smtp.connection import Connections
from filterd.smtp.data import DataStage
from filterd.smtp.envelope import EnvelopeStage
from filterd.smtp.inbound import RelayHandler
from filterd.smtp.listener import start_smtp_server
from filterd.smtp.oneclick import OneClick
from filterd.smtp.outbound import UpstreamPool
from filterd.smtp.transaction import Transactions
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


class FrontEnd(Protocol):
    """What `run` needs of a front end."""

    async def start(self) -> None:
        """Listen (and open what the front end needs)."""

    async def drain(self) -> None:
        """Stop accepting, finish what is in flight (bounded), close."""


async def run(live: Live, front_end: FrontEnd) -> None:
    """Start `front_end`, serve until `stop`, then drain it (also after a failed start)."""
    try:
        await front_end.start()
        await live.stop.wait()
    finally:
        await front_end.drain()


class SmtpFrontEnd:
    """The SMTP relay on `listen` (and, with `intake`, the unsubscribe listener)."""

    def __init__(
        self,
        live: Live,
        smtp: SmtpSettings,
        *,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        intake: tuple[str, int] | None = None,
    ) -> None:
        self.live = live
        self.smtp = smtp
        self.where = [listen, intake]
        self.hostname = smtp.hostname or socket.gethostname()
        host, port = upstream
        self.pool = UpstreamPool(host, port, tls=smtp.upstream_tls, local_hostname=self.hostname)
        oneclick = _oneclick(live, smtp)
        self.handlers = [
            _relay_handler(live, smtp, self.pool, oneclick, intake_only=only)
            for only in ([False, True] if intake is not None else [False])
        ]
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        """Listen on each address."""
        for handler, where in zip(self.handlers, self.where, strict=False):
            if where is None:
                continue
            name = "smtp.unsubscribe" if handler.intake_only else "smtp"
            starting = start_smtp_server(self.smtp, where, handler, hostname=self.hostname)
            self.servers.append(await open_listener(self.live, name, where, starting))

    async def drain(self) -> None:
        """No new connections; transactions in flight may finish (drain_timeout)."""
        for server in self.servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(h.connections.drained() for h in self.handlers)),
                self.live.settings.daemon.drain_timeout_s,
            )
        for handler in self.handlers:
            handler.connections.close_all()
        for server in self.servers:
            await server.wait_closed()
        await self.pool.close()
        logs.get_logger("smtp").info("drained", front_end="smtp")


def _relay_handler(
    live: Live,
    smtp: SmtpSettings,
    pool: UpstreamPool,
    oneclick: OneClick | None,
    *,
    intake_only: bool,
) -> RelayHandler:
    """One SMTP listener's handler and the collaborators it is given (its own
    transactions and connection caps; the upstream pool and one-click are shared)."""
    service = live.runtime.service
    transactions = Transactions(pool)
    compliance = live.settings.compliance
    cancel_method = compliance.cancel_method if compliance is not None else None
    # the one-click headers filterd adds name one recipient: under add, or (no
    # [compliance] table) where filterd signs; not under require or off
    complaints = None  # reports are taken on the unsubscribe listener only
    if intake_only and oneclick is not None and smtp.feedback_address is not None:
        complaints = Complaints(service, oneclick, smtp.feedback_address)
    adds_headers = cancel_method is CancelMethod.ADD or (
        cancel_method is None and oneclick is not None and oneclick.signs
    )
    envelope_stage = EnvelopeStage(
        service,
        live.accounts,
        transactions,
        max_recipients=smtp.max_recipients,
        default_region=live.settings.registry.default_region,
        oneclick=oneclick,
        intake_only=intake_only,
        one_per_message=adds_headers,
        complaints=complaints,
    )
    table = ConnectionTable("smtp.unsubscribe" if intake_only else "smtp", smtp.limits)
    return RelayHandler(
        envelope_stage,
        DataStage(service, transactions, oneclick, cancel_method, complaints),
        transactions,
        Connections(table, transactions),
        accounts=live.accounts,
        gate=live.gate,
    )


def _oneclick(live: Live, smtp: SmtpSettings) -> OneClick | None:
    """Opt-out intake, one-click headers and signing for the SMTP relay, when
    configured ([http] needed)."""
    runtime, http = live.runtime, live.settings.http
    if http is None or runtime.tokens is None:
        return None
    compliance = live.settings.compliance
    adds = compliance is not None and compliance.cancel_method is CancelMethod.ADD
    if smtp.unsubscribe_domain is None and runtime.signer is None and not adds:
        return None
    return OneClick(
        runtime.service,
        runtime.tokens,
        runtime.senders,
        public_url=http.public_url,
        domain=smtp.unsubscribe_domain,
        signer=runtime.signer,
    )


class PolicyFrontEnd:
    """The Postfix policy service."""

    def __init__(self, live: Live, policy: PolicySettings) -> None:
        self.live = live
        self.policy = policy
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on policy.listen."""
        starting = start_policy_server(
            self.policy.listen,
            self.live.runtime.service,
            self.live.accounts,
            default_region=self.live.settings.registry.default_region,
            limits=self.policy.limits,
        )
        self.server = await open_listener(self.live, "policy", self.policy.listen, starting)

    async def drain(self) -> None:
        """Close idle connections, let the requests in flight be answered (bounded)."""
        if self.server is None:
            return
        self.server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.server.wait_closed(), self.live.settings.daemon.drain_timeout_s
            )
        logs.get_logger("policy").info("drained", front_end="policy")


class HttpService:
    """The HTTP front end: one-click unsubscribe, /healthz, /metrics."""

    def __init__(self, live: Live, http: HttpSettings) -> None:
        runtime = live.runtime
        if runtime.tokens is None:  # build() makes the keys whenever [http] is set
            raise ConfigError("http", "no token keys")
        site = UnsubscribeSite(
            runtime.service, runtime.tokens, runtime.senders, status_networks=http.status_networks
        )
        self.live = live
        self.http = http
        self.site = HttpFrontEnd(site, http.limits, body_timeout_s=http.body_timeout_s)
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Set the site up and listen on http.listen."""
        starting = self.site.start(self.http.listen)
        self.server = await open_listener(self.live, "http", self.http.listen, starting)

    async def drain(self) -> None:
        """Finish the requests in flight, then clean up (also a site set up but stopped
        before it served)."""
        if self.server is not None:
            self.server.close()
        await self.site.close()
        logs.get_logger("http").info("drained", front_end="http")


class ApiService:
    """The decision and consent API (SPEC §8) on api.listen; bad keys go through the
    process's login gate, shared with SMTP AUTH and SMPP binds."""

    def __init__(self, live: Live, api: ApiSettings) -> None:
        site = ApiSite(
            live.runtime.service,
            api.keys,
            live.gate,
            default_region=live.settings.registry.default_region,
        )
        self.live = live
        self.api = api
        self.site = HttpFrontEnd(site, api.limits, body_timeout_s=api.body_timeout_s, name="api")
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Set the site up and listen on api.listen."""
        starting = self.site.start(self.api.listen)
        self.server = await open_listener(self.live, "api", self.api.listen, starting)

    async def drain(self) -> None:
        """Finish the requests in flight, then clean up."""
        if self.server is not None:
            self.server.close()
        await self.site.close()
        logs.get_logger("api").info("drained", front_end="api")


class SmppFrontEnd:
    """The SMPP relay, its carrier link and (with workers) its hub link."""

    def __init__(self, live: Live, smpp: SmppSettings) -> None:
        kw = live.settings.keywords
        self.live = live
        self.smpp = smpp
        self.relay = SmppRelay(
            smpp,
            live.runtime.service,
            live.runtime.registry,
            Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
            default_region=live.settings.registry.default_region,
            drain_s=live.settings.daemon.drain_timeout_s,
            gate=live.gate,
            compliance=live.settings.compliance,
        )
        live.relay = self.relay
        self.server: asyncio.Server | None = None
        self.hub_link: asyncio.Task[None] | None = None
        self.carrier_task: asyncio.Task[None] | None = None
        self.carrier_stop = asyncio.Event()  # set only once the clients' submits are answered

    async def start(self) -> None:
        """Link to the hub (workers), start the carrier link, listen on smpp.listen."""
        live, relay = self.live, self.relay
        if live.hub is not None:  # the parent of SMPP workers: its clients are on the hub too
            live.hub.local = relay.deliver_local
            relay.hub = live.hub
        if live.hub_fd is not None:
            client = await HubClient.open(SMPP_WIRE, live.hub_fd, relay.deliver_local)
            relay.hub = client
            self.hub_link = asyncio.create_task(_hub_link(client, live.stop))
        if self.smpp.upstream is not None:
            relay.carrier = CarrierClient(self.smpp.upstream, relay.from_carrier)
            self.carrier_task = asyncio.create_task(relay.carrier.run(self.carrier_stop))
        self.server = await open_listener(live, "smpp", self.smpp.listen, relay.start())

    async def drain(self) -> None:
        """Answer the submits in flight and unbind every client, then the carrier."""
        if self.server is not None:
            self.server.close()
        await self.relay.unbind_all()
        if self.hub_link is not None:
            self.hub_link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.hub_link
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.server.wait_closed(), self.live.settings.daemon.drain_timeout_s
                )
        self.carrier_stop.set()
        if self.carrier_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.carrier_task, 10)
        logs.get_logger("smpp").info("drained", front_end="smpp")


class CmppFrontEnd:
    """The CMPP relay and its ISMG link."""

    def __init__(self, live: Live, cmpp: CmppSettings) -> None:
        kw = live.settings.keywords
        self.live = live
        self.cmpp = cmpp
        self.relay = CmppRelay(
            cmpp,
            live.runtime.service,
            live.runtime.registry,
            Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
            default_region=live.settings.registry.default_region,
            drain_s=live.settings.daemon.drain_timeout_s,
            gate=live.gate,
            compliance=live.settings.compliance,
        )
        live.cmpp_relay = self.relay
        self.server: asyncio.Server | None = None
        self.ismg_task: asyncio.Task[None] | None = None
        self.ismg_stop = asyncio.Event()  # set only once the clients' submits are answered
        self.hub_link: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Link to the hub (workers), start the ISMG link, listen on cmpp.listen."""
        live, relay = self.live, self.relay
        if live.cmpp_hub is not None:  # the parent of CMPP workers: its clients are on the hub
            live.cmpp_hub.local = relay.deliver_local
            relay.hub = live.cmpp_hub
        if live.hub_fd is not None:
            client = await HubClient.open(CMPP_WIRE, live.hub_fd, relay.deliver_local)
            relay.hub = client
            self.hub_link = asyncio.create_task(_hub_link(client, live.stop))
        if self.cmpp.upstream is not None:
            self.relay.carrier = IsmgClient(self.cmpp.upstream, self.relay.from_ismg)
            self.ismg_task = asyncio.create_task(self.relay.carrier.run(self.ismg_stop))
        self.server = await open_listener(self.live, "cmpp", self.cmpp.listen, self.relay.start())

    async def drain(self) -> None:
        """Answer the submits in flight and terminate every client, then the ISMG link."""
        if self.server is not None:
            self.server.close()
        await self.relay.close_all()
        if self.hub_link is not None:
            self.hub_link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.hub_link
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.server.wait_closed(), self.live.settings.daemon.drain_timeout_s
                )
        self.ismg_stop.set()
        if self.ismg_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ismg_task, 10)
        logs.get_logger("cmpp").info("drained", front_end="cmpp")


async def _hub_link(client: HubClient[Any], stop: asyncio.Event) -> None:
    """An SMPP or CMPP worker's link to the hub; lost while serving: stop, so that
    `filterd serve` starts this worker afresh with a new link (its clients log in again)."""
    try:
        await client.run()
    finally:
        await client.close()
    if not stop.is_set():
        logs.get_logger("daemon").error("hub_link_lost")
        stop.set()
