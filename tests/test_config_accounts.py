"""filterd.config.accounts: [[smtp.accounts]] and [[smpp.accounts]]: passwords
or networks, password files, streams, SMPP 3.4 lengths; bad values name the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.model import MessageClass
from filterd.settings import Settings, SmtpAccount
from tests.config_helpers import SMPP_HEAD, SMTP_ACCOUNT, SMTP_HEAD, assert_refused, write


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


BAD_VALUES = [
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
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


def test_smpp_password_of_8_chars_is_accepted(tmp_path: Path) -> None:
    """The SMPP 3.4 limit is inclusive: an 8-character password is fine."""
    path = write(
        tmp_path,
        SMPP_HEAD + '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "12345678"\n'
        'sender = "acme"\nstream = "transactional"\n',
    )
    settings = load(path)
    assert settings.smpp is not None
    assert settings.smpp.accounts[0].password == "12345678"  # noqa: S105
    assert settings.smpp.accounts[0].stream is MessageClass.TRANSACTIONAL
