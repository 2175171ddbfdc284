"""The filterd exception tree. Library exceptions are mapped to these at one boundary."""

from __future__ import annotations

import re


class FilterdError(Exception):
    """Base of every error filterd raises on purpose."""


class UsageError(FilterdError):
    """Bad input from a user: an address, a duration, a CSV row, an option."""


class InvalidAddress(UsageError):
    """An address that is neither a valid phone number nor a valid email."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"invalid address {value!r}: {reason}")
        self.value = value
        self.reason = reason


class ConfigError(FilterdError):
    """A configuration key with a bad value; names the key and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}")
        self.key = key
        self.reason = reason


class RegistryUnavailable(FilterdError):
    """The registry could not be read or written (connection, timeout, server error)."""


class NotDurable(RegistryUnavailable):
    """A write reached Redis but could not be confirmed durable (AOF fsync)."""


_QUERY_SECRET = re.compile(r"([?&][A-Za-z_]*password=)[^&#]*")


def shown_url(url: str) -> str:
    """`url` as it may be shown in an error or a log line: the password of its
    credentials and any `…password=` query value replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))  # fmt: skip
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    tail = _QUERY_SECRET.sub(r"\1***", tail)
    return f"{scheme}{sep}{netloc}{tail}"
