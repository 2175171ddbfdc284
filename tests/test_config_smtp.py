"""filterd.config.smtp: [smtp] (relay on or off, TLS files, sizes, unsubscribe
domain and listener) and [dkim]; bad values name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load, parse
from filterd.errors import ConfigError
from filterd.settings import DkimSettings, Settings
from tests.config_helpers import DKIM_HEAD, HTTP_HEAD, SMTP_HEAD, assert_refused, write


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


BAD_VALUES = [
    pytest.param(SMTP_HEAD + "max_recipients = 0\n", "smtp.max_recipients", id="max-recipients-0"),
    pytest.param(
        SMTP_HEAD + 'max_recipients = "10"\n', "smtp.max_recipients", id="max-recipients-string"
    ),
    pytest.param(SMTP_HEAD + 'max_message_size = "lots"\n', "smtp.max_message_size", id="bad-size"),
    pytest.param(SMTP_HEAD + 'tls_cert = "cert.pem"\n', "smtp.tls_key", id="cert-without-key"),
    pytest.param(SMTP_HEAD + 'tls_key = "key.pem"\n', "smtp.tls_cert", id="key-without-cert"),
    pytest.param(SMTP_HEAD + 'upstream_tls = "ssl"\n', "smtp.upstream_tls", id="upstream-tls"),
    pytest.param('[smtp]\nupstream = "127.0.0.1:25"\n', "smtp.listen", id="smtp-listen-missing"),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


def test_smtp_accounts_only_for_the_policy_service(tmp_path: Path) -> None:
    """[smtp] with accounts but no listen/upstream: the relay is off, the accounts serve
    the Postfix policy service."""
    settings = parse(
        {
            "smtp": {"accounts": [{"username": "u", "sender": "acme", "stream": "commercial"}]},
            "policy": {"listen": "127.0.0.1:10040"},
        },
        tmp_path / "f.toml",
    )
    assert settings.smtp is not None
    assert (settings.smtp.listen, settings.smtp.upstream) == (None, None)
    assert settings.smtp.accounts[0].username == "u"


def test_dkim_and_unsubscribe_domain_parse(tmp_path: Path) -> None:
    """[dkim] selector, domain (lower-cased) and key_file (relative to the config);
    smtp.unsubscribe_domain lower-cased."""
    write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    path = write(
        tmp_path,
        SMTP_HEAD + 'unsubscribe_domain = "Unsub.Example.com"\n' + HTTP_HEAD + DKIM_HEAD,
    )
    settings = load(path)
    assert settings.dkim == DkimSettings("mail", "example.com", tmp_path.resolve() / "dkim.key")
    assert settings.smtp is not None
    assert settings.smtp.unsubscribe_domain == "unsub.example.com"


NEW_BAD_VALUES = [
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
    assert_refused(write(tmp_path, text), key)


def test_loose_dkim_key_is_refused(tmp_path: Path) -> None:
    """A DKIM private key readable by others is refused (dkim.key_file)."""
    key = write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    key.chmod(0o644)
    path = write(tmp_path, SMTP_HEAD + HTTP_HEAD + DKIM_HEAD)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert error.value.key == "dkim.key_file"


def test_unsubscribe_listen(tmp_path: Path) -> None:
    """smtp.unsubscribe_listen is an endpoint (port 0 allowed) that needs
    smtp.unsubscribe_domain; without it, or as a bad endpoint, it names the key."""
    domain = 'unsubscribe_domain = "unsub.example.com"\n'
    good = SMTP_HEAD + domain + 'unsubscribe_listen = "127.0.0.1:0"\n' + HTTP_HEAD
    settings = load(write(tmp_path, good))
    assert settings.smtp is not None
    assert settings.smtp.unsubscribe_listen == ("127.0.0.1", 0)
    for text in (
        SMTP_HEAD + 'unsubscribe_listen = "127.0.0.1:2526"\n' + HTTP_HEAD,
        SMTP_HEAD + domain + 'unsubscribe_listen = "nowhere"\n' + HTTP_HEAD,
    ):
        with pytest.raises(ConfigError) as error:
            load(write(tmp_path, text))
        assert error.value.key == "smtp.unsubscribe_listen"


def test_feedback_address(tmp_path: Path) -> None:
    """smtp.feedback_address is a plain address (kept in lower case) and needs
    smtp.unsubscribe_listen, where reports arrive; a bad one, or one without that
    listener, names the key and the value."""
    intake = 'unsubscribe_domain = "unsub.example.com"\nunsubscribe_listen = "127.0.0.1:0"\n'
    good = SMTP_HEAD + intake + 'feedback_address = "FBL.reports@Example.com"\n' + HTTP_HEAD
    settings = load(write(tmp_path, good))
    assert settings.smtp is not None
    assert settings.smtp.feedback_address == "fbl.reports@example.com"
    assert load(write(tmp_path, SMTP_HEAD + intake + HTTP_HEAD)).smtp.feedback_address is None  # type: ignore[union-attr]
    for value in (
        "fbl",
        "fbl@",
        "@example.com",
        "fbl@bad_domain.test",
        "Jane <fbl@example.com>",
        "a@b@example.com",
        "fbl..x@example.com",
        "unsubscribe+x@unsub.example.com",
    ):
        path = write(tmp_path, SMTP_HEAD + intake + f'feedback_address = "{value}"\n' + HTTP_HEAD)
        assert_refused(path, "smtp.feedback_address")
        with pytest.raises(ConfigError) as error:
            load(path)
        assert repr(value) in str(error.value)
    alone = SMTP_HEAD + 'feedback_address = "fbl@example.com"\n' + HTTP_HEAD
    assert_refused(write(tmp_path, alone), "smtp.feedback_address")
