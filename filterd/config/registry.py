"""[registry]: where the consent registry lives (the embedded server, a redis://,
rediss:// or unix:// url, a redis+sentinel:// url, or a Redis Cluster node) and
its limits. A url that cannot be used is refused here, with its password shown
as ***, not when the registry is first used."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from filterd.config.table import Table
from filterd.errors import ConfigError, shown_url
from filterd.normalize import is_region
from filterd.policy import FailMode
from filterd.settings import RegistrySettings
from filterd.storage.embedded import MAX_SOCKET_PATH
from filterd.storage.sentinel_url import is_sentinel_url, parse_sentinel_url
from filterd.units import parse_duration


def read_registry(root: Table, base: Path) -> RegistrySettings:
    """The [registry] table of `root` (defaults when absent); `base` anchors its paths."""
    t = Table(root.take("registry", dict, {}), "registry")
    url = t.take("url", str, "embedded")
    sentinel = is_sentinel_url(url)
    if sentinel:
        parse_sentinel_url(url)  # ConfigError if malformed
    elif url != "embedded" and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            "registry.url",
            f"{shown_url(url)!r}: use embedded, redis://, rediss://, unix:// or redis+sentinel://",
        )
    elif url != "embedded":
        _check_url(url)
    cluster = t.take("cluster", bool, False)
    if cluster and not url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "registry.cluster",
            f"true needs a redis:// or rediss:// url naming a cluster node, not {shown_url(url)!r}",
        )
    min_replicas = t.take("min_replicas", int, 1 if sentinel or cluster else 0)
    if min_replicas < 0:
        raise ConfigError("registry.min_replicas", f"{min_replicas} is negative")
    if url == "embedded" and min_replicas:
        raise ConfigError("registry.min_replicas", "the embedded server has no replicas (use 0)")
    region = t.take("default_region", str, "") or None
    if region is not None and not is_region(region.upper()):
        raise ConfigError("registry.default_region", f"{region!r} is not a region code")
    fail_mode = t.take("fail_mode", str, "closed")
    if fail_mode not in ("closed", "open"):
        raise ConfigError("registry.fail_mode", f"{fail_mode!r}: use closed or open")
    bits = t.take("bucket_bits", int, 16)
    if not 16 <= bits <= 24:
        raise ConfigError("registry.bucket_bits", f"{bits} is outside 16-24")
    max_entries = t.take("audit_max_entries", int, 1_000_000)
    if max_entries < 1000:
        raise ConfigError("registry.audit_max_entries", f"{max_entries} is below 1000")
    settings = RegistrySettings(
        url=url,
        cluster=cluster,
        data_dir=base / t.take("data_dir", str, "var"),
        secret_file=base / t.take("secret_file", str, "var/secret"),
        request_ttl_s=t.parse("request_ttl", parse_duration, 30 * 86400),
        fail_mode=FailMode(fail_mode),
        default_region=region.upper() if region else None,
        server=t.take("server", str, "") or None,
        bucket_bits=bits,
        audit_max_entries=max_entries,
        audit_retention_s=t.parse("audit_retention", parse_duration, 400 * 86400),
        min_replicas=min_replicas,
    )
    socket_path = settings.data_dir / "registry.sock"
    if url == "embedded" and len(str(socket_path)) > MAX_SOCKET_PATH:
        raise ConfigError(
            "registry.data_dir",
            f"{str(settings.data_dir)!r} is too long for the embedded server's unix socket "
            f"(at most {MAX_SOCKET_PATH - len('/registry.sock')} characters)",
        )
    t.done()
    return settings


def _check_url(url: str) -> None:
    """ConfigError naming registry.url unless `url` is a usable redis://, rediss:// or
    unix:// url (a host and a port 1-65535, or a socket path)."""
    parts = urlsplit(url)
    shown = repr(shown_url(url))
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("registry.url", f"{shown}: use embedded, redis://, rediss:// or unix://")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError("registry.url", f"{shown}: a unix:// url needs a socket path")
    if parts.scheme != "unix":
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            raise ConfigError("registry.url", f"{shown}: the port is not a number from 1 to 65535")
        if not parts.hostname:
            raise ConfigError("registry.url", f"{shown}: needs a host")
