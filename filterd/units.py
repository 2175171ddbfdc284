"""Parsing of the small value formats the config and CLI share.

Durations are `90s`, `15m`, `24h`, `30d`; sizes are `512`, `64KB`, `25MB`,
`1GB` (powers of 1024 for KiB/MiB/GiB, 1000 for KB/MB/GB); endpoints are
`host:port` or `[v6]:port`. Every parser raises ValueError with a sentence
that names the offending value.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhd])\s*$", re.ASCII)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_duration(text: str) -> int:
    """Return the duration `text` (`90s`, `15m`, `24h`, `30d`) in seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use 90s, 15m, 24h or 30d)")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_size(text: str | int) -> int:
    """Return the size `text` (`25MB`, `64KiB`, `1000`) in bytes."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size")  # noqa: TRY004 - callers expect ValueError
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"{text!r} is not a positive size")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (use e.g. 25MB, 64KiB or 1000)")
    size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()]
    if size <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return size


def parse_endpoint(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into (host, port).

    With `any_port`, port 0 (a free port chosen by the OS) is allowed.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdecimal()):
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"{text!r} has an empty host")
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address as [addr]:port")
    port = int(port_text)
    if not (0 if any_port else 1) <= port < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range 1-65535")
    return host, port
