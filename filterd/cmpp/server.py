"""The CMPP 2.0 / 3.0 server that SP platforms connect to: the listener, its sessions,
and the way back to them.

filterd sits between an SP platform and the carrier's ISMG: to the platform it is
the ISMG (it logs in with its `[[cmpp.accounts]]` sp_id and shared secret), to the
ISMG it is one SP (`[cmpp.upstream]`, `filterd.cmpp.ismg.IsmgClient`).

The listener takes at most `max_connections` (`max_connections_per_address` from
one address; beyond them a connection is closed at once) and closes a connection
that sends nothing for `idle_timeout` (CMPP_ACTIVE_TEST is traffic). Each
connection is a `ClientSession` (`filterd.cmpp.session`: login, window, keep-alive);
each CMPP_SUBMIT is decided and forwarded by `filterd.cmpp.submit`. What the ISMG
delivers (status reports, consumers' replies) comes back through `forward`, to one
live connection of the account.

With `cmpp.workers > 1` several processes serve the port, each with its own ISMG
link; a report or MO that arrives on this process's link while the SP's
connections are in another process is handed to `hub` (see `filterd.hub`).

Terminal ids are read as phone numbers in `registry.default_region`, China when none
is set (CMPP's numbers are Chinese).

Msg_Ids filterd gives its clients carry this process's id as their gateway id
(22 bits: a Linux process id fits), so the processes of one host never issue the
same Msg_Id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

from filterd.cmpp.deliveries import CMPP_REGION, Deliveries
from filterd.cmpp.ismg import IsmgClient
from filterd.cmpp.msgid import GATEWAY_BITS, MsgIdGenerator
from filterd.cmpp.pdu import Deliver, Submit
from filterd.cmpp.session import ClientSession
from filterd.cmpp.submit import HOLD_S, Outcome, Received, Submitter
from filterd.guard import ConnectionTable, LoginGate, Ticket, listen_streams
from filterd.hub import Peers
from filterd.keywords import Keywords
from filterd.logs import get_logger
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import CmppAccount, CmppSettings, ComplianceSettings
from filterd.storage.port import Registry

log = get_logger("cmpp")

DELIVER_BACKLOG = 1024 * 1024
"""Bytes a client's connection may have waiting to be written: a client that stops
reading gets no DELIVER past it (another of its connections may), so its backlog
cannot grow filterd's memory."""


