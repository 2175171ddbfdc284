"""filterd.config: the reference config parses, bad values name their dotted key.

Covers SPEC §3: the annotated `config/filterd.toml` is read in full, relative
paths are anchored at the config file's directory, an absent section turns its
front end off (None), every kind of bad value raises ConfigError naming the key,
and `default_path()` picks --config, then $FILTERD_CONFIG, then the fallbacks.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from filterd import config
from filterd.errors import ConfigError
from filterd.model import MessageClass
from filterd.policy import FailMode
from filterd.settings import (
    DkimSettings,
    HttpSettings,
    KeywordSettings,
    ListenerLimits,
    PolicySettings,
    Settings,
    SmppAccount,
    SmppNumber,
    SmppUpstream,
    SmtpAccount,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "filterd.toml"

SMTP_HEAD = '[smtp]\nlisten = "127.0.0.1:2525"\nupstream = "127.0.0.1:25"\n'
SMTP_ACCOUNT = '[[smtp.accounts]]\nusername = "u"\nsender = "acme"\nstream = "commercial"\n'
SMPP_HEAD = '[smpp]\nlisten = "127.0.0.1:2775"\n'


def write(directory: Path, text: str, name: str = "filterd.toml") -> Path:
    """Write a config file (or, under another name, a private file beside it: 0600)."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if name != "filterd.toml":
        path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def reference() -> Settings:
    """The annotated reference config, parsed once."""
    return config.load(REFERENCE)


# ---- the reference config ---------------------------------------------------


def test_reference_has_every_section(reference: Settings) -> None:
    """Every front-end section of the reference config is present (none is None)."""
    assert reference.path == REFERENCE
    assert reference.smtp is not None
    assert reference.smpp is not None
    assert reference.http is not None
    assert reference.policy is not None


def test_reference_registry(reference: Settings) -> None:
    """[registry]: embedded, 30d request TTL in seconds, closed fail mode, region CN."""
    reg = reference.registry
    assert reg.url == "embedded"
    assert reg.cluster is False
    assert reg.data_dir == REFERENCE.parent / "var"
    assert reg.secret_file == REFERENCE.parent / "var" / "secret"
    assert reg.request_ttl_s == 30 * 86400
    assert reg.fail_mode is FailMode.CLOSED
    assert reg.default_region == "CN"
    assert reg.server is None
    assert reg.bucket_bits == 16
    assert reg.audit_max_entries == 1_000_000
    assert reg.audit_retention_s == 400 * 86400


def test_reference_smtp(reference: Settings) -> None:
    """[smtp]: endpoints split, 25MB = 25_000_000 bytes, no TLS, 1000 recipients."""
    smtp = reference.smtp
    assert smtp is not None
    assert smtp.listen == ("127.0.0.1", 2525)
    assert smtp.upstream == ("127.0.0.1", 25)
    assert smtp.upstream_tls == "none"
    assert smtp.tls_cert is None
    assert smtp.tls_key is None
    assert smtp.max_message_size == 25_000_000
    assert smtp.max_recipients == 1000


def test_reference_smtp_accounts(reference: Settings) -> None:
    """Two [[smtp.accounts]]: a password account and a networks-only account."""
    smtp = reference.smtp
    assert smtp is not None
    assert smtp.accounts == (
        SmtpAccount(
            username="newsletter",
            sender="acme",
            stream=MessageClass.COMMERCIAL,
            password="change-me",  # noqa: S106 - the reference config's value
            networks=(),
        ),
        SmtpAccount(
            username="legacy-tool",
            sender="acme",
            stream=MessageClass.COMMERCIAL,
            password=None,
            networks=(
                ipaddress.ip_network("127.0.0.1/32"),
                ipaddress.ip_network("10.1.2.0/24"),
            ),
        ),
    )


def test_reference_smpp(reference: Settings) -> None:
    """[smpp]: listen endpoint, the carrier upstream, one account and one MO number."""
    smpp = reference.smpp
    assert smpp is not None
    assert smpp.listen == ("127.0.0.1", 2775)
    assert smpp.upstream == SmppUpstream("127.0.0.1", 2776, "filterd", "secret1")
    assert smpp.accounts == (SmppAccount("promo", "chg-me-1", "acme", MessageClass.COMMERCIAL),)
    assert smpp.numbers == (SmppNumber("10690001", "acme"),)


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


