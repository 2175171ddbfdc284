"""Values several config tables hold: endpoints, listener limits, worker counts,
CIDR networks, files holding a secret, and the MO numbers and confirmation texts of
the SMS relays.
Each error names the dotted key."""

from __future__ import annotations

import functools
import ipaddress
import re
import stat
from pathlib import Path

from filterd.config.table import Table
from filterd.errors import ConfigError
from filterd.settings import DEFAULT_CONFIRMATIONS, Confirmations, Endpoint, ListenerLimits
from filterd.units import parse_duration, parse_endpoint


def endpoint(table: Table, key: str) -> Endpoint:
    """A required host:port; for `listen`, port 0 (any free port, logged at start) is allowed."""
    parser = functools.partial(parse_endpoint, any_port=key.endswith("listen"))
    result: Endpoint = table.parse(key, parser, ("", 0), required=True)
    return result


def limits(t: Table, idle_s: float) -> ListenerLimits:
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


def workers(t: Table, listen: Endpoint | None) -> int:
    """`workers`: 1-64 processes, more than one only on a fixed listen port."""
    count: int = t.take("workers", int, 1)
    if not 1 <= count <= 64:
        raise ConfigError(t.key("workers"), f"{count} is outside 1-64")
    if count > 1 and listen is not None and listen[1] == 0:
        raise ConfigError(t.key("workers"), f"{count} workers need a fixed listen port, not port 0")
    return count


def networks(
    t: Table, key: str, default: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A list of CIDR networks (`"10.0.0.0/8"`, `"::1/128"`; a bare address is a /32 or /128)."""
    if key not in t.data:
        return default
    found = []
    for raw in t.strings(key):
        try:
            found.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(t.key(key), f"{raw!r} is not a CIDR network") from None
    return tuple(found)


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


def confirmations(t: Table) -> Confirmations:
    """The `confirmations` table of [smpp] or [cmpp]: `enabled`, and for each intent
    (opt_out, opt_in, help) texts by language replacing the defaults."""
    raw = t.take("confirmations", dict, None)
    if raw is None:
        return Confirmations()
    c = Table(raw, t.key("confirmations"))
    enabled = c.take("enabled", bool, True)
    texts = {intent: dict(choices) for intent, choices in DEFAULT_CONFIRMATIONS.items()}
    for intent in DEFAULT_CONFIRMATIONS:
        table = c.take(intent, dict, None)
        if table is None:
            continue
        if not table or not all(isinstance(v, str) and v for v in table.values()):
            raise ConfigError(c.key(intent), "must map languages to non-empty texts")
        texts[intent] = dict(table)
    c.done()
    return Confirmations(enabled, texts)


def mo_numbers(t: Table, address: re.Pattern[str], wrong: str) -> list[tuple[str, str]]:
    """The `numbers` array of [smpp] or [cmpp]: (address, sender) pairs, each address
    matching `address` (else ConfigError: the value and `wrong`) and listed once (the
    MO of a number belongs to one sender)."""
    numbers: list[tuple[str, str]] = []
    for n in t.tables("numbers"):
        value = n.take("address", str, required=True)
        if not address.fullmatch(value):
            raise ConfigError(n.key("address"), f"{value!r} is not {wrong}")
        for index, (earlier, _) in enumerate(numbers):
            if earlier == value:
                raise ConfigError(
                    n.key("address"), f"{value!r} is already {t.key('numbers')}[{index}]"
                )
        numbers.append((value, n.take("sender", str, required=True)))
        n.done()
    return numbers
