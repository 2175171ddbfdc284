"""filterd.config.table: a table that is not a table, and a key no table may hold,
are errors naming the dotted key; a misspelt key is reported before the required
key it was meant to be, with the key it resembles."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from tests.config_helpers import SMPP_HEAD, SMTP_ACCOUNT, SMTP_HEAD, assert_refused, write

BAD_VALUES = [
    pytest.param('[registry]\nurll = "embedded"\n', "registry.urll", id="unknown-registry-key"),
    pytest.param('[smpt]\nlisten = "127.0.0.1:2525"\n', "smpt", id="unknown-section"),
    pytest.param(
        SMTP_HEAD + SMTP_ACCOUNT + 'password = "p"\ncolour = "red"\n',
        "smtp.accounts[0].colour",
        id="unknown-account-key",
    ),
    pytest.param("smtp = 5\n", "smtp", id="section-not-a-table"),
]


@pytest.mark.parametrize(("text", "key"), BAD_VALUES)
def test_bad_value_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    """Each bad value raises ConfigError whose key and message name the dotted key."""
    path = write(tmp_path, text)
    assert_refused(path, key)


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
        load(write(tmp_path, text))
    assert info.value.key == key
    assert info.value.reason == f"unknown key; did you mean {meant!r}?"


def test_unknown_key_unlike_any_key_gets_no_suggestion(tmp_path: Path) -> None:
    """An unknown key that resembles no key of its table is named without a guess, ahead
    of the table's other errors (here the missing smtp.listen)."""
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, '[smtp]\ncolour = "red"\nupstream = "127.0.0.1:25"\n'))
    assert (info.value.key, info.value.reason) == ("smtp.colour", "unknown key")
