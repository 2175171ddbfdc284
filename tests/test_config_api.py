"""filterd.config.api: [api] and its [[api.keys]]: the listener, limits and bearer
keys read from private files; bad values name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.api import MIN_KEY_CHARS
from filterd.config.load import load
from filterd.settings import HTTP_IDLE_S
from tests.config_helpers import assert_refused, write

KEY = "k" * MIN_KEY_CHARS
API_HEAD = '[api]\nlisten = "127.0.0.1:8026"\n'
CRM = '[[api.keys]]\nname = "crm"\nkey_file = "crm.key"\nsenders = ["acme"]\n'


def test_api_keys_are_read_from_their_files(tmp_path: Path) -> None:
    """[api] with two keys: listen, the default limits, each key's name, key (from its
    0600 file, trimmed), senders and scopes; the key never shows in the settings' repr."""
    write(tmp_path, KEY + "\n", "crm.key")
    write(tmp_path, "z" * 40, "keys/admin.key")
    path = write(
        tmp_path,
        API_HEAD + CRM + 'scopes = ["check", "write"]\n'
        '[[api.keys]]\nname = "admin"\nkey_file = "keys/admin.key"\nsenders = ["*"]\n'
        'scopes = ["check", "read", "write"]\n',
    )
    api = load(path).api
    assert api is not None
    assert api.listen == ("127.0.0.1", 8026)
    assert api.limits.idle_timeout_s == HTTP_IDLE_S
    assert api.body_timeout_s == 30.0
    crm, admin = api.keys
    assert (crm.name, crm.key, crm.senders) == ("crm", KEY, ("acme",))
    assert crm.scopes == frozenset({"check", "write"})
    assert admin.key == "z" * 40
    assert admin.may_act_for("beta")
    assert admin.may_act_for("*")
    assert crm.may_act_for("acme")
    assert not crm.may_act_for("beta")
    assert not crm.may_act_for("*")
    assert KEY not in repr(api)


def test_no_api_table_is_no_api(tmp_path: Path) -> None:
    """Without [api] the API is off."""
    assert load(write(tmp_path, "")).api is None


@pytest.mark.parametrize(
    ("text", "key_text", "mode", "key"),
    [
        (API_HEAD, KEY, 0o600, "api.keys"),
        (API_HEAD + CRM + 'scopes = ["check"]\n', KEY, 0o640, "api.keys[0].key_file"),
        (API_HEAD + CRM + 'scopes = ["check"]\n', KEY, 0o644, "api.keys[0].key_file"),
        (API_HEAD + CRM + 'scopes = ["check"]\n', "short", 0o600, "api.keys[0].key_file"),
        (API_HEAD + CRM + 'scopes = ["check"]\n', KEY + " x", 0o600, "api.keys[0].key_file"),
        (API_HEAD + CRM + 'scopes = ["admin"]\n', KEY, 0o600, "api.keys[0].scopes"),
        (API_HEAD + CRM, KEY, 0o600, "api.keys[0].scopes"),
        (API_HEAD + CRM.replace('["acme"]', "[]") + 'scopes = ["check"]\n', KEY, 0o600,
         "api.keys[0].senders"),
        (API_HEAD + CRM + 'scopes = ["check"]\nsender = "acme"\n', KEY, 0o600,
         "api.keys[0].sender"),
        (API_HEAD + CRM + 'scopes = ["check"]\n' + CRM + 'scopes = ["read"]\n', KEY, 0o600,
         "api.keys[1].name"),
        (API_HEAD + 'idle_timeout = "2d"\n' + CRM + 'scopes = ["check"]\n', KEY, 0o600,
         "api.idle_timeout"),
        ("[api]\n" + CRM + 'scopes = ["check"]\n', KEY, 0o600, "api.listen"),
    ],
)  # fmt: skip
def test_bad_api_config_is_refused(
    tmp_path: Path, text: str, key_text: str, mode: int, key: str
) -> None:
    """No key, a key file others may read, a key shorter than 32 characters or with a
    space, an unknown or no scope, no senders, an unknown key, a name given twice, a
    bad limit, no listen: refused naming the dotted key."""
    write(tmp_path, key_text, "crm.key").chmod(mode)
    assert_refused(write(tmp_path, text), key)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    """A key_file that does not exist is refused naming it."""
    assert_refused(write(tmp_path, API_HEAD + CRM + 'scopes = ["check"]\n'), "api.keys[0].key_file")