# ---- paths and absent sections ------------------------------------------------


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

    settings = config.load(relative)

    base = conf_dir.resolve()
    assert settings.registry.data_dir == base / "state"
    assert settings.registry.secret_file == base / "keys" / "secret"
    assert settings.smtp is not None
    assert settings.smtp.tls_cert == base / "tls" / "cert.pem"
    assert settings.smtp.tls_key == base / "tls" / "key.pem"
    assert settings.smtp.accounts[0].password == "hunter2"  # noqa: S105


def test_default_paths_resolve_against_config_directory(tmp_path: Path) -> None:
    """Without [registry] the defaults var and var/secret sit next to the config file."""
    settings = config.load(write(tmp_path, ""))
    assert settings.registry.data_dir == tmp_path.resolve() / "var"
    assert settings.registry.secret_file == tmp_path.resolve() / "var" / "secret"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    """An absolute data_dir or secret_file is used as written."""
    data = tmp_path / "abs-data"
    secret = tmp_path / "abs-secret"
    path = write(tmp_path / "conf", f'[registry]\ndata_dir = "{data}"\nsecret_file = "{secret}"\n')
    settings = config.load(path)
    assert settings.registry.data_dir == data
    assert settings.registry.secret_file == secret


def test_absent_sections_are_none(tmp_path: Path) -> None:
    """A config with only [registry] turns every front end off and keeps keyword defaults."""
    settings = config.load(write(tmp_path, '[registry]\nurl = "embedded"\n'))
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
    settings = config.load(path)
    assert settings.registry.url == "rediss://redis.example:6380/1"
    assert settings.registry.fail_mode is FailMode.OPEN
    assert settings.registry.default_region == "US"
    assert settings.registry.request_ttl_s == 86400
    assert settings.smtp is not None
    assert settings.smtp.max_message_size == 64 * 1024
    assert settings.smtp.upstream_tls == "starttls"
    assert settings.policy == PolicySettings(("::1", 10040))


# ---- bad values ---------------------------------------------------------------------


BAD_VALUES = [
    pytest.param(SMTP_HEAD + "max_recipients = 0\n", "smtp.max_recipients", id="max-recipients-0"),
    pytest.param(
        SMTP_HEAD + 'max_recipients = "10"\n', "smtp.max_recipients", id="max-recipients-string"
    ),
    pytest.param(SMTP_HEAD + 'max_message_size = "lots"\n', "smtp.max_message_size", id="bad-size"),
    pytest.param(
        '[registry]\nrequest_ttl = "30 days"\n', "registry.request_ttl", id="request-ttl-format"
    ),
    pytest.param('[registry]\nrequest_ttl = "0d"\n', "registry.request_ttl", id="request-ttl-zero"),
    pytest.param("[registry]\nrequest_ttl = 30\n", "registry.request_ttl", id="request-ttl-int"),
    pytest.param('[registry]\nfail_mode = "ajar"\n', "registry.fail_mode", id="fail-mode"),
    pytest.param(
        '[registry]\nurl = "http://127.0.0.1:6379"\n', "registry.url", id="url-http-scheme"
    ),
    pytest.param('[registry]\nurl = "localhost:6379"\n', "registry.url", id="url-no-scheme"),
    pytest.param(
        '[registry]\ndefault_region = "XX"\n', "registry.default_region", id="region-unknown"
    ),
    pytest.param(
        '[registry]\ndefault_region = "China"\n', "registry.default_region", id="region-name"
    ),
    pytest.param("[registry]\ncluster = true\n", "registry.cluster", id="cluster-embedded"),
    pytest.param("[registry]\nbucket_bits = 8\n", "registry.bucket_bits", id="bucket-bits"),
    pytest.param('[registry]\nurll = "embedded"\n', "registry.urll", id="unknown-registry-key"),
    pytest.param('[smpt]\nlisten = "127.0.0.1:2525"\n', "smpt", id="unknown-section"),
    pytest.param(
        SMTP_HEAD + SMTP_ACCOUNT + 'password = "p"\ncolour = "red"\n',
        "smtp.accounts[0].colour",
        id="unknown-account-key",
    ),
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
        SMTP_HEAD + SMTP_ACCOUNT, "smtp.accounts[0].password", id="account-without-password"
    ),
    pytest.param(
        SMTP_HEAD + SMTP_ACCOUNT + 'password = "p"\npassword_file = "f"\n',
        "smtp.accounts[0].password_file",
        id="password-and-password-file",
    ),
    pytest.param(
        SMTP_HEAD + '[[smtp.accounts]]\nusername = "u"\npassword = "p"\nsender = "acme"\n'
        'stream = "bulk"\n',
        "smtp.accounts[0].stream",
        id="bad-stream",
    ),
    pytest.param(SMTP_HEAD + 'tls_cert = "cert.pem"\n', "smtp.tls_key", id="cert-without-key"),
    pytest.param(SMTP_HEAD + 'tls_key = "key.pem"\n', "smtp.tls_cert", id="key-without-cert"),
    pytest.param(SMTP_HEAD + 'upstream_tls = "ssl"\n', "smtp.upstream_tls", id="upstream-tls"),
    pytest.param('[smtp]\nupstream = "127.0.0.1:25"\n', "smtp.listen", id="smtp-listen-missing"),
    pytest.param(
        '[smtp]\nlisten = "127.0.0.1"\nupstream = "127.0.0.1:25"\n',
        "smtp.listen",
        id="listen-without-port",
    ),
    pytest.param(
        SMPP_HEAD + '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "123456789"\n'
        'sender = "acme"\nstream = "commercial"\n',
        "smpp.accounts[0].password",
        id="smpp-password-9-chars",
    ),
    pytest.param(
        SMPP_HEAD + '[[smpp.accounts]]\nsystem_id = "a-system-id-16ch"\npassword = "p"\n'
        'sender = "acme"\nstream = "commercial"\n',
        "smpp.accounts[0].system_id",
        id="smpp-system-id-16-chars",
    ),
    pytest.param(
        SMPP_HEAD + '[smpp.upstream]\nhost = "127.0.0.1"\nport = 2776\nsystem_id = "f"\n'
        'password = "toolongpw"\n',
        "smpp.upstream.password",
        id="smpp-upstream-password",
    ),
    pytest.param(
        SMPP_HEAD
        + '[smpp.upstream]\nhost = "127.0.0.1"\nport = 70000\nsystem_id = "f"\npassword = "p"\n',
        "smpp.upstream.port",
        id="smpp-upstream-port",
    ),
    pytest.param(
        SMPP_HEAD + '[[smpp.numbers]]\nsender = "acme"\n',
        "smpp.numbers[0].address",
        id="smpp-number-without-address",
    ),
    pytest.param('[keywords]\nopt_out = ["STOP", ""]\n', "keywords.opt_out", id="empty-keyword"),
    pytest.param(
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "ftp://example.com"\n',
        "http.public_url",
        id="http-public-url",
    ),
    pytest.param('[policy]\nlisten = "127.0.0.1:70000"\n', "policy.listen", id="policy-port-range"),
    pytest.param("smtp = 5\n", "smtp", id="section-not-a-table"),
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
    pytest.param(
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "http://x.test"\nbody_timeout = "1"\n',
        "http.body_timeout",
        id="body-timeout",
    ),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}: ")
    assert info.value.reason


