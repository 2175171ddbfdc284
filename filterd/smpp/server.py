"""The SMPP 3.4 server that marketing tools bind to: the listener, its sessions,
and the way back to their receiver binds.

The listener takes at most `max_connections` (`max_connections_per_address`
from one address; beyond them a connection is closed at once) and closes a
connection that sends nothing for `idle_timeout` (enquire_link is traffic).
Each connection is a `ClientSession` (`filterd.smpp.session`: binds, the window
of submits); each submit_sm is decided (under `[compliance]`, judged on its
text too) and forwarded to the carrier by `filterd.smpp.submit`; what the
carrier delivers (receipts and consumers' replies) is handled by
`filterd.smpp.deliveries` and passed to a receiver bind of the account.

With `smpp.workers > 1` several processes serve the port; a receipt or MO
that arrives on this process's carrier bind while the client's receiver bind
is in another process is handed to `hub` (see `filterd.hub`).
"""

from __future__ import annotations

import asyncio
import dataclasses

from filterd.accounts import password_matches
from filterd.guard import ConnectionTable, LoginGate, Ticket, listen_streams
from filterd.hub import Peers
from filterd.keywords import Keywords
from filterd.logs import get_logger
from filterd.routebook import RouteBook
from filterd.service import Service
from filterd.settings import ComplianceSettings, SmppAccount, SmppSettings
from filterd.smpp.carrier import CarrierClient
from filterd.smpp.deliveries import Deliveries
from filterd.smpp.pdu import DataSm, DeliverSm, Pdu, SubmitSm
from filterd.smpp.session import ClientSession
from filterd.smpp.submit import HOLD_S, Submitter
from filterd.storage.port import Registry

log = get_logger("smpp")

DELIVER_BACKLOG = 1024 * 1024
"""Bytes of deliver_sm a client's connection may have waiting to be written: a
receiver that stops reading gets no more past it (the delivery counts as
undeliverable there, logged), so its backlog cannot grow filterd's memory."""


class SmppRelay:
    """The client-facing server and the relay between clients and the carrier."""

    def __init__(
        self,
        settings: SmppSettings,
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
        self.carrier: CarrierClient | None = None
        self.hub: Peers[DeliverSm | DataSm] | None = None
        """The other SMPP processes (smpp.workers > 1), for deliveries bound elsewhere."""
        self.sessions: set[ClientSession] = set()
        self._announced: frozenset[str] = frozenset()
        self.accounts = {a.system_id: a for a in settings.accounts}
        """The `[[smpp.accounts]]` by system_id."""
        self.numbers = {n.address: n.sender for n in settings.numbers}
        """The sender of each `[[smpp.numbers]]` address."""
        self.routes = RouteBook(registry, "smpp")
        """The message routes of this process's submits (written behind the answers)."""
        self._submitter = Submitter(service, self.routes, default_region, compliance, hold_s)
        self._deliveries = Deliveries(self, service, self.routes, default_region)
        self.gate = gate or LoginGate()
        """The process's login gate (per-address back-off after failed logins)."""
        self.table = ConnectionTable("smpp", settings.limits)
        """This listener's connections, within its caps and idle timeout."""

    def reload(self, settings: SmppSettings, keywords: Keywords) -> None:
        """Take new accounts, numbers, keywords and confirmation texts (SIGHUP).

        Bound sessions keep the account they bound with; listen, upstream and
        window changes need a restart.
        """
        self.settings = dataclasses.replace(
            self.settings,
            accounts=settings.accounts,
            numbers=settings.numbers,
            receipt_ttl_s=settings.receipt_ttl_s,
            confirmations=settings.confirmations,
        )
        self.keywords = keywords
        self.accounts = {a.system_id: a for a in settings.accounts}
        self.numbers = {n.address: n.sender for n in settings.numbers}

    async def start(self) -> asyncio.Server:
        """Listen on smpp.listen (shared with the other workers' processes: SO_REUSEPORT)."""
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
            if session.account is not None:  # only a bound session can have been announced
                self.receivers_changed()

    def receivers_changed(self) -> None:
        """Tell the hub the system_ids with a live receiver bind here, when that set changed."""
        system_ids = frozenset(
            session.account.system_id
            for session in self.sessions
            if session.account is not None and session.receives
        )
        if system_ids != self._announced:
            self._announced = system_ids
            if self.hub is not None:
                self.hub.receivers(system_ids)

    def account(self, system_id: str, password: str) -> SmppAccount | None:
        """The account for a bind, or None (constant-time password check)."""
        account = self.accounts.get(system_id)
        expected = account.password if account is not None else None
        return account if password_matches(expected, password) else None

    async def submit(self, account: SmppAccount, pdu: SubmitSm) -> Pdu:
        """Decide one submit_sm and forward it; the response for the client."""
        return await self._submitter.submit(account, pdu, self.carrier, self.settings.receipt_ttl_s)

    async def from_carrier(self, pdu: DeliverSm | DataSm) -> int:
        """A deliver_sm from the carrier: a receipt to route, or a consumer's reply (MO).

        Returns the deliver_sm_resp status: ESME_RTHROTTLED asks the carrier to
        try again (registry down), so an opt-out is never lost.
        """
        return await self._deliveries.handle(pdu)

    def forward(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Send a deliver_sm to a receiver bind of the account, here or (through the hub)
        in another process; False if none."""
        if self.deliver_local(system_id, pdu):
            return True
        return self.hub is not None and self.hub.forward(system_id, pdu)

    def deliver_local(self, system_id: str, pdu: DeliverSm | DataSm) -> bool:
        """Send a deliver_sm to one live receiver bind of the account in this process;
        False if none."""
        for session in self.sessions:
            account = session.account
            live = session.receives and not session.writer.is_closing()
            if account is not None and account.system_id == system_id and live:
                if session.writer.transport.get_write_buffer_size() >= DELIVER_BACKLOG:
                    log.warning("deliver_backlog_full", system_id=system_id, peer=session.peer())
                    continue
                session.send_deliver(pdu)
                return True
        return False

    async def unbind_all(self) -> None:
        """Stop: let every client's submits in flight get their answers, then unbind
        (concatenated messages still waiting for parts are refused now); the message
        routes still pending get `drain_s` to reach the registry."""
        self.table.stop()
        self._submitter.close()
        await asyncio.gather(*(session.close_gracefully() for session in list(self.sessions)))
        await self.routes.settle(self.drain_s)
