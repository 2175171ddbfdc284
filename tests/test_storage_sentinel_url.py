"""filterd.storage.sentinel_url: what a redis+sentinel:// url names, or why it is malformed.

Pure parsing; the same function serves the config check and the adapter, so what
check-config accepts is exactly what the registry connects to.
"""

from __future__ import annotations

import pytest

from filterd.errors import ConfigError
from filterd.storage.sentinel_url import SentinelTarget, is_sentinel_url, parse_sentinel_url


def test_every_part_is_read() -> None:
    """Sentinels (IPv4, [IPv6], names), service, db, the primary's user and password,
    and the sentinels' own credentials from the query, percent-decoded."""
    url = (
        "redis+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel.example:26381"
        "/my%20svc/3?sentinel_password=s%26p&sentinel_username=watch"
    )
    assert parse_sentinel_url(url) == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380), ("sentinel.example", 26381)),
        service="my svc",
        db=3,
        username="app",
        password="p@ss",  # noqa: S106 - a test url
        sentinel_username="watch",
        sentinel_password="s&p",  # noqa: S106 - a test url
    )


def test_minimal_url_has_defaults() -> None:
    """One sentinel and a service: db 0, no credentials anywhere."""
    assert parse_sentinel_url("redis+sentinel://127.0.0.1:26379/filterd") == SentinelTarget(
        (("127.0.0.1", 26379),), "filterd"
    )


def test_password_without_user() -> None:
    """`:password@` gives the primary's password and no user name."""
    target = parse_sentinel_url("redis+sentinel://:pw@h:1/s")
    assert (target.username, target.password) == (None, "pw")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel:h:1/s", "no // after the scheme"),
        ("redis+sentinel://h:1/s#x", "a fragment is not allowed"),
        ("redis+sentinel://h:1/s?db=2", "the query takes only"),
        ("redis+sentinel://h:1/s?sentinel_password", "the query takes only"),
        ("redis+sentinel://pw@h:1/s", "credentials are written"),
        ("redis+sentinel://:@h:1/s", "credentials are written"),
        ("redis+sentinel:///s", "no sentinel named"),
        ("redis+sentinel://h/s", "is not host:port"),
        ("redis+sentinel://h:0/s", "out of range"),
        ("redis+sentinel://h:1,/s", "is not host:port"),
        ("redis+sentinel://h:1", "no service name"),
        ("redis+sentinel://h:1/s/x", "only a db number"),
        ("redis+sentinel://h:1/s/1/2", "only a db number"),
    ],
)
def test_malformed_url_is_a_config_error_naming_registry_url(url: str, reason: str) -> None:
    """Each malformed part is a ConfigError on registry.url with its reason and the form."""
    with pytest.raises(ConfigError) as error:
        parse_sentinel_url(url)
    assert error.value.key == "registry.url"
    assert reason in error.value.reason
    assert "redis+sentinel://[:password@]host:port" in error.value.reason


def test_error_shows_no_password() -> None:
    """The error of a malformed url shows its passwords as ***."""
    with pytest.raises(ConfigError) as error:
        parse_sentinel_url("redis+sentinel://:top@h:1/s/x?sentinel_password=also")
    assert "top" not in str(error.value)
    assert "also" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+sentinel://h:1/s", True),
        ("redis+sentinel:h", True),
        ("redis://h:1/0", False),
        ("embedded", False),
    ],
)
def test_is_sentinel_url_by_scheme(url: str, expected: bool) -> None:
    """A url is a sentinel url by its scheme alone (then parsed strictly)."""
    assert is_sentinel_url(url) is expected