@pytest.mark.parametrize(
    ("text", "key", "meant"),
    [
        pytest.param(
            '[smtp]\nlisen = "127.0.0.1:2525"\nupstream = "127.0.0.1:25"\n',
            "smtp.lisen", "listen", id="smtp-listen",
        ),
        pytest.param(
            SMTP_HEAD + '[[smtp.accounts]]\nusernme = "u"\npassword = "p"\nsender = "acme"\n'
            'stream = "commercial"\n',
            "smtp.accounts[0].usernme", "username", id="account-username",
        ),
        pytest.param(
            SMPP_HEAD + '[smpp.upstream]\nhost = "127.0.0.1"\nprot = 2776\nsystem_id = "f"\n'
            'password = "p"\n',
            "smpp.upstream.prot", "port", id="smpp-upstream-port",
        ),
        pytest.param(
            '[http]\nlisten = "127.0.0.1:8025"\npublik_url = "http://x.test"\n',
            "http.publik_url", "public_url", id="http-public-url",
        ),
    ],
)  # fmt: skip
def test_typo_is_an_unknown_key_before_required_keys(
    tmp_path: Path, text: str, key: str, meant: str
) -> None:
    """A misspelt key is reported as that unknown key, with the key it resembles, not as
    the required key it was meant to be ("smtp.lisen: unknown key; did you mean
    'listen'?", not "smtp.listen is required")."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.key == key
    assert info.value.reason == f"unknown key; did you mean {meant!r}?"


def test_unknown_key_unlike_any_key_gets_no_suggestion(tmp_path: Path) -> None:
    """An unknown key that resembles no key of its table is named without a guess, ahead
    of the table's other errors (here the missing smtp.listen)."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, '[smtp]\ncolour = "red"\nupstream = "127.0.0.1:25"\n'))
    assert (info.value.key, info.value.reason) == ("smtp.colour", "unknown key")


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
    settings = config.load(path)
    assert settings.policy is not None
    assert settings.http is not None
    assert settings.policy.limits == ListenerLimits(300.0, 50, 5)
    assert settings.http.body_timeout_s == 60.0
    assert settings.http.status_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::1/128"),
    )


