"""SIGHUP: the config read again; accounts, numbers, keywords and token senders taken
without dropping a connection; what needs a restart is named in the log."""

from __future__ import annotations

import signal

from filterd import logs
from filterd.bootstrap import senders as token_senders
from filterd.config.load import load as load_config
from filterd.daemon.live import Live, smtp_accounts
from filterd.keywords import Keywords
from filterd.settings import Settings


def reload(live: Live) -> None:
    """SIGHUP: re-read the config; take new accounts, numbers and keywords.

    Connections stay up; sessions keep the account they logged in with. A
    config that does not load is logged and the running one kept. Changes
    that need a restart (listen addresses, upstreams, registry, [compliance]) are named in
    the log. Worker processes get the SIGHUP too and reload their own copy.
    """
    log = logs.get_logger("daemon")
    live.notifier.reloading()
    try:
        new = load_config(live.settings.path)
        senders = token_senders(new)
    except Exception as exc:  # a reload must never leave systemd waiting in RELOADING
        log.error("reload_failed", error=str(exc) or type(exc).__name__)
        live.notifier.ready("reload failed; running with the previous config")
        return
    restart = restart_needed(live.settings, new)
    live.accounts.replace(smtp_accounts(new))
    if live.relay is not None and new.smpp is not None:
        kw = new.keywords
        live.relay.reload(new.smpp, Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help))
    if live.cmpp_relay is not None and new.cmpp is not None:
        kw = new.keywords
        live.cmpp_relay.reload(new.cmpp, Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help))
    live.runtime.senders.clear()
    live.runtime.senders.update(senders)
    # live.settings stays the start-up config: what needs a restart keeps its old value
    for process in [p for processes in live.workers.values() for p in processes]:
        if process.returncode is None:
            process.send_signal(signal.SIGHUP)
    log.info("reloaded", config=str(new.path), restart_needed=restart or None)
    live.notifier.ready("reloaded")


RESTART_KEYS = ("registry", "smtp.listen", "smtp.upstream", "smpp.listen", "smpp.upstream",
                "http", "policy", "dkim", "smtp.workers", "smpp.workers", "smtp.limits",
                "smpp.limits", "daemon", "compliance", "api", "cmpp.listen", "cmpp.upstream",
                "cmpp.window", "cmpp.workers", "cmpp.limits", "smpp.window",
                "smtp.upstream_tls", "smtp.tls_cert", "smtp.tls_key", "smtp.max_message_size",
                "smtp.max_recipients", "smtp.hostname", "smtp.unsubscribe_domain",
                "smtp.unsubscribe_listen", "smtp.feedback_address")  # fmt: skip
"""Settings read once at start: a change is named in the `reloaded` line's `restart_needed`."""

RELOADED = ("path", "keywords", "smtp.accounts", "smpp.accounts", "smpp.numbers",
            "smpp.receipt_ttl_s", "smpp.confirmations", "cmpp.accounts", "cmpp.numbers",
            "cmpp.receipt_ttl_s", "cmpp.confirmations")  # fmt: skip
"""Settings a reload takes (`path` is where the config is read from, not a setting).
Every setting is in exactly one of the two lists (a test checks it)."""


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The settings that differ between `old` and `new` but take effect only at a restart."""
    return [name for name in RESTART_KEYS if _part(old, name) != _part(new, name)]


def _part(settings: Settings, name: str) -> object:
    value: object = settings
    for attribute in name.split("."):
        value = getattr(value, attribute, None)
    return value
