"""TOML configuration → frozen Settings, with errors that name the key.

Every key of SPEC §3 is read here and nowhere else; relative paths are taken
relative to the directory of the config file, so `filterctl` and the daemon
find the same registry from any working directory. Unknown keys are errors
(a typo must not silently turn a setting off).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from filterd.errors import ConfigError, shown_url
from filterd.model import MessageClass
from filterd.normalize import is_region
from filterd.policy import FailMode
from filterd.settings import (
    DEFAULT_CONFIRMATIONS,
    HTTP_IDLE_S,
    LOOPBACK,
    POLICY_IDLE_S,
    SMPP_IDLE_S,
    SMTP_IDLE_S,
    Confirmations,
    DaemonSettings,
    DkimSettings,
    Endpoint,
    HttpSettings,
    KeywordSettings,
    ListenerLimits,
    PolicySettings,
    RegistrySettings,
    Settings,
    SmppAccount,
    SmppNumber,
    SmppSettings,
    SmppUpstream,
    SmtpAccount,
    SmtpSettings,
)
from filterd.storage.embedded import MAX_SOCKET_PATH
from filterd.storage.sentinel_url import is_sentinel_url, parse_sentinel_url
from filterd.units import parse_duration, parse_endpoint, parse_size

T = TypeVar("T")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

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
    "": frozenset({"registry", "keywords", "smtp", "smpp", "http", "policy", "dkim", "daemon"}),
    "registry": frozenset({
        "url", "cluster", "data_dir", "secret_file", "request_ttl", "fail_mode",
        "default_region", "server", "bucket_bits", "audit_max_entries", "audit_retention",
        "min_replicas",
    }),
    "keywords": frozenset({"opt_out", "opt_in", "help"}),
    "smtp": frozenset({
        "listen", "upstream", "upstream_tls", "tls_cert", "tls_key", "max_message_size",
        "max_recipients", "accounts", "hostname", "workers", "unsubscribe_domain",
        "unsubscribe_listen", *_LIMIT_KEYS,
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
    "http": frozenset({
        "listen", "public_url", "token_secret_file", "retired_token_secret_files",
        "token_max_age", "body_timeout", "status_networks", *_LIMIT_KEYS,
    }),
    "policy": frozenset({"listen", *_LIMIT_KEYS}),
    "dkim": frozenset({"selector", "domain", "key_file"}),
    "daemon": frozenset({"drain_timeout"}),
}  # fmt: skip
"""Every key each table may hold, by the table's dotted name (the tables of an
array of tables under the array's name, without the index). A key of the file
that is not listed here is reported as unknown before anything else of its table
is checked, so a typo reads "smtp.lisen: unknown key", not "smtp.listen is required"."""
_INDEX = re.compile(r"\[\d+\]")


class _Table:
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
            raise LookupError(f"{self.key(key)} is read but not listed in config._KEYS")
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

    def tables(self, key: str) -> list[_Table]:
        """Pop an array of tables."""
        value = self.take(key, list, [])
        return [_Table(item, f"{self.key(key)}[{i}]") for i, item in enumerate(value)]

    def done(self) -> None:
        """Raise for the first key nobody read (a listed key that this table's reader
        left alone, so its setting would be silently ignored)."""
        if self.data:
            unread = sorted(self.data)[0]
            raise ConfigError(self.key(unread), "unknown key")


_LOOSE = 0o026
"""Mode bits a file holding a secret must not have: group write, other read or write."""


def check_private(path: Path, key: str) -> None:
    """Refuse a file holding a secret that others may read or anyone but its owner write."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(key, f"{path}: {exc.strerror}") from None
    if mode & _LOOSE:
        raise ConfigError(
            key,
            f"{path} has mode {mode:04o}: others may read or write it (chmod 600, or 640)",
        )


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
    root = _Table(data, "")
    base = path.resolve().parent
    registry = _registry(root, base)
    keywords = _keywords(root)
    smtp = _section(root, "smtp", lambda t: _smtp(t, base))
    smpp = _section(root, "smpp", _smpp)
    http = _section(root, "http", lambda t: _http(t, base))
    policy = _section(
        root, "policy", lambda t: PolicySettings(_endpoint(t, "listen"), _limits(t, POLICY_IDLE_S))
    )
    dkim = _section(root, "dkim", lambda t: _dkim(t, base))
    daemon = _section(root, "daemon", _daemon) or DaemonSettings()
    root.done()
    settings = Settings(path, registry, keywords, smtp, smpp, http, policy, dkim, daemon)
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
    return settings


def _section(root: _Table, name: str, build: Callable[[_Table], T]) -> T | None:
    raw = root.take(name, dict, None)
    if raw is None:
        return None
    table = _Table(raw, name)
    result = build(table)
    table.done()
    return result


def _endpoint(table: _Table, key: str) -> Endpoint:
    """A required host:port; for `listen`, port 0 (any free port, logged at start) is allowed."""
    parser = functools.partial(parse_endpoint, any_port=key.endswith("listen"))
    result: Endpoint = table.parse(key, parser, ("", 0), required=True)
    return result


