"""filterd.config.values: endpoints (port 0 for listeners only), listener limits,
worker counts, CIDR networks and private files, as every table that holds them
reads them; bad values name the dotted key."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from filterd.config.load import load, parse
from filterd.config.table import Table
from filterd.config.values import mo_numbers
from filterd.errors import ConfigError
from filterd.settings import ListenerLimits, Settings
from tests.config_helpers import SMPP_HEAD, SMTP_ACCOUNT, SMTP_HEAD, assert_refused, write

BAD_VALUES = [
    pytest.param(
        SMTP_HEAD + SMTP_ACCOUNT + 'networks = ["10.0.0.0/33"]\n',
        "smtp.accounts[0].networks",
        id="bad-cidr-prefix",
    ),
    pytest.param(
        SMTP_HEAD + SMTP_ACCOUNT + 'networks = ["not-a-network"]\n',
        "smtp.accounts[0].networks",
        id="bad-cidr-text",
    ),
    pytest.param(
        SMTP_HEAD
        + SMTP_ACCOUNT
        + 'password = "p"\n'
        + SMTP_ACCOUNT
        + 'networks = ["10.0.0.0/8", "x"]\n',
        "smtp.accounts[1].networks",
        id="bad-cidr-second-account",
    ),
    pytest.param(
        '[smtp]\nlisten = "127.0.0.1"\nupstream = "127.0.0.1:25"\n',
        "smtp.listen",
        id="listen-without-port",
    ),
    pytest.param('[policy]\nlisten = "127.0.0.1:70000"\n', "policy.listen", id="policy-port-range"),
    pytest.param(SMTP_HEAD + 'idle_timeout = "0s"\n', "smtp.idle_timeout", id="idle-zero"),
    pytest.param(SMTP_HEAD + "idle_timeout = 30\n", "smtp.idle_timeout", id="idle-int"),
    pytest.param(SMPP_HEAD + 'idle_timeout = "2d"\n', "smpp.idle_timeout", id="idle-over-1d"),
    pytest.param(
        '[policy]\nlisten = "127.0.0.1:1"\nmax_connections = 0\n',
        "policy.max_connections",
        id="max-connections-0",
    ),
    pytest.param(
        '[policy]\nlisten = "127.0.0.1:1"\nmax_connections = 10\n'
        "max_connections_per_address = 11\n",
        "policy.max_connections_per_address",
        id="per-address-over-total",
    ),
    pytest.param(
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "http://x.test"\n'
        'status_networks = ["everyone"]\n',
        "http.status_networks",
        id="status-networks",
    ),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


def test_listener_limits_defaults_and_values(tmp_path: Path, reference: Settings) -> None:
    """Every listener has its idle timeout (SMTP and policy 300 s, SMPP 120 s, HTTP 10 s
    for the head, 30 s for the body), 1,000 connections, 100 per address and, for HTTP,
    loopback as the status networks; each key takes its own value."""
    assert reference.smtp is not None
    assert reference.smpp is not None
    assert reference.http is not None
    assert reference.policy is not None
    assert reference.smtp.limits == ListenerLimits(300.0, 1000, 100)
    assert reference.smpp.limits == ListenerLimits(120.0, 1000, 100)
    assert reference.policy.limits == ListenerLimits(300.0, 1000, 100)
    assert reference.http.limits == ListenerLimits(10.0, 1000, 100)
    assert reference.http.body_timeout_s == 30.0
    assert reference.http.status_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    path = write(
        tmp_path,
        '[policy]\nlisten = "127.0.0.1:1"\nidle_timeout = "5m"\nmax_connections = 50\n'
        "max_connections_per_address = 5\n"
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "http://x.test"\n'
        'status_networks = ["10.0.0.0/8", "2001:db8::1"]\nbody_timeout = "1m"\n',
    )
    settings = load(path)
    assert settings.policy is not None
    assert settings.http is not None
    assert settings.policy.limits == ListenerLimits(300.0, 50, 5)
    assert settings.http.body_timeout_s == 60.0
    assert settings.http.status_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::1/128"),
    )


def test_listen_port_0_means_any_free_port(tmp_path: Path) -> None:
    """A listen port of 0 is allowed (the OS picks one; filterd logs it); an upstream's is not."""
    settings = parse(
        {"smtp": {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:25"}}, tmp_path / "f.toml"
    )
    assert settings.smtp is not None
    assert settings.smtp.listen == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"smtp\.upstream"):
        parse({"smtp": {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:0"}}, tmp_path / "f")


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    """smtp.workers > 1 shares one port, so port 0 is refused; 1-64 workers are accepted."""
    base = {"listen": "127.0.0.1:2525", "upstream": "127.0.0.1:25"}
    assert parse({"smtp": {**base, "workers": 4}}, tmp_path / "f").smtp.workers == 4  # type: ignore[union-attr]
    for bad in ({**base, "workers": 0}, {**base, "listen": "127.0.0.1:0", "workers": 2}):
        with pytest.raises(ConfigError, match=r"smtp\.workers"):
            parse({"smtp": bad}, tmp_path / "f")


def test_smpp_workers(tmp_path: Path) -> None:
    """smpp.workers defaults to 1 and takes 1-64 on a fixed port; 0, 65, a string or port 0
    with more than one worker are refused, naming smpp.workers and the value."""
    base = {"listen": "127.0.0.1:2775"}
    assert parse({"smpp": base}, tmp_path / "f").smpp.workers == 1  # type: ignore[union-attr]
    four = parse({"smpp": {**base, "workers": 4}}, tmp_path / "f")
    assert four.smpp is not None
    assert four.smpp.workers == 4
    for value, shown in ((0, "0"), (65, "65"), ("two", "'two'"), (True, "True")):
        with pytest.raises(ConfigError, match=r"smpp\.workers") as error:
            parse({"smpp": {**base, "workers": value}}, tmp_path / "f")
        assert shown in str(error.value)
    with pytest.raises(ConfigError, match=r"smpp\.workers: 2 workers need a fixed listen port"):
        parse({"smpp": {"listen": "127.0.0.1:0", "workers": 2}}, tmp_path / "f")


@pytest.mark.parametrize(
    ("name", "section", "key"),
    [
        ("smtp.pass", SMTP_HEAD + SMTP_ACCOUNT + 'password_file = "smtp.pass"\n',
         "smtp.accounts[0].password_file"),
        ("tls.key", SMTP_HEAD + 'tls_cert = "tls.crt"\ntls_key = "tls.key"\n', "smtp.tls_key"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("mode", [0o644, 0o620, 0o602])
def test_secret_files_others_may_read_or_write_are_refused(
    tmp_path: Path, name: str, section: str, key: str, mode: int
) -> None:
    """A password file or TLS key that others may read, or group/others may write,
    is refused with the key and the mode; 0600 and 0640 are accepted."""
    secret = write(tmp_path, "hunter2\n", name=name)
    path = write(tmp_path, section)
    secret.chmod(mode)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert error.value.key == key
    assert f"{mode:04o}" in error.value.reason
    for fine in (0o600, 0o640):
        secret.chmod(fine)
        load(path)


def test_mo_numbers_checks_each_address_and_refuses_a_repeat() -> None:
    """mo_numbers gives (address, sender) pairs in order; an address not matching the
    pattern, or listed twice, is a ConfigError naming the dotted key and the value."""
    pattern = re.compile(r"[0-9]{1,4}")
    table = Table(
        {"numbers": [{"address": "10", "sender": "a"}, {"address": "11", "sender": "b"}]}, "cmpp"
    )
    assert mo_numbers(table, pattern, "1-4 digits") == [("10", "a"), ("11", "b")]
    wrong = Table({"numbers": [{"address": "1x", "sender": "a"}]}, "cmpp")
    with pytest.raises(
        ConfigError, match=re.escape("cmpp.numbers[0].address: '1x' is not 1-4 digits")
    ):
        mo_numbers(wrong, pattern, "1-4 digits")
    twice = Table(
        {"numbers": [{"address": "10", "sender": "a"}, {"address": "10", "sender": "b"}]}, "cmpp"
    )
    with pytest.raises(
        ConfigError, match=re.escape("cmpp.numbers[1].address: '10' is already cmpp.numbers[0]")
    ):
        mo_numbers(twice, pattern, "1-4 digits")
