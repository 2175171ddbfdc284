"""The config file read and checked into frozen Settings.

Every key of SPEC §3 is read under filterd/config/ and nowhere else; relative
paths are taken relative to the directory of the config file, so `filterctl`
and the daemon find the same registry from any working directory. Each table
goes to its reader; the checks that span tables, and the small tables
([keywords], [policy], [daemon]), are here.
"""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any

from filterd.config.api import read_api
from filterd.config.cmpp import read_cmpp
from filterd.config.compliance import read_compliance
from filterd.config.http import read_http
from filterd.config.registry import read_registry
from filterd.config.smpp import read_smpp
from filterd.config.smtp import read_dkim, read_smtp
from filterd.config.table import Table, section
from filterd.config.values import endpoint, limits
from filterd.errors import ConfigError
from filterd.settings import (
    POLICY_IDLE_S,
    CancelMethod,
    DaemonSettings,
    KeywordSettings,
    PolicySettings,
    SenderCompliance,
    Settings,
)
from filterd.units import parse_duration


def load(path: Path) -> Settings:
    """Read and validate the config file at `path`.

    A config file that anyone may write is refused: whoever can write it can
    name the upstream and the accounts.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o002:
        raise ConfigError(
            "--config", f"{path} has mode {mode:04o}: others may write it (chmod 644 or 640)"
        )
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("--config", f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("--config", f"{path}: not UTF-8 text ({exc.reason})") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: Path) -> Settings:
    """Validate parsed TOML; `path` anchors relative paths."""
    root = Table(data, "")
    base = path.resolve().parent
    registry = read_registry(root, base)
    keywords = _keywords(root)
    smtp = section(root, "smtp", lambda t: read_smtp(t, base))
    smpp = section(root, "smpp", read_smpp)
    cmpp = section(root, "cmpp", read_cmpp)
    http = section(root, "http", lambda t: read_http(t, base))
    policy = section(
        root, "policy", lambda t: PolicySettings(endpoint(t, "listen"), limits(t, POLICY_IDLE_S))
    )
    dkim = section(root, "dkim", lambda t: read_dkim(t, base))
    daemon = section(root, "daemon", _daemon) or DaemonSettings()
    compliance = section(root, "compliance", lambda t: read_compliance(t, keywords))
    api = section(root, "api", lambda t: read_api(t, base))
    root.done()
    settings = Settings(
        path, registry, keywords, smtp, smpp, http, policy, dkim, daemon, compliance, api, cmpp
    )
    if compliance is not None and settings.senders():
        _check_compliance_senders(compliance.senders, settings.senders())
    if compliance is not None and compliance.cancel_method is CancelMethod.ADD and http is None:
        raise ConfigError(
            "compliance.cancel_method",
            '"add" needs [http] (public_url, for the List-Unsubscribe URL it adds); '
            'set [http], or cancel_method = "require" or "off"',
        )
    if dkim is not None and (smtp is None or smtp.listen is None):
        raise ConfigError("dkim", "needs the SMTP relay ([smtp] listen)")
    if dkim is not None and http is None:
        raise ConfigError("dkim", "needs [http] (public_url, for the List-Unsubscribe URL)")
    if smtp is not None and smtp.unsubscribe_domain and http is None:
        raise ConfigError("smtp.unsubscribe_domain", "needs [http] (its token settings)")
    if smtp is not None and smtp.unsubscribe_listen and not smtp.unsubscribe_domain:
        raise ConfigError("smtp.unsubscribe_listen", "needs smtp.unsubscribe_domain")
    if smtp is not None and smtp.unsubscribe_listen and smtp.listen is None:
        raise ConfigError("smtp.unsubscribe_listen", "needs the relay (smtp.listen)")
    if smtp is not None and smtp.feedback_address and not smtp.unsubscribe_listen:
        raise ConfigError(
            "smtp.feedback_address",
            f"{smtp.feedback_address!r} needs smtp.unsubscribe_listen (reports arrive there)",
        )
    return settings


def _check_compliance_senders(rules: tuple[SenderCompliance, ...], senders: list[str]) -> None:
    """A [[compliance.senders]] table must name a sender some account or number has: a
    typo would silently leave that sender's messages unchecked."""
    for index, sender in enumerate(rules):
        if sender.sender not in senders:
            raise ConfigError(
                f"compliance.senders[{index}].sender",
                f"{sender.sender!r} is the sender of no account or number "
                f"(the senders are: {', '.join(senders)})",
            )


def _keywords(root: Table) -> KeywordSettings:
    t = Table(root.take("keywords", dict, {}), "keywords")
    defaults = KeywordSettings()
    result = KeywordSettings(
        opt_out=t.strings("opt_out", defaults.opt_out),
        opt_in=t.strings("opt_in", defaults.opt_in),
        help=t.strings("help", defaults.help),
    )
    t.done()
    return result


def _daemon(t: Table) -> DaemonSettings:
    drain = t.parse("drain_timeout", parse_duration, 30)
    if not 1 <= drain <= 3600:
        raise ConfigError("daemon.drain_timeout", f"{drain}s is outside 1s-1h")
    return DaemonSettings(float(drain))
