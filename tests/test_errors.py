"""The filterd exception tree: what each error says and where it sits in the tree."""

from __future__ import annotations

import pytest

from filterd.errors import (
    ConfigError,
    FilterdError,
    InvalidAddress,
    NotDurable,
    RegistryUnavailable,
    UsageError,
    shown_url,
)


def test_invalid_address_message_names_value_and_reason() -> None:
    """InvalidAddress's message quotes the offending value and gives the reason."""
    error = InvalidAddress("+86 1380", "too short")
    assert "'+86 1380'" in str(error)
    assert "too short" in str(error)
    assert str(error) == "invalid address '+86 1380': too short"


def test_invalid_address_keeps_value_and_reason() -> None:
    """InvalidAddress keeps the value and the reason as attributes for callers."""
    error = InvalidAddress("nobody@", "no domain")
    assert error.value == "nobody@"
    assert error.reason == "no domain"


def test_invalid_address_quotes_awkward_values() -> None:
    """A value with control characters is shown quoted (repr), so logs stay one line."""
    error = InvalidAddress("a\nb@example.com", "bad")
    assert "\n" not in str(error)
    assert repr("a\nb@example.com") in str(error)


def test_config_error_message_names_key_and_reason() -> None:
    """ConfigError's message names the config key and the reason."""
    error = ConfigError("registry.fail_mode", "must be 'open' or 'closed'")
    assert str(error) == "config: registry.fail_mode: must be 'open' or 'closed'"
    assert error.key == "registry.fail_mode"
    assert error.reason == "must be 'open' or 'closed'"


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (UsageError, FilterdError),
        (InvalidAddress, UsageError),
        (ConfigError, FilterdError),
        (RegistryUnavailable, FilterdError),
        (NotDurable, RegistryUnavailable),
        (FilterdError, Exception),
    ],
)
def test_class_tree(error: type[Exception], parent: type[Exception]) -> None:
    """Each error sits under its documented parent (e.g. NotDurable is a RegistryUnavailable)."""
    assert issubclass(error, parent)


def test_usage_and_registry_errors_are_separate_branches() -> None:
    """A bad address is not a registry outage, and an outage is not a usage error."""
    assert not issubclass(InvalidAddress, RegistryUnavailable)
    assert not issubclass(NotDurable, UsageError)
    assert not issubclass(ConfigError, UsageError)


def test_invalid_address_is_caught_as_usage_error() -> None:
    """Code that catches UsageError also catches InvalidAddress."""
    with pytest.raises(UsageError, match="bad@"):
        raise InvalidAddress("bad@", "no domain")


def test_not_durable_is_caught_as_registry_unavailable() -> None:
    """Code that catches RegistryUnavailable also catches NotDurable."""
    with pytest.raises(RegistryUnavailable, match="fsync"):
        raise NotDurable("AOF fsync not confirmed")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:p%40w@h/1?x=1", "redis://user:***@h/1?x=1"),
        ("rediss://user:pw@h:1?password=q#f", "rediss://user:***@h:1?password=***#f"),
        (
            "redis+sentinel://:pw@a:1,b:2/svc/2?sentinel_password=zz&sentinel_username=u",
            "redis+sentinel://:***@a:1,b:2/svc/2?sentinel_password=***&sentinel_username=u",
        ),
        ("redis://user@h:6379", "redis://user@h:6379"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("embedded", "embedded"),
    ],
)
def test_shown_url_hides_passwords_only(url: str, shown: str) -> None:
    """shown_url replaces the password of the credentials and any `…password=` query value
    with ***; user names, hosts, paths and other query values stay."""
    assert shown_url(url) == shown
