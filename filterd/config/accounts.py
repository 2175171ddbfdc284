"""[[smtp.accounts]] and [[smpp.accounts]]: who may submit, with which credentials,
for which sender and stream. Passwords may come from a private file beside the
config; SMPP 3.4 bounds system_id and password lengths."""

from __future__ import annotations

from pathlib import Path

from filterd.config.table import Table
from filterd.config.values import check_private, networks
from filterd.errors import ConfigError
from filterd.model import MessageClass
from filterd.settings import SmppAccount, SmtpAccount


def smtp_account(a: Table, base: Path, *, relay_on: bool) -> SmtpAccount:
    """One [[smtp.accounts]] table. With the relay on, an account without networks
    needs a password; without the relay, Postfix checks the passwords."""
    allowed = networks(a, "networks", ())
    account = SmtpAccount(
        username=a.take("username", str, required=True),
        password=_password(a, base, required=relay_on and not allowed),
        networks=allowed,
        sender=a.take("sender", str, required=True),
        stream=stream(a),
    )
    a.done()
    return account


def smpp_account(a: Table) -> SmppAccount:
    """One [[smpp.accounts]] table."""
    system_id, password = smpp_credentials(a, "system_id")
    account = SmppAccount(system_id, password, a.take("sender", str, required=True), stream(a))
    a.done()
    return account


def smpp_credentials(t: Table, id_key: str) -> tuple[str, str]:
    """The system id under `id_key` and the password, within SMPP 3.4's lengths."""
    system_id = t.take(id_key, str, required=True)
    password = t.take("password", str, required=True)
    if len(system_id) > 15:
        raise ConfigError(t.key(id_key), f"{system_id!r} is longer than 15 characters (SMPP 3.4)")
    if len(password) > 8:
        raise ConfigError(t.key("password"), "is longer than 8 characters (SMPP 3.4)")
    return system_id, password


def stream(t: Table) -> MessageClass:
    """`stream`: commercial or transactional."""
    raw = t.take("stream", str, required=True)
    try:
        return MessageClass(raw)
    except ValueError:
        raise ConfigError(t.key("stream"), f"{raw!r}: use commercial or transactional") from None


def _password(t: Table, base: Path, *, required: bool) -> str | None:
    password = t.take("password", str, None)
    password_file = t.take("password_file", str, None)
    if password is not None and password_file is not None:
        raise ConfigError(t.key("password_file"), "give password or password_file, not both")
    if password_file is not None:
        check_private(base / password_file, t.key("password_file"))
        try:
            password = (base / password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(t.key("password_file"), f"{password_file}: {exc.strerror}") from None
    if required and not password:
        raise ConfigError(t.key("password"), "is required (or networks, or password_file)")
    return str(password) if password else None
