"""[api]: the decision and consent API's listener, limits and bearer keys.

Each `[[api.keys]]` names its key, a `key_file` beside the config (mode 0600, like
the registry secret: a key file others may read is refused) holding the bearer key
of at least MIN_KEY_CHARS characters, the senders it may act for (`["*"]`: all) and
its scopes (check, read, write)."""

from __future__ import annotations

import stat
from pathlib import Path

from filterd.config.table import Table
from filterd.config.values import endpoint, limits
from filterd.errors import ConfigError
from filterd.settings import API_SCOPES, HTTP_IDLE_S, ApiKey, ApiSettings
from filterd.units import parse_duration

MIN_KEY_CHARS = 32
"""A bearer key shorter than this is refused."""


def read_api(t: Table, base: Path) -> ApiSettings:
    """The [api] table; `base` anchors the key files."""
    keys = tuple(_key(k, base) for k in t.tables("keys"))
    if not keys:
        raise ConfigError(t.key("keys"), "at least one [[api.keys]] is required")
    names = [k.name for k in keys]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"api.keys[{index}].name", f"{name!r} is given twice")
    secrets = [k.key for k in keys]
    for index, key in enumerate(secrets):
        if key in secrets[:index]:
            raise ConfigError(f"api.keys[{index}].key_file", "holds the key of another key")
    return ApiSettings(
        listen=endpoint(t, "listen"),
        keys=keys,
        limits=limits(t, HTTP_IDLE_S),
        body_timeout_s=float(t.parse("body_timeout", parse_duration, 30)),
    )


def _key(t: Table, base: Path) -> ApiKey:
    name = t.take("name", str, required=True)
    if not name.strip():
        raise ConfigError(t.key("name"), "must not be empty")
    key = read_key_file(base / t.take("key_file", str, required=True), t.key("key_file"))
    senders = t.strings("senders")
    if not senders:
        raise ConfigError(t.key("senders"), 'is required: the senders it may act for, or ["*"]')
    scopes = t.strings("scopes")
    unknown = sorted(set(scopes) - set(API_SCOPES))
    if not scopes or unknown:
        problem = f"{unknown[0]!r} is not a scope" if unknown else "is required"
        raise ConfigError(t.key("scopes"), f"{problem}; use {', '.join(API_SCOPES)}")
    t.done()
    return ApiKey(name=name, key=key, senders=senders, scopes=frozenset(scopes))


def read_key_file(path: Path, key: str) -> str:
    """The bearer key in `path`: mode 0600 (nobody else may read it), at least
    MIN_KEY_CHARS printable ASCII characters, without spaces."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(key, f"{path} has mode {mode:04o}; it must be 0600 (chmod 600)")
        text = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(key, f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path}: the key must be ASCII") from None
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(key, f"{path} holds fewer than {MIN_KEY_CHARS} characters")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ConfigError(key, f"{path}: the key must be one line without spaces")
    return text