def _registry(root: _Table, base: Path) -> RegistrySettings:
    t = _Table(root.take("registry", dict, {}), "registry")
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


def _keywords(root: _Table) -> KeywordSettings:
    t = _Table(root.take("keywords", dict, {}), "keywords")
    defaults = KeywordSettings()
    result = KeywordSettings(
        opt_out=t.strings("opt_out", defaults.opt_out),
        opt_in=t.strings("opt_in", defaults.opt_in),
        help=t.strings("help", defaults.help),
    )
    t.done()
    return result


def _stream(t: _Table) -> MessageClass:
    raw = t.take("stream", str, required=True)
    try:
        return MessageClass(raw)
    except ValueError:
        raise ConfigError(t.key("stream"), f"{raw!r}: use commercial or transactional") from None


def _password(t: _Table, base: Path, *, required: bool) -> str | None:
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


def _smtp(t: _Table, base: Path) -> SmtpSettings:
    relay_on = "listen" in t.data  # without the relay, Postfix checks the passwords
    accounts = []
    for a in t.tables("accounts"):
        networks = _networks(a, "networks", ())
        accounts.append(
            SmtpAccount(
                username=a.take("username", str, required=True),
                password=_password(a, base, required=relay_on and not networks),
                networks=networks,
                sender=a.take("sender", str, required=True),
                stream=_stream(a),
            )
        )
        a.done()
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
    listen = _endpoint(t, "listen") if "listen" in t.data else None
    upstream = _endpoint(t, "upstream") if listen is not None else None
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
        workers=_workers(t, listen),
        unsubscribe_domain=_unsubscribe_domain(t),
        unsubscribe_listen=_endpoint(t, "unsubscribe_listen")
        if "unsubscribe_listen" in t.data
        else None,
        limits=_limits(t, SMTP_IDLE_S),
    )


def _unsubscribe_domain(t: _Table) -> str | None:
    domain: str = t.take("unsubscribe_domain", str, "")
    if not domain:
        return None
    return _dns_name(t, "unsubscribe_domain", domain).lower()


def _dns_name(t: _Table, key: str, value: str) -> str:
    """`value` when it is a DNS name (labels of letters, digits, inner hyphens)."""
    if not all(_DNS_LABEL.fullmatch(label) for label in value.split(".")):
        raise ConfigError(t.key(key), f"{value!r} is not a DNS name")
    return value


def _workers(t: _Table, listen: Endpoint | None) -> int:
    workers: int = t.take("workers", int, 1)
    if not 1 <= workers <= 64:
        raise ConfigError(t.key("workers"), f"{workers} is outside 1-64")
    if workers > 1 and listen is not None and listen[1] == 0:
        raise ConfigError(
            t.key("workers"), f"{workers} workers need a fixed listen port, not port 0"
        )
    return workers


def _smpp_credentials(t: _Table, id_key: str) -> tuple[str, str]:
    system_id = t.take(id_key, str, required=True)
    password = t.take("password", str, required=True)
    if len(system_id) > 15:
        raise ConfigError(t.key(id_key), f"{system_id!r} is longer than 15 characters (SMPP 3.4)")
    if len(password) > 8:
        raise ConfigError(t.key("password"), "is longer than 8 characters (SMPP 3.4)")
    return system_id, password


def _smpp(t: _Table) -> SmppSettings:
    upstream = None
    raw = t.take("upstream", dict, None)
    if raw is not None:
        u = _Table(raw, "smpp.upstream")
        port = u.take("port", int, required=True)
        if not 0 < port < 65536:
            raise ConfigError("smpp.upstream.port", f"{port} is out of range 1-65535")
        host = u.take("host", str, required=True)
        system_id, password = _smpp_credentials(u, "system_id")
        window = u.take("window", int, 50)
        if not 1 <= window <= 1000:
            raise ConfigError("smpp.upstream.window", f"{window} is outside 1-1000")
        rate = u.take("rate", float, 0.0)
        if rate < 0:
            raise ConfigError("smpp.upstream.rate", f"{rate} is negative")
        enquire = u.parse("enquire_link", parse_duration, 30)
        upstream = SmppUpstream(host, port, system_id, password, window, rate, enquire)
        u.done()
    accounts = []
    for a in t.tables("accounts"):
        system_id, password = _smpp_credentials(a, "system_id")
        accounts.append(
            SmppAccount(system_id, password, a.take("sender", str, required=True), _stream(a))
        )
        a.done()
    numbers = []
    for n in t.tables("numbers"):
        numbers.append(
            SmppNumber(n.take("address", str, required=True), n.take("sender", str, required=True))
        )
        n.done()
    window = t.take("window", int, 100)
    if not 1 <= window <= 10_000:
        raise ConfigError("smpp.window", f"{window} is outside 1-10000")
    listen = _endpoint(t, "listen")
    return SmppSettings(
        listen,
        upstream,
        tuple(accounts),
        tuple(numbers),
        window=window,
        receipt_ttl_s=t.parse("receipt_ttl", parse_duration, 3 * 86400),
        confirmations=_confirmations(t),
        workers=_workers(t, listen),
        limits=_limits(t, SMPP_IDLE_S),
    )


