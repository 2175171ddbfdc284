"""[http]: the HTTP listener (one-click unsubscribe, status), the public URL that
goes into List-Unsubscribe headers, and the keys and age of unsubscribe tokens."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from filterd.config.table import Table
from filterd.config.values import endpoint, limits, networks
from filterd.errors import ConfigError
from filterd.settings import HTTP_IDLE_S, LOOPBACK, HttpSettings
from filterd.units import parse_duration


def read_http(t: Table, base: Path) -> HttpSettings:
    """The [http] table; `base` anchors the token key files."""
    public_url = t.take("public_url", str, required=True)
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ConfigError("http.public_url", f"{public_url!r} is not an http(s) URL")
    if not public_url.isascii() or any(c.isspace() or not c.isprintable() for c in public_url):
        raise ConfigError(
            "http.public_url",
            f"{public_url!r}: use ASCII without spaces (an international host name "
            "in its xn-- form); it goes into List-Unsubscribe headers",
        )
    token_file = t.take("token_secret_file", str, "") or None
    retired = t.strings("retired_token_secret_files")
    max_age = t.parse("token_max_age", parse_duration, 400 * 86400)
    if max_age < 86400:
        raise ConfigError("http.token_max_age", "must be at least 1d")
    return HttpSettings(
        listen=endpoint(t, "listen"),
        public_url=public_url.rstrip("/"),
        token_secret_file=base / token_file if token_file else None,
        retired_token_secret_files=tuple(base / name for name in retired if name != "derived"),
        retired_derived_key="derived" in retired,
        token_max_age_s=max_age,
        limits=limits(t, HTTP_IDLE_S),
        body_timeout_s=float(t.parse("body_timeout", parse_duration, 30)),
        status_networks=networks(t, "status_networks", LOOPBACK),
    )
