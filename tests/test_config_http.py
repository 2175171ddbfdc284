"""filterd.config.http: [http]: the public URL, the token keys and maximum age;
bad values name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError
from filterd.settings import Settings
from tests.config_helpers import HTTP_HEAD, assert_refused, write


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


BAD_VALUES = [
    pytest.param(
        '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "ftp://example.com"\n',
        "http.public_url",
        id="http-public-url",
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
    assert_refused(path, key)


def test_http_token_keys_parse(tmp_path: Path) -> None:
    """token_secret_file and retired_token_secret_files resolve against the config's
    directory; token_max_age is a duration; public_url loses its trailing slash."""
    path = write(
        tmp_path,
        HTTP_HEAD + 'token_secret_file = "keys/token"\n'
        'retired_token_secret_files = ["keys/old1", "/abs/old2"]\ntoken_max_age = "30d"\n',
    )
    http = load(path).http
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
    http = load(path).http
    assert http is not None
    assert http.retired_derived_key is True
    assert http.retired_token_secret_files == (tmp_path.resolve() / "old",)


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
]


@pytest.mark.parametrize(("text", "key"), NEW_BAD_VALUES)
def test_bad_token_dkim_and_unsubscribe_values_name_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """Bad [http] token settings, [dkim] values and unsubscribe_domain raise ConfigError
    naming the dotted key (a DKIM key file exists unless the case is about it)."""
    write(tmp_path, "-----BEGIN PRIVATE KEY-----\n", name="dkim.key")
    assert_refused(write(tmp_path, text), key)


def test_token_max_age_of_one_day_is_accepted(tmp_path: Path) -> None:
    """The 1-day minimum is inclusive."""
    http = load(write(tmp_path, HTTP_HEAD + 'token_max_age = "24h"\n')).http
    assert http is not None
    assert http.token_max_age_s == 86400


@pytest.mark.parametrize(
    "url", ["https://例え.jp", "https://u.example.com/a b", "https://u.example/\\u0007"]
)
def test_public_url_must_be_plain_ascii(tmp_path: Path, url: str) -> None:
    """A public_url with non-ASCII, spaces or control characters is refused at load (it
    goes into List-Unsubscribe headers); the xn-- form of the same host is accepted."""
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, f'[http]\nlisten = "127.0.0.1:0"\npublic_url = "{url}"\n'))
    assert error.value.key == "http.public_url"
    good = '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://xn--r8jz45g.jp"\n'
    settings = load(write(tmp_path, good))
    assert settings.http is not None
    assert settings.http.public_url == "https://xn--r8jz45g.jp"