def _confirmations(t: _Table) -> Confirmations:
    raw = t.take("confirmations", dict, None)
    if raw is None:
        return Confirmations()
    c = _Table(raw, "smpp.confirmations")
    enabled = c.take("enabled", bool, True)
    texts = {intent: dict(choices) for intent, choices in DEFAULT_CONFIRMATIONS.items()}
    for intent in DEFAULT_CONFIRMATIONS:
        table = c.take(intent, dict, None)
        if table is None:
            continue
        if not table or not all(isinstance(v, str) and v for v in table.values()):
            raise ConfigError(
                f"smpp.confirmations.{intent}", "must map languages to non-empty texts"
            )
        texts[intent] = dict(table)
    c.done()
    return Confirmations(enabled, texts)


def _http(t: _Table, base: Path) -> HttpSettings:
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
        listen=_endpoint(t, "listen"),
        public_url=public_url.rstrip("/"),
        token_secret_file=base / token_file if token_file else None,
        retired_token_secret_files=tuple(base / name for name in retired if name != "derived"),
        retired_derived_key="derived" in retired,
        token_max_age_s=max_age,
        limits=_limits(t, HTTP_IDLE_S),
        body_timeout_s=float(t.parse("body_timeout", parse_duration, 30)),
        status_networks=_networks(t, "status_networks", LOOPBACK),
    )


def _limits(t: _Table, idle_s: float) -> ListenerLimits:
    """`idle_timeout`, `max_connections`, `max_connections_per_address` of a listener table."""
    idle = float(t.parse("idle_timeout", parse_duration, int(idle_s)))
    if idle > 86400:
        raise ConfigError(t.key("idle_timeout"), f"{idle:.0f}s is over 1d")
    total = t.take("max_connections", int, 1000)
    if not 1 <= total <= 1_000_000:
        raise ConfigError(t.key("max_connections"), f"{total} is outside 1-1000000")
    per_address = t.take("max_connections_per_address", int, 100)
    if not 1 <= per_address <= total:
        raise ConfigError(
            t.key("max_connections_per_address"),
            f"{per_address} is outside 1-{total} (max_connections)",
        )
    return ListenerLimits(idle, total, per_address)


def _networks(
    t: _Table, key: str, default: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of CIDR networks (`"10.0.0.0/8"`, `"::1/128"`; a bare address is a /32 or /128)."""
    if key not in t.data:
        return default
    networks = []
    for raw in t.strings(key):
        try:
            networks.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(t.key(key), f"{raw!r} is not a CIDR network") from None
    return tuple(networks)


def _daemon(t: _Table) -> DaemonSettings:
    drain = t.parse("drain_timeout", parse_duration, 30)
    if not 1 <= drain <= 3600:
        raise ConfigError("daemon.drain_timeout", f"{drain}s is outside 1s-1h")
    return DaemonSettings(float(drain))


def _dkim(t: _Table, base: Path) -> DkimSettings:
    selector = t.take("selector", str, required=True)
    domain = t.take("domain", str, required=True)
    _dns_name(t, "selector", selector)
    _dns_name(t, "domain", domain)
    key_file = base / t.take("key_file", str, required=True)
    if not key_file.is_file():
        raise ConfigError("dkim.key_file", f"{key_file}: no such file")
    check_private(key_file, "dkim.key_file")
    return DkimSettings(selector, domain.lower(), key_file)


SYSTEM_CONFIG = Path("/etc/filterd/filterd.toml")
LOCAL_CONFIG = Path("config/filterd.toml")
"""The config files looked for, in this order, without --config and $FILTERD_CONFIG
(LOCAL_CONFIG relative to the working directory)."""


def default_path(explicit: str | None, environ: dict[str, str]) -> Path:
    """--config, else $FILTERD_CONFIG, else /etc/filterd/filterd.toml, else config/filterd.toml.

    Without --config the file must exist, or a ConfigError names every path looked
    at. A $FILTERD_CONFIG that names no file is an error too, not a reason to take
    one of the default files instead (a path given on purpose is never swapped for
    another config).
    """
    if explicit:
        return Path(explicit)
    if environ.get("FILTERD_CONFIG"):
        path = Path(environ["FILTERD_CONFIG"])
        if not path.exists():
            raise ConfigError(
                "$FILTERD_CONFIG",
                f"{path}: no such file (--config not given; while $FILTERD_CONFIG is set, "
                f"{SYSTEM_CONFIG} and {LOCAL_CONFIG} are not looked at)",
            )
        return path
    for path in (SYSTEM_CONFIG, LOCAL_CONFIG):
        if path.exists():
            return path
    raise ConfigError(
        "--config",
        f"not given and $FILTERD_CONFIG not set, and no config file at {SYSTEM_CONFIG} "
        f"or {LOCAL_CONFIG.absolute()}; give --config PATH",
    )
