"""Warnings about the config file's mode (filterd/filemodes.py, SPEC §11), with real
files of each mode: a config holding an inline password that group or others may
read, and a config its group may write."""

from __future__ import annotations

from pathlib import Path

import pytest

from filterd.config.load import load as load_config
from filterd.filemodes import config_warnings, inline_passwords, mode_warnings

INLINE = """
[registry]
url = "redis://:regpass@127.0.0.1:6379/0"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:25"
hostname = "filterd.test"

[[smtp.accounts]]
username = "from-file"
password_file = "smtp-password"
sender = "acme"
stream = "commercial"

[[smtp.accounts]]
username = "inline"
password = "pw-inline"
sender = "acme"
stream = "commercial"

[smpp]
listen = "127.0.0.1:0"

[smpp.upstream]
host = "127.0.0.1"
port = 2775
system_id = "filterd"
password = "secret1"

[[smpp.accounts]]
system_id = "promo"
password = "chg-me-1"
sender = "acme"
stream = "commercial"
"""
INLINE_KEYS = [
    "registry.url",
    "smtp.accounts[1].password",
    "smpp.upstream.password",
    "smpp.accounts[0].password",
]
FILE_ONLY = """
[registry]
url = "embedded"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:25"
hostname = "filterd.test"

[[smtp.accounts]]
username = "from-file"
password_file = "smtp-password"
sender = "acme"
stream = "commercial"
"""


def write_config(directory: Path, text: str, mode: int) -> Path:
    """A config file (and the SMTP password file it names, 0600) with `mode`; it loads."""
    (directory / "smtp-password").write_text("pw-file\n")
    (directory / "smtp-password").chmod(0o600)
    path = directory / "filterd.toml"
    path.write_text(text)
    path.chmod(mode)
    load_config(path)  # a config filterd accepts, not one it refuses outright
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_inline_passwords_readable_by_group_or_others_are_warned(tmp_path: Path, mode: int) -> None:
    """A config with inline passwords that its group or others may read gets one warning
    naming the file, its mode in octal, the keys, and the fix (chmod 600, password_file)."""
    path = write_config(tmp_path, INLINE, mode)
    [warning] = config_warnings(path)
    assert str(path) in warning
    assert f"mode {mode:04o}" in warning
    assert all(key in warning for key in INLINE_KEYS)
    assert f"chmod 600 {path}" in warning
    assert "password_file" in warning
    assert "regpass" not in warning
    assert "pw-inline" not in warning


def test_who_may_read_is_named(tmp_path: Path) -> None:
    """The warning says whether the group, others or both may read the passwords."""
    assert (
        "its group and others may read" in config_warnings(write_config(tmp_path, INLINE, 0o644))[0]
    )
    assert "its group may read" in config_warnings(write_config(tmp_path, INLINE, 0o640))[0]
    assert ": others may read" in config_warnings(write_config(tmp_path, INLINE, 0o604))[0]


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_config_with_inline_passwords_is_not_warned(tmp_path: Path, mode: int) -> None:
    """A config only its owner may read may hold passwords inline."""
    assert config_warnings(write_config(tmp_path, INLINE, mode)) == []


def test_readable_config_without_inline_passwords_is_not_warned(tmp_path: Path) -> None:
    """A 0644 config whose passwords are all in password files is fine."""
    assert config_warnings(write_config(tmp_path, FILE_ONLY, 0o644)) == []


@pytest.mark.parametrize("text", [FILE_ONLY, INLINE])
def test_group_writable_config_is_warned(tmp_path: Path, text: str) -> None:
    """A 0620 config (group may write) is warned about, with or without passwords in it,
    naming the file, its mode and chmod g-w."""
    path = write_config(tmp_path, text, 0o620)
    warnings = config_warnings(path)
    writable = [w for w in warnings if "its group may write it" in w]
    assert len(writable) == 1
    assert str(path) in writable[0]
    assert "mode 0620" in writable[0]
    assert f"chmod g-w {path}" in writable[0]
    assert warnings == writable  # 0620: the group may not read the passwords


def test_group_writable_and_readable_config_with_passwords_gets_both(tmp_path: Path) -> None:
    """A 0664 config with inline passwords gets both warnings, the read one first."""
    warnings = config_warnings(write_config(tmp_path, INLINE, 0o664))
    assert len(warnings) == 2
    assert "holds passwords inline" in warnings[0]
    assert "its group may write it" in warnings[1]


def test_inline_passwords_are_found_by_key() -> None:
    """Inline passwords are named by their config keys; a password_file, a url without a
    password and a sentinel url's password query value are told apart."""
    assert inline_passwords({}) == []
    assert inline_passwords({"registry": {"url": "redis://127.0.0.1:6379/0"}}) == []
    assert inline_passwords({"registry": {"url": "redis+sentinel://h:26379/m?password=x"}}) == [
        "registry.url"
    ]
    smtp = {"accounts": [{"password_file": "f"}, {"password": "p"}, "not a table"]}
    assert inline_passwords({"smtp": smtp}) == ["smtp.accounts[1].password"]


def test_cmpp_shared_secrets_are_inline_passwords() -> None:
    """The shared secrets of [cmpp.upstream] and [[cmpp.accounts]] are named like passwords."""
    cmpp = {
        "upstream": {"shared_secret": "s"},
        "accounts": [{"sp_id": "900001"}, {"shared_secret": "x"}],
    }
    assert inline_passwords({"cmpp": cmpp}) == [
        "cmpp.upstream.shared_secret",
        "cmpp.accounts[1].shared_secret",
    ]


def test_unreadable_config_gives_no_warning(tmp_path: Path) -> None:
    """A config that is gone or not TOML gives no warning (load() reports those)."""
    assert config_warnings(tmp_path / "missing.toml") == []
    broken = tmp_path / "broken.toml"
    broken.write_text("[registry\n")
    broken.chmod(0o644)
    assert config_warnings(broken) == []


def test_password_file_is_suggested_only_where_there_is_one() -> None:
    """Only [[smtp.accounts]] take a password_file: a warning about SMPP or registry.url
    passwords alone does not suggest one."""
    [warning] = mode_warnings(Path("/etc/filterd.toml"), 0o644, ["smpp.upstream.password"])
    assert warning.endswith("chmod 600 /etc/filterd.toml")
