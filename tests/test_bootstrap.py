"""Building a process's objects from Settings: secret, embedded registry, service, and the
unsubscribe token keys and sender table [http] needs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from filterd.bootstrap import build, senders, token_keys
from filterd.config.load import parse
from filterd.errors import ConfigError
from filterd.model import Action, Channel, MessageClass
from filterd.normalize import normalize
from filterd.secret import load_or_create
from filterd.tokens import TokenError, TokenKeys, derive_key, sender_table, sender_tag


def test_build_embedded_runtime_and_close() -> None:
    """build() creates the secret, starts the embedded server and a working service;
    close() stops the server it started."""
    home = Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
    try:
        settings = parse({"registry": {"data_dir": "var", "secret_file": "var/key"}},
                         home / "filterd.toml")  # fmt: skip
        runtime = build(settings)
        assert (home / "var" / "key").stat().st_mode & 0o777 == 0o600
        assert runtime.embedded is not None
        assert runtime.embedded.alive()

        async def use() -> Action:
            address = normalize("+8613800138000")
            decisions = await runtime.service.screen(
                "acme", MessageClass.COMMERCIAL, [address], origin="test"
            )
            await runtime.close()
            return decisions[0].action

        assert asyncio.run(use()) is Action.DROP
        assert not runtime.embedded.alive()
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---- unsubscribe token keys and sender table ----------------------------------------

SECRET = bytes.fromhex("ab" * 32)
ID = bytes(10)
NOW = 1_750_000_000
HTTP = {"listen": "127.0.0.1:0", "public_url": "https://unsub.example.com"}
ACCOUNTS = {"accounts": [{"username": "u", "sender": "acme", "stream": "commercial"}]}


def private_key_file(path: Path, key: bytes) -> Path:
    """Write `key` hex-encoded with mode 0600 (as load_or_create expects)."""
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def test_no_token_keys_without_http(tmp_path: Path) -> None:
    """Without [http] there are no token keys."""
    assert token_keys(parse({}, tmp_path / "filterd.toml"), SECRET) is None


def test_token_keys_derived_from_the_registry_secret(tmp_path: Path) -> None:
    """By default the token key is derived from the registry secret, with [http]'s max age."""
    settings = parse({"http": {**HTTP, "token_max_age": "2d"}}, tmp_path / "filterd.toml")
    keys = token_keys(settings, SECRET)
    assert keys is not None
    assert keys.max_age_s == 2 * 86400
    token = TokenKeys(derive_key(SECRET), max_age_s=86400).issue("acme", Channel.EMAIL, ID, NOW)
    assert keys.verify(token, sender_table(["acme"]), NOW).consumer == ID


def test_token_secret_file_is_created_and_signs(tmp_path: Path) -> None:
    """A configured token_secret_file is created (0600) on first use and signs tokens
    instead of the derived key."""
    settings = parse({"http": {**HTTP, "token_secret_file": "keys/token"}},
                     tmp_path / "filterd.toml")  # fmt: skip
    keys = token_keys(settings, SECRET)
    assert keys is not None
    path = tmp_path / "keys" / "token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = keys.issue("acme", Channel.EMAIL, ID, NOW)
    own = TokenKeys(load_or_create(path), max_age_s=86400)
    assert own.verify(token, sender_table(["acme"]), NOW).sender == "acme"
    derived = TokenKeys(derive_key(SECRET), max_age_s=86400)
    with pytest.raises(TokenError):
        derived.verify(token, sender_table(["acme"]), NOW)


def test_retired_token_secret_files_still_verify(tmp_path: Path) -> None:
    """Tokens signed with a key listed in retired_token_secret_files verify after rotation."""
    old_key = bytes(range(32))
    private_key_file(tmp_path / "old", old_key)
    http = {**HTTP, "token_secret_file": "new", "retired_token_secret_files": ["old"]}
    keys = token_keys(parse({"http": http}, tmp_path / "filterd.toml"), SECRET)
    assert keys is not None
    token = TokenKeys(old_key, max_age_s=86400).issue("acme", Channel.SMS, ID, NOW)
    assert keys.verify(token, sender_table(["acme"]), NOW).channel is Channel.SMS


def test_derived_key_stays_valid_after_first_rotation(tmp_path: Path) -> None:
    """With a token_secret_file and "derived" among the retired keys, tokens signed with
    the key derived from the registry secret (before the rotation) still verify."""
    http = {**HTTP, "token_secret_file": "new", "retired_token_secret_files": ["derived"]}
    keys = token_keys(parse({"http": http}, tmp_path / "filterd.toml"), SECRET)
    assert keys is not None
    token = TokenKeys(derive_key(SECRET), max_age_s=86400).issue("acme", Channel.SMS, ID, NOW)
    assert keys.verify(token, sender_table(["acme"]), NOW).consumer == ID
    assert keys.issue("acme", Channel.SMS, ID, NOW) != token  # the new key signs


def test_missing_retired_key_file_is_a_config_error(tmp_path: Path) -> None:
    """A retired key file that does not exist is a ConfigError naming the key; it is not
    created (a made-up key would verify nothing)."""
    http = {**HTTP, "retired_token_secret_files": ["gone"]}
    with pytest.raises(ConfigError) as info:
        token_keys(parse({"http": http}, tmp_path / "filterd.toml"), SECRET)
    assert info.value.key == "http.retired_token_secret_files"
    assert not (tmp_path / "gone").exists()


def test_senders_table_from_config(tmp_path: Path) -> None:
    """senders() maps each configured sender's token tag to its name."""
    settings = parse({"smtp": ACCOUNTS}, tmp_path / "filterd.toml")
    assert senders(settings) == {sender_tag("acme"): "acme"}


def test_sender_tag_collision_is_a_config_error(tmp_path: Path) -> None:
    """Two configured senders sharing a token tag are a ConfigError on smtp.accounts."""
    accounts = [
        {"username": "a", "sender": "brand-64174", "stream": "commercial"},
        {"username": "b", "sender": "brand-78693", "stream": "commercial"},
    ]
    settings = parse({"smtp": {"accounts": accounts}}, tmp_path / "filterd.toml")
    with pytest.raises(ConfigError) as info:
        senders(settings)
    assert info.value.key == "smtp.accounts"
    assert "brand-78693" in str(info.value)