def test_smpp_password_of_8_chars_is_accepted(tmp_path: Path) -> None:
    """The SMPP 3.4 limit is inclusive: an 8-character password is fine."""
    path = write(
        tmp_path,
        SMPP_HEAD + '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "12345678"\n'
        'sender = "acme"\nstream = "transactional"\n',
    )
    settings = config.load(path)
    assert settings.smpp is not None
    assert settings.smpp.accounts[0].password == "12345678"  # noqa: S105
    assert settings.smpp.accounts[0].stream is MessageClass.TRANSACTIONAL


def test_bad_value_message_names_the_value(tmp_path: Path) -> None:
    """The reason quotes the offending value, so an operator can find it."""
    path = write(tmp_path, '[registry]\nurl = "http://127.0.0.1:6379"\n')
    with pytest.raises(ConfigError, match=r"registry\.url: 'http://127\.0\.0\.1:6379'"):
        config.load(path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming --config and the file."""
    path = write(tmp_path, "[registry\nurl = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        config.load(path)
    assert info.value.key == "--config"
    assert str(path) in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError naming --config and the path."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="no such file") as info:
        config.load(path)
    assert info.value.key == "--config"
    assert str(path) in str(info.value)


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory given as the config file raises ConfigError, not an OSError."""
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path)
    assert info.value.key == "--config"


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """A config file that is not UTF-8 raises ConfigError naming --config."""
    path = tmp_path / "filterd.toml"
    path.write_bytes(b'[registry]\nurl = "embedded" # caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "--config"


# ---- default_path ---------------------------------------------------------------------


def test_default_path_explicit_wins() -> None:
    """--config beats $FILTERD_CONFIG, and is taken as given (load() reports a missing file)."""
    path = config.default_path("/srv/a.toml", {"FILTERD_CONFIG": "/srv/b.toml"})
    assert path == Path("/srv/a.toml")


def test_default_path_from_environ(tmp_path: Path) -> None:
    """Without --config, $FILTERD_CONFIG from the environ argument is used."""
    path = write(tmp_path, "")
    assert config.default_path(None, {"FILTERD_CONFIG": str(path)}) == path


def test_default_path_empty_explicit_and_env_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty --config or an empty $FILTERD_CONFIG falls through to the fallbacks."""
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert config.default_path("", {"FILTERD_CONFIG": ""}) == Path("config/filterd.toml")


def test_default_path_prefers_etc_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither --config nor $FILTERD_CONFIG, an existing /etc/filterd/filterd.toml wins."""
    system = Path("/etc/filterd/filterd.toml")
    monkeypatch.setattr(Path, "exists", lambda self: self in (system, Path("config/filterd.toml")))
    assert config.default_path(None, {}) == system


def test_default_path_last_resort_is_repo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /etc/filterd/filterd.toml the fallback is config/filterd.toml (relative)."""
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert config.default_path(None, {"OTHER": "x"}) == Path("config/filterd.toml")


def test_default_path_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the environ argument counts, not os.environ."""
    monkeypatch.setenv("FILTERD_CONFIG", "/srv/from-os-environ.toml")
    monkeypatch.setattr(Path, "exists", lambda self: self == Path("config/filterd.toml"))
    assert config.default_path(None, {}) == Path("config/filterd.toml")


def test_no_config_file_anywhere_names_every_path_looked_at(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without --config and $FILTERD_CONFIG, and with neither default file present, the
    ConfigError names both defaults (the relative one made absolute), says that
    $FILTERD_CONFIG is not set, and how to give a config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(ConfigError) as info:
        config.default_path(None, {})
    message = str(info.value)
    assert "/etc/filterd/filterd.toml" in message
    assert str(tmp_path / "config" / "filterd.toml") in message
    assert "$FILTERD_CONFIG not set" in message
    assert "--config PATH" in message


def test_missing_filterd_config_file_names_the_variable_and_the_defaults(tmp_path: Path) -> None:
    """A $FILTERD_CONFIG naming no file is an error naming the variable and its path (the
    defaults are named too, as not looked at), never a silent fall-back to them."""
    absent = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        config.default_path(None, {"FILTERD_CONFIG": str(absent)})
    assert info.value.key == "$FILTERD_CONFIG"
    assert info.value.reason.startswith(f"{absent}: no such file")
    assert "/etc/filterd/filterd.toml" in info.value.reason
    assert "config/filterd.toml" in info.value.reason


def test_listen_port_0_means_any_free_port(tmp_path: Path) -> None:
    """A listen port of 0 is allowed (the OS picks one; filterd logs it); an upstream's is not."""
    settings = config.parse(
        {"smtp": {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:25"}}, tmp_path / "f.toml"
    )
    assert settings.smtp is not None
    assert settings.smtp.listen == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"smtp\.upstream"):
        config.parse({"smtp": {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:0"}}, tmp_path / "f")


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    """smtp.workers > 1 shares one port, so port 0 is refused; 1-64 workers are accepted."""
    base = {"listen": "127.0.0.1:2525", "upstream": "127.0.0.1:25"}
    assert config.parse({"smtp": {**base, "workers": 4}}, tmp_path / "f").smtp.workers == 4  # type: ignore[union-attr]
    for bad in ({**base, "workers": 0}, {**base, "listen": "127.0.0.1:0", "workers": 2}):
        with pytest.raises(ConfigError, match=r"smtp\.workers"):
            config.parse({"smtp": bad}, tmp_path / "f")


def test_smpp_workers(tmp_path: Path) -> None:
    """smpp.workers defaults to 1 and takes 1-64 on a fixed port; 0, 65, a string or port 0
    with more than one worker are refused, naming smpp.workers and the value."""
    base = {"listen": "127.0.0.1:2775"}
    assert config.parse({"smpp": base}, tmp_path / "f").smpp.workers == 1  # type: ignore[union-attr]
    four = config.parse({"smpp": {**base, "workers": 4}}, tmp_path / "f")
    assert four.smpp is not None
    assert four.smpp.workers == 4
    for value, shown in ((0, "0"), (65, "65"), ("two", "'two'"), (True, "True")):
        with pytest.raises(ConfigError, match=r"smpp\.workers") as error:
            config.parse({"smpp": {**base, "workers": value}}, tmp_path / "f")
        assert shown in str(error.value)
    with pytest.raises(ConfigError, match=r"smpp\.workers: 2 workers need a fixed listen port"):
        config.parse({"smpp": {"listen": "127.0.0.1:0", "workers": 2}}, tmp_path / "f")


def test_smtp_accounts_only_for_the_policy_service(tmp_path: Path) -> None:
    """[smtp] with accounts but no listen/upstream: the relay is off, the accounts serve
    the Postfix policy service."""
    settings = config.parse(
        {
            "smtp": {"accounts": [{"username": "u", "sender": "acme", "stream": "commercial"}]},
            "policy": {"listen": "127.0.0.1:10040"},
        },
        tmp_path / "f.toml",
    )
    assert settings.smtp is not None
    assert (settings.smtp.listen, settings.smtp.upstream) == (None, None)
    assert settings.smtp.accounts[0].username == "u"


# ---- [http] tokens, [dkim], unsubscribe_domain, senders --------------------------------

HTTP_HEAD = '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "https://unsub.example.com/"\n'
DKIM_HEAD = '[dkim]\nselector = "mail"\ndomain = "Example.COM"\nkey_file = "dkim.key"\n'


def test_reference_http_token_defaults_and_no_dkim(reference: Settings) -> None:
    """The reference config: tokens signed with the derived key, no retired keys, 400d
    max age; [dkim] and unsubscribe_domain are commented out."""
    assert reference.http is not None
    assert reference.http.token_secret_file is None
    assert reference.http.retired_token_secret_files == ()
    assert reference.http.token_max_age_s == 400 * 86400
    assert reference.dkim is None
    assert reference.smtp is not None
    assert reference.smtp.unsubscribe_domain is None


def test_http_token_keys_parse(tmp_path: Path) -> None:
    """token_secret_file and retired_token_secret_files resolve against the config's
    directory; token_max_age is a duration; public_url loses its trailing slash."""
    path = write(
        tmp_path,
        HTTP_HEAD + 'token_secret_file = "keys/token"\n'
        'retired_token_secret_files = ["keys/old1", "/abs/old2"]\ntoken_max_age = "30d"\n',
    )
    http = config.load(path).http
    assert http is not None
    assert http.public_url == "https://unsub.example.com"
    assert http.token_secret_file == tmp_path.resolve() / "keys" / "token"
    assert http.retired_token_secret_files == (
        tmp_path.resolve() / "keys" / "old1",
        Path("/abs/old2"),
    )
    assert http.token_max_age_s == 30 * 86400
    assert http.retired_derived_key is False


def test_derived_among_retired_keys(tmp_path: Path) -> None:
    """ "derived" in retired_token_secret_files names the key derived from the registry
    secret (kept after a first rotation), not a file called derived."""
    path = write(
        tmp_path,
        HTTP_HEAD + 'token_secret_file = "token"\n'
        'retired_token_secret_files = ["derived", "old"]\n',
    )
    http = config.load(path).http
    assert http is not None
    assert http.retired_derived_key is True
    assert http.retired_token_secret_files == (tmp_path.resolve() / "old",)


def test_dkim_and_unsubscribe_domain_parse(tmp_path: Path) -> None:
    """[dkim] selector, domain (lower-cased) and key_file (relative to the config);
    smtp.unsubscribe_domain lower-cased."""
    write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    path = write(
        tmp_path,
        SMTP_HEAD + 'unsubscribe_domain = "Unsub.Example.com"\n' + HTTP_HEAD + DKIM_HEAD,
    )
    settings = config.load(path)
    assert settings.dkim == DkimSettings("mail", "example.com", tmp_path.resolve() / "dkim.key")
    assert settings.smtp is not None
    assert settings.smtp.unsubscribe_domain == "unsub.example.com"


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
    assert config.load(path).senders() == ["acme", "beta", "gamma", "delta"]
    assert config.load(write(tmp_path, "", name="empty.toml")).senders() == []


NEW_BAD_VALUES = [
    pytest.param(HTTP_HEAD + 'token_max_age = "23h"\n', "http.token_max_age", id="max-age-23h"),
    pytest.param(HTTP_HEAD + 'token_max_age = "soon"\n', "http.token_max_age", id="max-age-text"),
    pytest.param(HTTP_HEAD + "token_max_age = 30\n", "http.token_max_age", id="max-age-int"),
    pytest.param(
        HTTP_HEAD + 'retired_token_secret_files = "old"\n',
        "http.retired_token_secret_files",
        id="retired-not-a-list",
    ),
    pytest.param(HTTP_HEAD + "token_secret_file = 5\n", "http.token_secret_file", id="token-file"),
    pytest.param(
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "https://x.example/?a=1"\n',
        "http.public_url",
        id="public-url-query",
    ),
    pytest.param(
        SMTP_HEAD + DKIM_HEAD.replace("Example.COM", "exa mple.com"),
        "dkim.domain",
        id="dkim-domain-space",
    ),
    pytest.param(
        SMTP_HEAD + DKIM_HEAD.replace("Example.COM", "-bad.example"),
        "dkim.domain",
        id="dkim-domain-hyphen",
    ),
    pytest.param(
        SMTP_HEAD + DKIM_HEAD.replace("Example.COM", "example..com"),
        "dkim.domain",
        id="dkim-domain-empty-label",
    ),
    pytest.param(
        SMTP_HEAD + DKIM_HEAD.replace('"mail"', '"mail_2024"'), "dkim.selector", id="dkim-selector"
    ),
    pytest.param(
        SMTP_HEAD + DKIM_HEAD.replace("dkim.key", "absent.key"),
        "dkim.key_file",
        id="dkim-key-file-missing",
    ),
    pytest.param(
        SMTP_HEAD + '[dkim]\nselector = "mail"\nkey_file = "dkim.key"\n',
        "dkim.domain",
        id="dkim-domain-required",
    ),
    pytest.param(SMTP_HEAD + DKIM_HEAD + 'canon = "simple"\n', "dkim.canon", id="dkim-unknown-key"),
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
    pytest.param(
        SMTP_HEAD + 'unsubscribe_domain = "not a domain"\n' + HTTP_HEAD,
        "smtp.unsubscribe_domain",
        id="unsubscribe-domain-not-dns",
    ),
]


@pytest.mark.parametrize(("text", "key"), NEW_BAD_VALUES)
def test_bad_token_dkim_and_unsubscribe_values_name_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """Bad [http] token settings, [dkim] values and unsubscribe_domain raise ConfigError
    naming the dotted key (a DKIM key file exists unless the case is about it)."""
    write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}: ")
    assert info.value.reason


def test_token_max_age_of_one_day_is_accepted(tmp_path: Path) -> None:
    """The 1-day minimum is inclusive."""
    http = config.load(write(tmp_path, HTTP_HEAD + 'token_max_age = "24h"\n')).http
    assert http is not None
    assert http.token_max_age_s == 86400


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
        config.load(path)
    assert error.value.key == key
    assert f"{mode:04o}" in error.value.reason
    for fine in (0o600, 0o640):
        secret.chmod(fine)
        config.load(path)


def test_loose_dkim_key_is_refused(tmp_path: Path) -> None:
    """A DKIM private key readable by others is refused (dkim.key_file)."""
    key = write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    key.chmod(0o644)
    path = write(tmp_path, SMTP_HEAD + HTTP_HEAD + DKIM_HEAD)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert error.value.key == "dkim.key_file"


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o602])
def test_config_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """A config file that anyone may write is refused before it is read (a group-
    writable one, as a umask of 002 makes it, is accepted)."""
    path = write(tmp_path, "")
    path.chmod(mode)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert error.value.key == "--config"
    assert "others may write" in error.value.reason
    path.chmod(0o664)
    config.load(path)


def test_daemon_drain_timeout(tmp_path: Path) -> None:
    """[daemon] drain_timeout is a duration (default 30 s); outside 1s-1h it is refused."""
    assert config.load(write(tmp_path, "")).daemon.drain_timeout_s == 30.0
    settings = config.load(write(tmp_path, '[daemon]\ndrain_timeout = "90s"\n'))
    assert settings.daemon.drain_timeout_s == 90.0
    for bad in ('"0s"', '"2h"', '"soon"'):
        with pytest.raises(ConfigError) as error:
            config.load(write(tmp_path, f"[daemon]\ndrain_timeout = {bad}\n"))
        assert error.value.key == "daemon.drain_timeout"


# ---- Redis Cluster ------------------------------------------------------------


def test_cluster_accepted_with_a_node_url(tmp_path: Path) -> None:
    """cluster = true is accepted with a redis:// or rediss:// url naming any node."""
    for url in ("redis://10.0.0.1:7000", "rediss://:pw@node.example:7000"):
        text = f'[registry]\nurl = "{url}"\ncluster = true\nmin_replicas = 1\n'
        reg = config.load(write(tmp_path, text)).registry
        assert (reg.url, reg.cluster, reg.min_replicas) == (url, True, 1)


@pytest.mark.parametrize(
    "url", ["unix:///run/redis.sock", "redis+sentinel://10.0.0.1:26379/filterd"]
)
def test_cluster_refused_with_other_urls(tmp_path: Path, url: str) -> None:
    """cluster = true with a unix socket or a sentinel url is a ConfigError on
    registry.cluster naming the url."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, f'[registry]\nurl = "{url}"\ncluster = true\n'))
    assert error.value.key == "registry.cluster"
    assert url in str(error.value)


# ---- Redis Sentinel -----------------------------------------------------------


def test_sentinel_url_accepted_with_one_replica_by_default(tmp_path: Path) -> None:
    """A redis+sentinel:// url (sentinels, service, db, password) is accepted, and each
    write then needs 1 replica's confirmation unless min_replicas says otherwise."""
    url = "redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,sentinel.example:26381/filterd/2"
    settings = config.load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert (settings.registry.url, settings.registry.min_replicas) == (url, 1)
    settings = config.load(write(tmp_path, f'[registry]\nurl = "{url}"\nmin_replicas = 2\n'))
    assert settings.registry.min_replicas == 2
    plain = "redis+sentinel://127.0.0.1:26379/filterd"
    settings = config.load(write(tmp_path, f'[registry]\nurl = "{plain}"\nmin_replicas = 0\n'))
    assert settings.registry.min_replicas == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://10.0.0.1:99999/0", "the port is not a number from 1 to 65535"),
        ("redis://10.0.0.1:abc/0", "the port is not a number from 1 to 65535"),
        ("rediss:///0", "needs a host"),
        ("unix://", "needs a socket path"),
    ],
)
def test_bad_plain_url_names_registry_url(tmp_path: Path, url: str, reason: str) -> None:
    """A redis://, rediss:// or unix:// url that cannot be used (port out of range or not
    a number, no host, no socket path) is a ConfigError on registry.url with the reason,
    at load (check-config), not a traceback when the registry is first used."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert error.value.key == "registry.url"
    assert reason in str(error.value)


def test_sentinel_url_may_name_the_sentinels_own_credentials(tmp_path: Path) -> None:
    """A sentinel url's query may give sentinel_password (and sentinel_username): the
    credentials of sentinels run with requirepass; the url is kept as written."""
    url = "redis+sentinel://:pw@10.0.0.1:26379/filterd?sentinel_password=s%26p&sentinel_username=u"
    assert config.load(write(tmp_path, f'[registry]\nurl = "{url}"\n')).registry.url == url


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@10.0.0.1:99999/0",
        "ftp://admin:s3cret@10.0.0.1/",
        "redis+sentinel://:s3cret@10.0.0.1:26379/filterd/x",
        "redis+sentinel://10.0.0.1:26379/filterd/x?sentinel_password=s3cret",
    ],
)
def test_bad_url_error_shows_no_password(tmp_path: Path, url: str) -> None:
    """The ConfigError of a bad registry.url shows the url with its password as ***."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert "s3cret" not in str(error.value)
    assert "***" in str(error.value)


def test_min_replicas_defaults_to_zero_without_sentinel(tmp_path: Path) -> None:
    """Without Sentinel no replica is required by default; a plain url may ask for some."""
    assert config.load(write(tmp_path, "")).registry.min_replicas == 0
    text = '[registry]\nurl = "redis://10.0.0.1:6379/0"\nmin_replicas = 1\n'
    assert config.load(write(tmp_path, text)).registry.min_replicas == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1:26379/", "no service name"),
        ("redis+sentinel:///filterd", "no sentinel named"),
        ("redis+sentinel://10.0.0.1/filterd", "is not host:port"),
        ("redis+sentinel://10.0.0.1:99999/filterd", "out of range"),
        ("redis+sentinel://10.0.0.1:26379,/filterd", "is not host:port"),
        ("redis+sentinel://10.0.0.1:26379/filterd/x", "only a db number"),
        ("redis+sentinel://10.0.0.1:26379/filterd/1/2", "only a db number"),
        ("redis+sentinel://pw@10.0.0.1:26379/filterd", ":password@"),
        ("redis+sentinel://10.0.0.1:26379/filterd?db=1", "query"),
        ("redis+sentinel://10.0.0.1:26379/filterd?sentinel_password=", "query"),
        ("redis+sentinel://10.0.0.1:26379/filterd#x", "fragment"),
        ("redis+sentinel:10.0.0.1:26379/filterd", "no //"),
    ],
)
def test_bad_sentinel_url_names_registry_url(tmp_path: Path, url: str, reason: str) -> None:
    """A malformed sentinel url is a ConfigError on registry.url that says what is wrong
    and shows the expected form."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, f'[registry]\nurl = "{url}"\n'))
    assert error.value.key == "registry.url"
    assert reason in error.value.reason
    assert "redis+sentinel://[:password@]host:port" in error.value.reason


@pytest.mark.parametrize(
    "text",
    [
        'url = "redis+sentinel://10.0.0.1:26379/filterd"\nmin_replicas = -1\n',
        'url = "redis://10.0.0.1:6379"\nmin_replicas = -2\n',
        'url = "embedded"\nmin_replicas = 1\n',
        'url = "redis://10.0.0.1:6379"\nmin_replicas = "1"\n',
    ],
)
def test_bad_min_replicas_names_the_key(tmp_path: Path, text: str) -> None:
    """Negative, non-integer, or (for the embedded server, which has no replicas)
    non-zero min_replicas is a ConfigError naming registry.min_replicas."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, "[registry]\n" + text))
    assert error.value.key == "registry.min_replicas"


