"""[smtp] (the relay: listener, upstream, TLS, sizes, accounts, unsubscribe
domain and listener, feedback address) and [dkim] (the relay's own signature).
Without `listen` the relay is off and the accounts serve the Postfix policy
service only."""

from __future__ import annotations

import re
from pathlib import Path

from filterd.config.accounts import smtp_account
from filterd.config.table import Table
from filterd.config.values import check_private, endpoint, limits, workers
from filterd.errors import ConfigError
from filterd.settings import SMTP_IDLE_S, DkimSettings, SmtpSettings
from filterd.units import parse_size

_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


def read_smtp(t: Table, base: Path) -> SmtpSettings:
    """The [smtp] table; `base` anchors its paths (TLS files, password files)."""
    relay_on = "listen" in t.data  # without the relay, Postfix checks the passwords
    accounts = [smtp_account(a, base, relay_on=relay_on) for a in t.tables("accounts")]
    upstream_tls = t.take("upstream_tls", str, "none")
    if upstream_tls not in ("none", "starttls", "tls"):
        raise ConfigError("smtp.upstream_tls", f"{upstream_tls!r}: use none, starttls or tls")
    cert = t.take("tls_cert", str, "") or None
    key = t.take("tls_key", str, "") or None
    if (cert is None) != (key is None):
        raise ConfigError("smtp.tls_key" if key is None else "smtp.tls_cert", "set both or neither")
    max_recipients = t.take("max_recipients", int, 1000)
    if max_recipients < 1:
        raise ConfigError("smtp.max_recipients", f"{max_recipients} must be at least 1")
    size = t.data.pop("max_message_size", "25MB")
    if not isinstance(size, (str, int)) or isinstance(size, bool):
        raise ConfigError("smtp.max_message_size", f'must be a size like "25MB", not {size!r}')
    try:
        max_size = parse_size(size)
    except ValueError as exc:
        raise ConfigError("smtp.max_message_size", str(exc)) from None
    if "upstream" in t.data and "listen" not in t.data:
        raise ConfigError("smtp.listen", "is required when smtp.upstream is set")
    listen = endpoint(t, "listen") if "listen" in t.data else None
    upstream = endpoint(t, "upstream") if listen is not None else None
    if key is not None and (base / key).exists():
        check_private(base / key, "smtp.tls_key")
    return SmtpSettings(
        listen=listen,
        upstream=upstream,
        upstream_tls=upstream_tls,
        tls_cert=base / cert if cert else None,
        tls_key=base / key if key else None,
        max_message_size=max_size,
        max_recipients=max_recipients,
        accounts=tuple(accounts),
        hostname=t.take("hostname", str, "") or None,
        workers=workers(t, listen),
        unsubscribe_domain=_unsubscribe_domain(t),
        unsubscribe_listen=endpoint(t, "unsubscribe_listen")
        if "unsubscribe_listen" in t.data
        else None,
        feedback_address=_feedback_address(t),
        limits=limits(t, SMTP_IDLE_S),
    )


def read_dkim(t: Table, base: Path) -> DkimSettings:
    """The [dkim] table: selector and domain (DNS names), a private key file."""
    selector = t.take("selector", str, required=True)
    domain = t.take("domain", str, required=True)
    _dns_name(t, "selector", selector)
    _dns_name(t, "domain", domain)
    key_file = base / t.take("key_file", str, required=True)
    if not key_file.is_file():
        raise ConfigError("dkim.key_file", f"{key_file}: no such file")
    check_private(key_file, "dkim.key_file")
    return DkimSettings(selector, domain.lower(), key_file)


def _unsubscribe_domain(t: Table) -> str | None:
    domain: str = t.take("unsubscribe_domain", str, "")
    if not domain:
        return None
    return _dns_name(t, "unsubscribe_domain", domain).lower()


def _feedback_address(t: Table) -> str | None:
    """smtp.feedback_address: a plain address, local@domain (dot-atom, DNS name)."""
    address: str = t.take("feedback_address", str, "")
    if not address:
        return None
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    if not at or not _DOT_ATOM.fullmatch(local) or not all(map(_DNS_LABEL.fullmatch, labels)):
        raise ConfigError(
            t.key("feedback_address"), f"{address!r} is not a plain address (local@domain)"
        )
    if local.lower().startswith("unsubscribe+"):
        raise ConfigError(
            t.key("feedback_address"), f"{address!r}: unsubscribe+… addresses are opt-outs"
        )
    return address.lower()


def _dns_name(t: Table, key: str, value: str) -> str:
    """`value` when it is a DNS name (labels of letters, digits, inner hyphens)."""
    if not all(_DNS_LABEL.fullmatch(label) for label in value.split(".")):
        raise ConfigError(t.key(key), f"{value!r} is not a DNS name")
    return value