class CmppRelay:
    """The client-facing CMPP server and the relay between SPs and the ISMG."""

    def __init__(
        self,
        settings: CmppSettings,
        service: Service,
        registry: Registry,
        keywords: Keywords,
        *,
        default_region: str | None,
        drain_s: float = 30.0,
        gate: LoginGate | None = None,
        compliance: ComplianceSettings | None = None,
        hold_s: float = HOLD_S,
    ) -> None:
        self.settings = settings
        self.service = service
        self.registry = registry
        self.keywords = keywords
        self.drain_s = drain_s
        """How long submits in flight may take at shutdown or disconnect."""
        self.default_region = default_region
        self.carrier: IsmgClient | None = None
        """The ISMG link (None without [cmpp.upstream]: submits get Result 8)."""
        self.sessions: set[ClientSession] = set()
        self.hub: Peers[Deliver] | None = None
        """The other CMPP processes (cmpp.workers > 1), for deliveries bound elsewhere."""
        self._announced: frozenset[str] = frozenset()
        self.accounts = {a.sp_id: a for a in settings.accounts}
        """The `[[cmpp.accounts]]` by sp_id."""
        self.numbers = {n.address: n.sender for n in settings.numbers}
        """The sender of each `[[cmpp.numbers]]` address."""
        self.msg_ids = MsgIdGenerator(os.getpid() % (1 << GATEWAY_BITS))
        """The Msg_Ids given to clients (their submits, filterd's own status reports)."""
        self.routes = RouteBook(registry, "cmpp")
        """The Msg_Id routes of this process's submits (written behind the answers)."""
        upstream = settings.upstream
        self._submitter = Submitter(
            service,
            self.routes,
            self.msg_ids,
            default_region=default_region or CMPP_REGION,
            msg_src=upstream.sp_id if upstream is not None else None,
            compliance=compliance,
            hold_s=hold_s,
        )
        self._deliveries = Deliveries(self, service, self.routes, default_region)
        self.gate = gate or LoginGate()
        """The process's login gate (per-address back-off after failed logins)."""
        self.table = ConnectionTable("cmpp", settings.limits)
        """This listener's connections, within its caps and idle timeout."""

    def reload(self, settings: CmppSettings, keywords: Keywords) -> None:
        """Take new accounts, numbers, keywords and confirmation texts (SIGHUP).

        Logged-in sessions keep the account they logged in with; listen, upstream,
        window and limits need a restart.
        """
        self.settings = dataclasses.replace(
            self.settings,
            accounts=settings.accounts,
            numbers=settings.numbers,
            receipt_ttl_s=settings.receipt_ttl_s,
            confirmations=settings.confirmations,
        )
        self.keywords = keywords
        self.accounts = {a.sp_id: a for a in settings.accounts}
        self.numbers = {n.address: n.sender for n in settings.numbers}

    async def start(self) -> asyncio.Server:
        """Listen on cmpp.listen (shared with the other workers' processes: SO_REUSEPORT)."""
        return await listen_streams(
            self.table, self.settings.listen, self._serve, reuse_port=self.settings.workers > 1
        )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket
    ) -> None:
        session = ClientSession(self, reader, writer, ticket)
        self.sessions.add(session)
        try:
            await session.serve()
        finally:
            self.sessions.discard(session)
            if session.account is not None:  # only a logged-in session can have been announced
                self.receivers_changed()

    def receivers_changed(self) -> None:
        """Tell the hub the sp_ids with a logged-in connection here, when that set changed."""
        sp_ids = frozenset(
            session.account.sp_id
            for session in self.sessions
            if session.account is not None and session.open
        )
        if sp_ids != self._announced:
            self._announced = sp_ids
            if self.hub is not None:
                self.hub.receivers(sp_ids)

    def account_of(self, sp_id: str) -> CmppAccount | None:
        """The account with that sp_id, or None."""
        return self.accounts.get(sp_id)

    async def submit(self, account: CmppAccount, pdu: Submit, received: Received) -> Outcome:
        """Decide one CMPP_SUBMIT (`received`: its octets) and forward it; the outcome for
        the client."""
        return await self._submitter.submit(
            account, pdu, self.carrier, self.settings.receipt_ttl_s, received
        )

    async def from_ismg(self, deliver: Deliver) -> int:
        """A CMPP_DELIVER from the ISMG (status report or MO, `filterd.cmpp.deliveries`);
        the Result of its CMPP_DELIVER_RESP (8: the ISMG sends it again)."""
        return await self._deliveries.handle(deliver)

    def forward(self, sp_id: str, deliver: Deliver) -> bool:
        """Send a DELIVER (status report or MO) to one live connection of the account
        `sp_id`, here or (through the hub) in another process; False if none takes it."""
        if self.deliver_local(sp_id, deliver):
            return True
        return self.hub is not None and self.hub.forward(sp_id, deliver)

    def deliver_local(self, sp_id: str, deliver: Deliver) -> bool:
        """Send a DELIVER to one live connection of the account `sp_id` in this process;
        False if none takes it."""
        for session in self.sessions:
            account = session.account
            if account is None or account.sp_id != sp_id or not session.open:
                continue
            if session.writer.is_closing():
                continue
            if session.writer.transport.get_write_buffer_size() >= DELIVER_BACKLOG:
                log.warning("deliver_backlog_full", sp_id=sp_id, peer=session.peer())
                continue
            if session.send_deliver(deliver):
                return True
        return False

    async def close_all(self) -> None:
        """Stop: let every client's submits in flight get their answers, then send
        CMPP_TERMINATE (long messages still waiting for parts are refused now); the
        Msg_Id routes still pending get `drain_s` to reach the registry."""
        self.table.stop()
        self._submitter.close()
        await asyncio.gather(*(session.close_gracefully() for session in list(self.sessions)))
        await self.routes.settle(self.drain_s)
