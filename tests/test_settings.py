"""The settings types (filterd/settings.py): frozen values with the documented
defaults, confirmation texts by language, the senders a config names."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from filterd.model import MessageClass
from filterd.settings import (
    CMPP_V30,
    CmppAccount,
    CmppNumber,
    CmppSettings,
    CmppUpstream,
    Confirmations,
    HttpSettings,
    ListenerLimits,
    PolicySettings,
    Settings,
    SmppAccount,
    SmppNumber,
    SmppSettings,
    SmtpAccount,
    SmtpSettings,
)


def test_listener_defaults() -> None:
    """Each listener's idle timeout (SMTP and policy 300 s, SMPP 120 s, HTTP 10 s for the
    head and 30 s for the body), 1,000 connections, 100 per address; status endpoints
    for loopback only."""
    smtp = SmtpSettings(listen=("127.0.0.1", 2525), upstream=None)
    smpp = SmppSettings(listen=("127.0.0.1", 2775))
    policy = PolicySettings(("127.0.0.1", 10040))
    http = HttpSettings(("127.0.0.1", 8025), "http://x.test")
    assert [s.limits.idle_timeout_s for s in (smtp, smpp, policy, http)] == [300, 120, 300, 10]
    assert {(s.limits.max_connections, s.limits.max_connections_per_address)
            for s in (smtp, smpp, policy, http)} == {(1000, 100)}  # fmt: skip
    assert http.body_timeout_s == 30
    assert ipaddress.ip_address("127.0.0.1") in http.status_networks[0]
    assert ipaddress.ip_address("::1") in http.status_networks[1]


def test_settings_are_frozen() -> None:
    """A settings value cannot be changed in place (a reload builds new ones)."""
    limits = ListenerLimits(idle_timeout_s=5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_connections = 1  # type: ignore[misc]


def test_confirmation_text_by_language_with_fallback() -> None:
    """A confirmation in the asked language, else English, else any configured one."""
    texts = Confirmations(
        texts={"opt_out": {"zh": "已退订", "en": "Stopped"}, "help": {"fr": "Aide"}}
    )
    assert texts.text("opt_out", "zh") == "已退订"
    assert texts.text("opt_out", "de") == "Stopped"
    assert texts.text("help", "zh") == "Aide"
    assert "退订" in Confirmations().text("opt_out", "zh")


def test_senders_each_once_in_config_order() -> None:
    """Settings.senders(): SMTP accounts, SMPP accounts, then SMPP numbers, each once."""
    commercial = MessageClass.COMMERCIAL
    settings = Settings(
        path=Path("filterd.toml"),
        smtp=SmtpSettings(
            listen=None,
            upstream=None,
            accounts=(SmtpAccount("a", "acme", commercial), SmtpAccount("b", "beta", commercial)),
        ),
        smpp=SmppSettings(
            listen=("127.0.0.1", 2775),
            accounts=(SmppAccount("promo", "pw", "gamma", commercial),),
            numbers=(SmppNumber("10690001", "acme"), SmppNumber("10690002", "delta")),
        ),
    )
    assert settings.senders() == ["acme", "beta", "gamma", "delta"]
    assert Settings(path=Path("x.toml")).senders() == []


def test_cmpp_defaults() -> None:
    """[cmpp]: 120 s idle timeout, a window of 16 per client, receipts kept 3 days, one
    worker; the ISMG link in CMPP 3.0 with a window of 16, no rate limit and an
    active test every 30 s; shared secrets are never shown in a repr."""
    upstream = CmppUpstream("127.0.0.1", 7891, "901234", "s3cret-upstream")
    cmpp = CmppSettings(
        listen=("127.0.0.1", 7890),
        upstream=upstream,
        accounts=(CmppAccount("900001", "s3cret-client", "acme", MessageClass.COMMERCIAL),),
    )
    assert (cmpp.limits.idle_timeout_s, cmpp.window, cmpp.receipt_ttl_s, cmpp.workers) == (
        120,
        16,
        3 * 86400,
        1,
    )
    assert (upstream.version, upstream.window, upstream.rate, upstream.active_test_s) == (
        CMPP_V30,
        16,
        0.0,
        30,
    )
    assert "s3cret" not in repr(cmpp)


def test_senders_include_cmpp_accounts_and_numbers() -> None:
    """Settings.senders() names the senders of [[cmpp.accounts]] and [[cmpp.numbers]] too."""
    cmpp = CmppSettings(
        listen=("127.0.0.1", 7890),
        accounts=(CmppAccount("900001", "pw", "acme", MessageClass.COMMERCIAL),),
        numbers=(CmppNumber("10690001", "acme"), CmppNumber("10690002", "omega")),
    )
    assert Settings(path=Path("x.toml"), cmpp=cmpp).senders() == ["acme", "omega"]
