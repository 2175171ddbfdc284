"""[cmpp]: the CMPP relay's listener, the carrier's ISMG ([cmpp.upstream]), the SP
platforms that submit through it ([[cmpp.accounts]]), the service numbers that route
MO messages to a sender ([[cmpp.numbers]]) and the confirmation texts sent back for
keywords ([cmpp.confirmations]).

CMPP names an SP by a 6-digit code (Source_Addr at CMPP_CONNECT), so each sp_id is
checked to be one; an account's sp_id appears once (it selects the account at
login), and so does a number (it selects the sender of an MO)."""

from __future__ import annotations

import re
from typing import Any

from filterd.config.accounts import stream
from filterd.config.table import Table
from filterd.config.values import confirmations, endpoint, limits, mo_numbers, workers
from filterd.errors import ConfigError
from filterd.settings import (
    CMPP_IDLE_S,
    CMPP_V20,
    CMPP_V30,
    CmppAccount,
    CmppNumber,
    CmppSettings,
    CmppUpstream,
)
from filterd.units import parse_duration

VERSIONS = {"2.0": CMPP_V20, "3.0": CMPP_V30}
"""The `version` values of [cmpp.upstream] and the Version byte each stands for."""
_SP_ID = re.compile(r"[0-9]{6}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,21}", re.ASCII)
"""A service number (with or without extension): digits, at most the 21 octets of
CMPP's Dest_Id / Src_Id."""


def read_cmpp(t: Table) -> CmppSettings:
    """The [cmpp] table."""
    raw = t.take("upstream", dict, None)
    upstream = None if raw is None else _upstream(raw)
    accounts = _accounts(t)
    numbers = tuple(CmppNumber(*n) for n in mo_numbers(t, _NUMBER, "1-21 digits"))
    window = t.take("window", int, 16)
    if not 1 <= window <= 10_000:
        raise ConfigError("cmpp.window", f"{window} is outside 1-10000")
    listen = endpoint(t, "listen")
    return CmppSettings(
        listen,
        upstream,
        accounts,
        numbers,
        window=window,
        receipt_ttl_s=t.parse("receipt_ttl", parse_duration, 3 * 86400),
        confirmations=confirmations(t),
        workers=workers(t, listen),
        limits=limits(t, CMPP_IDLE_S),
    )


def _upstream(raw: dict[str, Any]) -> CmppUpstream:
    u = Table(raw, "cmpp.upstream")
    host = u.take("host", str, required=True)
    port = u.take("port", int, required=True)
    if not 0 < port < 65536:
        raise ConfigError("cmpp.upstream.port", f"{port} is out of range 1-65535")
    sp_id = _sp_id(u)
    secret = _secret(u)
    version_text = u.take("version", str, "3.0")
    if version_text not in VERSIONS:
        raise ConfigError("cmpp.upstream.version", f'{version_text!r}: use "2.0" or "3.0"')
    window = u.take("window", int, 16)
    if not 1 <= window <= 1000:
        raise ConfigError("cmpp.upstream.window", f"{window} is outside 1-1000")
    rate = u.take("rate", float, 0.0)
    if rate < 0:
        raise ConfigError("cmpp.upstream.rate", f"{rate} is negative")
    active_test = u.parse("active_test", parse_duration, 30)
    u.done()
    return CmppUpstream(
        host, port, sp_id, secret, VERSIONS[version_text], window, rate, active_test
    )


def _accounts(t: Table) -> tuple[CmppAccount, ...]:
    accounts: list[CmppAccount] = []
    for a in t.tables("accounts"):
        sp_id = _sp_id(a)
        for index, earlier in enumerate(accounts):
            if earlier.sp_id == sp_id:
                raise ConfigError(
                    a.key("sp_id"), f"{sp_id!r} is already the sp_id of cmpp.accounts[{index}]"
                )
        secret = _secret(a)
        sender = a.take("sender", str, required=True)
        accounts.append(CmppAccount(sp_id, secret, sender, stream(a)))
        a.done()
    return tuple(accounts)


def _sp_id(t: Table) -> str:
    sp_id: str = t.take("sp_id", str, required=True)
    if not _SP_ID.fullmatch(sp_id):
        raise ConfigError(t.key("sp_id"), f"{sp_id!r} is not 6 digits (an SP code)")
    return sp_id


def _secret(t: Table) -> str:
    secret: str = t.take("shared_secret", str, required=True)
    if not secret:
        raise ConfigError(t.key("shared_secret"), "is empty")
    return secret
