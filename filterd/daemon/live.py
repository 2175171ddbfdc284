"""What one serving process holds while it runs (`Live`): the settings, the runtime,
the stop event, the objects a reload updates, and start-up progress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from filterd.accounts import AccountBook
from filterd.bootstrap import Runtime
from filterd.cmpp.pdu import Deliver
from filterd.cmpp.server import CmppRelay
from filterd.guard import LoginGate
from filterd.hub import Hub
from filterd.metrics_dir import MetricsDir
from filterd.notify import Notifier
from filterd.settings import Settings, SmtpAccount
from filterd.smpp.hub import SmppDelivery
from filterd.smpp.server import SmppRelay

SUPERVISE_INTERVAL_S = 1.0


@dataclass
class Live:
    """What one serving process holds: the objects a reload updates, start-up progress."""

    settings: Settings
    runtime: Runtime
    stop: asyncio.Event
    notifier: Notifier
    accounts: AccountBook
    gate: LoginGate = field(default_factory=LoginGate)
    """The process's one login gate: SMTP AUTH, SMPP binds and CMPP connects share its
    back-off."""
    relay: SmppRelay | None = None
    cmpp_relay: CmppRelay | None = None
    workers: dict[str, list[asyncio.subprocess.Process]] = field(default_factory=dict)
    """Worker processes by front end ("smtp", "smpp", "cmpp")."""
    hub: Hub[SmppDelivery] | None = None
    """The parent's SMPP hub (smpp.workers > 1)."""
    cmpp_hub: Hub[Deliver] | None = None
    """The parent's CMPP hub (cmpp.workers > 1)."""
    hub_fd: int | None = None
    """An SMPP or CMPP worker's end of its link to its relay's hub."""
    metrics_dir: MetricsDir | None = None
    """Where workers write their counts for the main process's /metrics."""
    expected: int = 0
    listening: int = 0
    all_listening: asyncio.Event = field(default_factory=asyncio.Event)

    def listened(self) -> None:
        """One more front end listens; all of them: set `all_listening`."""
        self.listening += 1
        if self.listening >= self.expected:
            self.all_listening.set()


def smtp_accounts(settings: Settings) -> tuple[SmtpAccount, ...]:
    """The `[[smtp.accounts]]` (the SMTP relay's and the policy service's), or none."""
    return settings.smtp.accounts if settings.smtp is not None else ()
