"""A TOML table read key by key, with errors that name the dotted key and the value.

Every key of SPEC §3 is listed here (_KEYS) and read by one table's reader
(filterd/config/). Unknown keys are errors (a typo must not silently turn a
setting off).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from filterd.errors import ConfigError
from filterd.settings import DEFAULT_CONFIRMATIONS

T = TypeVar("T")

_TOML_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


_LIMIT_KEYS = ("idle_timeout", "max_connections", "max_connections_per_address")
_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({
        "registry", "keywords", "smtp", "smpp", "http", "policy", "dkim", "daemon", "compliance",
        "api", "cmpp",
    }),
    "registry": frozenset({
        "url", "cluster", "data_dir", "secret_file", "request_ttl", "fail_mode",
        "default_region", "server", "bucket_bits", "audit_max_entries", "audit_retention",
        "min_replicas",
    }),
    "keywords": frozenset({"opt_out", "opt_in", "help"}),
    "smtp": frozenset({
        "listen", "upstream", "upstream_tls", "tls_cert", "tls_key", "max_message_size",
        "max_recipients", "accounts", "hostname", "workers", "unsubscribe_domain",
        "unsubscribe_listen", "feedback_address", *_LIMIT_KEYS,
    }),
    "smtp.accounts": frozenset({
        "username", "password", "password_file", "networks", "sender", "stream",
    }),
    "smpp": frozenset({
        "listen", "upstream", "accounts", "numbers", "window", "receipt_ttl", "confirmations",
        "workers", *_LIMIT_KEYS,
    }),
    "smpp.upstream": frozenset({
        "host", "port", "system_id", "password", "window", "rate", "enquire_link",
    }),
    "smpp.accounts": frozenset({"system_id", "password", "sender", "stream"}),
    "smpp.numbers": frozenset({"address", "sender"}),
    "smpp.confirmations": frozenset({"enabled", *DEFAULT_CONFIRMATIONS}),
    "cmpp": frozenset({
        "listen", "upstream", "accounts", "numbers", "window", "receipt_ttl", "confirmations",
        "workers", *_LIMIT_KEYS,
    }),
    "cmpp.upstream": frozenset({
        "host", "port", "sp_id", "shared_secret", "version", "window", "rate", "active_test",
    }),
    "cmpp.accounts": frozenset({"sp_id", "shared_secret", "sender", "stream"}),
    "cmpp.numbers": frozenset({"address", "sender"}),
    "cmpp.confirmations": frozenset({"enabled", *DEFAULT_CONFIRMATIONS}),
    "http": frozenset({
        "listen", "public_url", "token_secret_file", "retired_token_secret_files",
        "token_max_age", "body_timeout", "status_networks", *_LIMIT_KEYS,
    }),
    "policy": frozenset({"listen", *_LIMIT_KEYS}),
    "dkim": frozenset({"selector", "domain", "key_file"}),
    "daemon": frozenset({"drain_timeout"}),
    "compliance": frozenset({"cancel_method", "quiet_hours", "time_zone", "senders"}),
    "compliance.senders": frozenset({"sender", "signature", "sms_cancel_text"}),
    "api": frozenset({"listen", "keys", "body_timeout", *_LIMIT_KEYS}),
    "api.keys": frozenset({"name", "key_file", "senders", "scopes"}),
}  # fmt: skip
"""Every key each table may hold, by the table's dotted name (the tables of an
array of tables under the array's name, without the index). A key of the file
that is not listed here is reported as unknown before anything else of its table
is checked, so a typo reads "smtp.lisen: unknown key", not "smtp.listen is required"."""
_INDEX = re.compile(r"\[\d+\]")


class Table:
    """A TOML table read key by key. Keys it may not hold (see _KEYS) are reported
    when it is made, before any of its values is checked."""

    def __init__(self, data: object, name: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(name, "must be a table")
        self.data: dict[str, Any] = dict(data)
        self.name = name
        self.known = _KEYS[_INDEX.sub("", name)]
        unknown = sorted(set(self.data) - self.known)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key" + self._hint(unknown[0]))

    def _hint(self, unknown: str) -> str:
        """`; did you mean "listen"?` for a key close to one of the table's keys not given."""
        close = difflib.get_close_matches(unknown, sorted(self.known - set(self.data)), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    def key(self, key: str) -> str:
        """The dotted name of `key` in this table, for error messages."""
        return f"{self.name}.{key}" if self.name else key

    def take(
        self, key: str, kind: type[Any], default: Any = None, *, required: bool = False
    ) -> Any:
        """Pop `key`, checking its TOML type; `default` when absent."""
        if key not in self.known:  # a key read here must be listed in _KEYS
            raise LookupError(f"{self.key(key)} is read but not listed in config.table._KEYS")
        if key not in self.data:
            if required:
                raise ConfigError(self.key(key), "is required")
            return default
        value = self.data.pop(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(key), f"must be {_TOML_TYPES[kind]}, not {value!r}")
        return value

    def parse(
        self, key: str, parser: Callable[[str], T], default: T, *, required: bool = False
    ) -> T:
        """Pop a string `key` and convert it with `parser`."""
        raw = self.take(key, str, None, required=required)
        if raw is None:
            return default
        try:
            return parser(raw)
        except ValueError as exc:
            raise ConfigError(self.key(key), str(exc)) from None

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Pop a list of non-empty strings."""
        value = self.take(key, list, None)
        if value is None:
            return default
        if not all(isinstance(item, str) and item for item in value):
            raise ConfigError(self.key(key), "must be a list of non-empty strings")
        return tuple(value)

    def tables(self, key: str) -> list[Table]:
        """Pop an array of tables."""
        value = self.take(key, list, [])
        return [Table(item, f"{self.key(key)}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        """Raise for the first key nobody read (a listed key that this table's reader
        left alone, so its setting would be silently ignored)."""
        if self.data:
            unread = sorted(self.data)[0]
            raise ConfigError(self.key(unread), "unknown key")


def section(root: Table, name: str, build: Callable[[Table], T]) -> T | None:
    """The optional table `name` of `root` read by `build` (None when absent); a key
    `build` left unread is reported as unknown."""
    raw = root.take(name, dict, None)
    if raw is None:
        return None
    table = Table(raw, name)
    result = build(table)
    table.done()
    return result