@pytest.mark.parametrize(
    "url", ["https://例え.jp", "https://u.example.com/a b", "https://u.example/\\u0007"]
)
def test_public_url_must_be_plain_ascii(tmp_path: Path, url: str) -> None:
    """A public_url with non-ASCII, spaces or control characters is refused at load (it
    goes into List-Unsubscribe headers); the xn-- form of the same host is accepted."""
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, f'[http]\nlisten = "127.0.0.1:0"\npublic_url = "{url}"\n'))
    assert error.value.key == "http.public_url"
    good = '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://xn--r8jz45g.jp"\n'
    settings = config.load(write(tmp_path, good))
    assert settings.http is not None
    assert settings.http.public_url == "https://xn--r8jz45g.jp"


def test_unsubscribe_listen(tmp_path: Path) -> None:
    """smtp.unsubscribe_listen is an endpoint (port 0 allowed) that needs
    smtp.unsubscribe_domain; without it, or as a bad endpoint, it names the key."""
    domain = 'unsubscribe_domain = "unsub.example.com"\n'
    good = SMTP_HEAD + domain + 'unsubscribe_listen = "127.0.0.1:0"\n' + HTTP_HEAD
    settings = config.load(write(tmp_path, good))
    assert settings.smtp is not None
    assert settings.smtp.unsubscribe_listen == ("127.0.0.1", 0)
    for text in (
        SMTP_HEAD + 'unsubscribe_listen = "127.0.0.1:2526"\n' + HTTP_HEAD,
        SMTP_HEAD + domain + 'unsubscribe_listen = "nowhere"\n' + HTTP_HEAD,
    ):
        with pytest.raises(ConfigError) as error:
            config.load(write(tmp_path, text))
        assert error.value.key == "smtp.unsubscribe_listen"
