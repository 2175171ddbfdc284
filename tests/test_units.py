"""Durations, sizes and endpoints as the config and CLI write them (filterd/units.py)."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.units import parse_duration, parse_endpoint, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("24h", 86_400),
        ("30d", 2_592_000),
        ("1s", 1),
        (" 5 m ", 300),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    """A duration in s, m, h or d converts to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "90", "s", "5w", "1.5h", "-1s", "+1s", "15 minutes", "1h30m", "15M", "0s", "0d"],
)
def test_bad_durations_raise_naming_the_value(text: str) -> None:
    """A malformed, unknown-unit or zero duration raises ValueError quoting the value."""
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhd"))
@settings(max_examples=50)
def test_duration_is_number_times_unit(number: int, unit: str) -> None:
    """Every positive '<n><unit>' is n times the unit's length in seconds."""
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{number}{unit}") == number * factor


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("25MB", 25_000_000),
        ("64KiB", 65_536),
        ("64KB", 64_000),
        ("1GB", 1_000_000_000),
        ("1GiB", 1_073_741_824),
        ("2MiB", 2_097_152),
        ("512", 512),
        ("512B", 512),
        ("25mb", 25_000_000),
        (" 64 kib ", 65_536),
        (1000, 1000),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    """Sizes use 1000 for KB/MB/GB and 1024 for KiB/MiB/GiB; a bare number is bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "25 XB", "1.5MB", "-1MB", "25TB", "0", "0MB", "KiB"])
def test_bad_sizes_raise_naming_the_value(text: str) -> None:
    """A malformed, unknown-unit or zero size raises ValueError quoting the value."""
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_size(text)


@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_integer_size_is_rejected(value: int) -> None:
    """An integer size (a TOML number) must be positive."""
    with pytest.raises(ValueError, match="not a positive size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("localhost:25", ("localhost", 25)),
        ("127.0.0.1:2775", ("127.0.0.1", 2775)),
        ("mx.example.com:65535", ("mx.example.com", 65535)),
        ("relay:1", ("relay", 1)),
        ("[::1]:25", ("::1", 25)),
        ("[2001:db8::5]:587", ("2001:db8::5", 587)),
    ],
)
def test_endpoints(text: str, endpoint: tuple[str, int]) -> None:
    """host:port and [v6]:port split into (host, port); brackets are removed."""
    assert parse_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["localhost", "localhost:", ":25", "host:http", "host:-1", ""])
def test_endpoint_without_host_or_numeric_port_is_rejected(text: str) -> None:
    """An endpoint needs a host and a numeric port; the message quotes the value."""
    with pytest.raises(ValueError, match=re.escape(f"{text!r} is not host:port")):
        parse_endpoint(text)


@pytest.mark.parametrize(
    ("text", "port"), [("host:0", 0), ("host:65536", 65536), ("h:99999", 99999)]
)
def test_endpoint_port_out_of_range(text: str, port: int) -> None:
    """Ports outside 1-65535 are rejected with the value and the port named."""
    with pytest.raises(ValueError, match=re.escape(f"{text!r}: port {port} is out of range")):
        parse_endpoint(text)


def test_any_port_allows_port_zero() -> None:
    """With any_port, port 0 (let the OS choose) is accepted; without it, refused."""
    assert parse_endpoint("127.0.0.1:0", any_port=True) == ("127.0.0.1", 0)
    assert parse_endpoint("[::1]:0", any_port=True) == ("::1", 0)
    with pytest.raises(ValueError, match="port 0 is out of range"):
        parse_endpoint("127.0.0.1:0")


def test_any_port_still_bounds_the_port() -> None:
    """any_port does not admit ports above 65535 or drop the host:port checks."""
    with pytest.raises(ValueError, match="port 65536 is out of range"):
        parse_endpoint("host:65536", any_port=True)
    with pytest.raises(ValueError, match="is not host:port"):
        parse_endpoint("host", any_port=True)


@pytest.mark.parametrize("text", ["::1:25", "2001:db8::5:587"])
def test_bare_ipv6_endpoint_is_rejected(text: str) -> None:
    """A bare IPv6 address is ambiguous: it must be written [addr]:port."""
    with pytest.raises(ValueError, match=re.escape(f"{text!r}: write an IPv6 address as")):
        parse_endpoint(text)


@given(st.integers(min_value=1, max_value=65535))
@settings(max_examples=50)
def test_every_valid_port_round_trips(port: int) -> None:
    """Every port 1-65535 is accepted for both host forms."""
    assert parse_endpoint(f"relay.example:{port}") == ("relay.example", port)
    assert parse_endpoint(f"[::1]:{port}") == ("::1", port)


@given(st.text(max_size=30))
@settings(max_examples=200)
def test_parsers_fuzz_only_value_error(text: str) -> None:
    """Arbitrary text either parses or raises ValueError, never another exception."""
    for parser in (parse_duration, parse_size, parse_endpoint):
        with contextlib.suppress(ValueError):
            parser(text)


def test_superscript_port_error_names_the_endpoint() -> None:
    """A port written with a non-decimal digit ('²') is rejected naming the endpoint."""
    with pytest.raises(ValueError, match=re.escape("'host:²'")):
        parse_endpoint("host:²")


def test_empty_bracketed_host_is_rejected() -> None:
    """'[]:port' has no host and is rejected."""
    with pytest.raises(ValueError, match=re.escape("'[]:25'")):
        parse_endpoint("[]:25")
