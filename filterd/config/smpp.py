"""[smpp]: the SMPP relay's listener, its carrier upstream ([smpp.upstream]), the
accounts, the numbers that route MO messages to a sender ([[smpp.numbers]]), and
the confirmation texts sent back for keywords ([smpp.confirmations])."""

from __future__ import annotations

import re
from typing import Any

from filterd.config.accounts import smpp_account, smpp_credentials
from filterd.config.table import Table
from filterd.config.values import confirmations, endpoint, limits, mo_numbers, workers
from filterd.errors import ConfigError
from filterd.settings import (
    SMPP_IDLE_S,
    SmppNumber,
    SmppSettings,
    SmppUpstream,
)
from filterd.units import parse_duration


def read_smpp(t: Table) -> SmppSettings:
    """The [smpp] table."""
    raw = t.take("upstream", dict, None)
    upstream = None if raw is None else _upstream(raw)
    accounts = [smpp_account(a) for a in t.tables("accounts")]
    numbers = tuple(
        SmppNumber(*n) for n in mo_numbers(t, _ADDRESS, "1-20 printable ASCII characters")
    )
    window = t.take("window", int, 100)
    if not 1 <= window <= 10_000:
        raise ConfigError("smpp.window", f"{window} is outside 1-10000")
    listen = endpoint(t, "listen")
    return SmppSettings(
        listen,
        upstream,
        tuple(accounts),
        tuple(numbers),
        window=window,
        receipt_ttl_s=t.parse("receipt_ttl", parse_duration, 3 * 86400),
        confirmations=confirmations(t),
        workers=workers(t, listen),
        limits=limits(t, SMPP_IDLE_S),
    )


_ADDRESS = re.compile(r"[!-~]{1,20}")
"""An SMPP address for [[smpp.numbers]]: destination_addr is at most 21 octets with its
NUL."""


def _upstream(raw: dict[str, Any]) -> SmppUpstream:
    u = Table(raw, "smpp.upstream")
    port = u.take("port", int, required=True)
    if not 0 < port < 65536:
        raise ConfigError("smpp.upstream.port", f"{port} is out of range 1-65535")
    host = u.take("host", str, required=True)
    system_id, password = smpp_credentials(u, "system_id")
    window = u.take("window", int, 50)
    if not 1 <= window <= 1000:
        raise ConfigError("smpp.upstream.window", f"{window} is outside 1-1000")
    rate = u.take("rate", float, 0.0)
    if rate < 0:
        raise ConfigError("smpp.upstream.rate", f"{rate} is negative")
    enquire = u.parse("enquire_link", parse_duration, 30)
    upstream = SmppUpstream(host, port, system_id, password, window, rate, enquire)
    u.done()
    return upstream
