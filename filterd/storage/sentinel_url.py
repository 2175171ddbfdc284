"""`registry.url = "redis+sentinel://…"`: what such a url names, read once for both
the config check (filterd.config.registry) and the adapter (filterd.storage.connection).

    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]
                     [?sentinel_password=...[&sentinel_username=...]]

The credentials before `@` are the primary's; the query's are those the sentinels
themselves want (their `requirepass`). Values are percent-encoded. A malformed url
is a ConfigError naming registry.url, with any password shown as `***`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from filterd.errors import ConfigError, shown_url
from filterd.units import parse_endpoint

SCHEME = "redis+sentinel"
FORM = (
    "redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]"
    "[?sentinel_password=...[&sentinel_username=...]]"
)
_QUERY_KEYS = ("sentinel_password", "sentinel_username")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """The sentinels, the service (the name they monitor the primary under), the db,
    the primary's credentials and the sentinels' own."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    """Whether `url` is meant as a sentinel url (its scheme)."""
    return url.startswith(SCHEME + ":")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """What `url` names; ConfigError (registry.url, the reason and FORM) if malformed."""

    def bad(reason: str) -> ConfigError:
        return ConfigError("registry.url", f"{shown_url(url)!r}: {reason} (use {FORM})")

    rest = url.removeprefix(SCHEME + ":")
    if not rest.startswith("//"):
        raise bad("no // after the scheme")
    if "#" in rest:
        raise bad("a fragment is not allowed")
    rest, _, query = rest[2:].partition("?")
    options: dict[str, str] = {}
    for item in query.split("&") if query else []:
        name, equals, value = item.partition("=")
        if name not in _QUERY_KEYS or not equals or not value:
            raise bad(f"the query takes only {' and '.join(_QUERY_KEYS)}=VALUE")
        options[name] = unquote(value)
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        if not colon or not secret:
            raise bad("credentials are written :password@ or user:password@")
        username, password = unquote(user) or None, unquote(secret)
    if not hosts:
        raise bad("no sentinel named")
    nodes = []
    for node in hosts.split(","):
        try:
            nodes.append(parse_endpoint(node))
        except ValueError as exc:
            raise bad(f"sentinel {node!r}: {exc}") from None
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise bad("no service name")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise bad("after the service only a db number may follow")
    db = int(parts[1]) if len(parts) == 2 else 0
    return SentinelTarget(
        tuple(nodes), unquote(parts[0]), db, username, password,
        options.get("sentinel_username"), options.get("sentinel_password"),
    )  # fmt: skip
