"""Shared by the tests of the config loader (tests/test_config_*.py): the reference
config, the heads of the usual tables, and a writer of config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load
from filterd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "filterd.toml"

SMTP_HEAD = '[smtp]\nlisten = "127.0.0.1:2525"\nupstream = "127.0.0.1:25"\n'
SMTP_ACCOUNT = '[[smtp.accounts]]\nusername = "u"\nsender = "acme"\nstream = "commercial"\n'
SMPP_HEAD = '[smpp]\nlisten = "127.0.0.1:2775"\n'
HTTP_HEAD = '[http]\nlisten = "127.0.0.1:8025"\npublic_url = "https://unsub.example.com/"\n'
DKIM_HEAD = '[dkim]\nselector = "mail"\ndomain = "Example.COM"\nkey_file = "dkim.key"\n'


def write(directory: Path, text: str, name: str = "filterd.toml") -> Path:
    """Write a config file (or, under another name, a private file beside it: 0600)."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if name != "filterd.toml":
        path.chmod(0o600)
    return path


def assert_refused(path: Path, key: str) -> None:
    """Loading the config at `path` raises ConfigError naming the dotted `key`, its
    message starting `config: KEY: ` and giving a reason."""
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}: ")
    assert info.value.reason
