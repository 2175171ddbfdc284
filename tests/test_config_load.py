"""filterd.config.load: the config file read into Settings.

Covers SPEC §3: the annotated `config/filterd.toml` is read in full, relative
paths are anchored at the config file's directory, an absent section turns its
front end off (None), a file that is missing, not TOML, not UTF-8 or writable by
anyone is a ConfigError naming --config, and the checks across tables ([dkim]
and unsubscribe_domain need [smtp] and [http]) name their key. [keywords] and
[daemon] are read here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from filterd.policy import FailMode
from filterd.settings import HttpSettings, KeywordSettings, PolicySettings, Settings
from tests.config_helpers import (
    DKIM_HEAD,
    REFERENCE,
    SMPP_HEAD,
    SMTP_ACCOUNT,
    SMTP_HEAD,
    assert_refused,
    write,
)


def test_reference_has_every_section(reference: Settings) -> None:
    """Every front-end section of the reference config is present (none is None)."""
    assert reference.path == REFERENCE
    assert reference.smtp is not None
    assert reference.smpp is not None
    assert reference.http is not None
    assert reference.policy is not None


def test_reference_keywords(reference: Settings) -> None:
    """[keywords]: the opt-out, opt-in and help lists, Chinese keywords included."""
    kw = reference.keywords
    assert kw.opt_out == (
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
        "T", "TD", "N", "R", "退订", "退訂",
    )  # fmt: skip
    assert kw.opt_in == ("START", "YES", "UNSTOP")
    assert kw.help == ("HELP", "INFO")
    assert kw == KeywordSettings()


def test_reference_http_and_policy(reference: Settings) -> None:
    """[http] and [policy]: listen endpoints and the public unsubscribe base URL."""
    assert reference.http == HttpSettings(("127.0.0.1", 8025), "http://127.0.0.1:8025")
    assert reference.policy == PolicySettings(("127.0.0.1", 10040))


def test_relative_paths_resolve_against_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data_dir, secret_file, tls_cert/key and password_file are relative to the config's dir."""
    conf_dir = tmp_path / "etc" / "filterd"
    write(conf_dir, "hunter2\n", name="smtp.pass")
    write(
        conf_dir,
        '[registry]\ndata_dir = "state"\nsecret_file = "keys/secret"\n'
        + SMTP_HEAD
        + 'tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n'
        + SMTP_ACCOUNT
        + 'password_file = "smtp.pass"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = Path("..") / "etc" / "filterd" / "filterd.toml"

    settings = load(relative)

    base = conf_dir.resolve()
    assert settings.registry.data_dir == base / "state"
    assert settings.registry.secret_file == base / "keys" / "secret"
    assert settings.smtp is not None
    assert settings.smtp.tls_cert == base / "tls" / "cert.pem"
    assert settings.smtp.tls_key == base / "tls" / "key.pem"
    assert settings.smtp.accounts[0].password == "hunter2"  # noqa: S105


def test_absent_sections_are_none(tmp_path: Path) -> None:
    """A config with only [registry] turns every front end off and keeps keyword defaults."""
    settings = load(write(tmp_path, '[registry]\nurl = "embedded"\n'))
    assert settings.smtp is None
    assert settings.smpp is None
    assert settings.http is None
    assert settings.policy is None
    assert settings.keywords == KeywordSettings()
    assert settings.registry.default_region is None
    assert settings.registry.fail_mode is FailMode.CLOSED


def test_optional_values_accepted(tmp_path: Path) -> None:
    """Valid non-default values: redis URL, open fail mode, lower-case region, 24h TTL."""
    path = write(
        tmp_path,
        '[registry]\nurl = "rediss://redis.example:6380/1"\nfail_mode = "open"\n'
        'default_region = "us"\nrequest_ttl = "24h"\n'
        + SMTP_HEAD
        + 'max_message_size = "64KiB"\nupstream_tls = "starttls"\n'
        '[policy]\nlisten = "[::1]:10040"\n',
    )
    settings = load(path)
    assert settings.registry.url == "rediss://redis.example:6380/1"
    assert settings.registry.fail_mode is FailMode.OPEN
    assert settings.registry.default_region == "US"
    assert settings.registry.request_ttl_s == 86400
    assert settings.smtp is not None
    assert settings.smtp.max_message_size == 64 * 1024
    assert settings.smtp.upstream_tls == "starttls"
    assert settings.policy == PolicySettings(("::1", 10040))


BAD_VALUES = [
    pytest.param('[keywords]\nopt_out = ["STOP", ""]\n', "keywords.opt_out", id="empty-keyword"),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming --config and the file."""
    path = write(tmp_path, "[registry\nurl = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(path)
    assert info.value.key == "--config"
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError naming --config and the path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="no such file") as info:
        load(path)
    assert info.value.key == "--config"
    assert str(path) in str(info.value)


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory given as the config file raises ConfigError, not an OSError."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert info.value.key == "--config"


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 raises ConfigError naming --config."""
    path = tmp_path / "filterd.toml"
    path.write_bytes(b'[registry]\nurl = "embedded" # caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "--config"


def test_senders_lists_every_configured_sender_once(tmp_path: Path) -> None:
    """Settings.senders(): the senders of SMTP accounts, SMPP accounts and SMPP numbers,
    each once, in config order."""
    path = write(
        tmp_path,
        '[[smtp.accounts]]\nusername = "a"\nsender = "acme"\nstream = "commercial"\n'
        '[[smtp.accounts]]\nusername = "b"\nsender = "beta"\nstream = "transactional"\n'
        '[[smtp.accounts]]\nusername = "c"\nsender = "acme"\nstream = "transactional"\n'
        + SMPP_HEAD
        + '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "p"\nsender = "gamma"\n'
        'stream = "commercial"\n'
        '[[smpp.numbers]]\naddress = "10690001"\nsender = "delta"\n'
        '[[smpp.numbers]]\naddress = "10690002"\nsender = "beta"\n',
    )
    assert load(path).senders() == ["acme", "beta", "gamma", "delta"]
    assert load(write(tmp_path, "", name="empty.toml")).senders() == []


NEW_BAD_VALUES = [
    pytest.param(DKIM_HEAD, "dkim", id="dkim-without-smtp"),
    pytest.param(
        '[[smtp.accounts]]\nusername = "u"\nsender = "acme"\nstream = "commercial"\n' + DKIM_HEAD,
        "dkim",
        id="dkim-without-smtp-listen",
    ),
    pytest.param(SMTP_HEAD + DKIM_HEAD, "dkim", id="dkim-without-http"),
    pytest.param(
        SMTP_HEAD + 'unsubscribe_domain = "unsub.example.com"\n',
        "smtp.unsubscribe_domain",
        id="unsubscribe-domain-without-http",
    ),
]


@pytest.mark.parametrize(("text", "key"), NEW_BAD_VALUES)
def test_bad_token_dkim_and_unsubscribe_values_name_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """Bad [http] token settings, [dkim] values and unsubscribe_domain raise ConfigError
    naming the dotted key (a DKIM key file exists unless the case is about it)."""
    write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    assert_refused(write(tmp_path, text), key)


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602])
def test_config_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """A config file that anyone may write is refused before it is read (a group-
    writable one, as a umask of 002 makes it, is accepted)."""
    path = write(tmp_path, "")
    path.chmod(mode)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert error.value.key == "--config"
    assert "others may write" in error.value.reason
    path.chmod(0o664)
    load(path)


def test_daemon_drain_timeout(tmp_path: Path) -> None:
    """[daemon] drain_timeout is a duration (default 30 s); outside 1s-1h it is refused."""
    assert load(write(tmp_path, "")).daemon.drain_timeout_s == 30.0
    settings = load(write(tmp_path, '[daemon]\ndrain_timeout = "90s"\n'))
    assert settings.daemon.drain_timeout_s == 90.0
    for bad in ('"0s"', '"2h"', '"soon"'):
        with pytest.raises(ConfigError) as error:
            load(write(tmp_path, f"[daemon]\ndrain_timeout = {bad}\n"))
        assert error.value.key == "daemon.drain_timeout"
