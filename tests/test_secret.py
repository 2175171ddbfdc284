"""filterd.secret: the registry's HMAC key file.

First use creates it (mode 0600, at least 32 random bytes, hex-encoded); later
uses read the same secret back; a file others can read, or one holding fewer
than 32 bytes, is refused with a ConfigError naming registry.secret_file.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from filterd.errors import ConfigError
from filterd.identity import MIN_SECRET_BYTES
from filterd.secret import load_or_create


def mode_of(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_private_file(tmp_path: Path) -> None:
    """A missing secret file is created (parents too) with mode 0600 and ≥ 32 bytes."""
    path = tmp_path / "state" / "secret"
    secret = load_or_create(path)
    assert path.is_file()
    assert mode_of(path) == 0o600
    assert len(secret) >= MIN_SECRET_BYTES >= 32
    assert bytes.fromhex(path.read_text().strip()) == secret


def test_created_parent_directory_is_private(tmp_path: Path) -> None:
    """The directory made for the secret is not readable by group or others."""
    path = tmp_path / "state" / "secret"
    load_or_create(path)
    assert mode_of(path.parent) & 0o077 == 0


def test_second_use_returns_same_secret(tmp_path: Path) -> None:
    """Loading again returns the secret created the first time, unchanged on disk."""
    path = tmp_path / "secret"
    first = load_or_create(path)
    text = path.read_text()
    assert load_or_create(path) == first
    assert path.read_text() == text


def test_two_files_get_different_secrets(tmp_path: Path) -> None:
    """Each created secret is random: two files do not share a key."""
    assert load_or_create(tmp_path / "a") != load_or_create(tmp_path / "b")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A secret file readable beyond its owner is refused, naming registry.secret_file."""
    path = tmp_path / "secret"
    load_or_create(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o}") as info:
        load_or_create(path)
    assert info.value.key == "registry.secret_file"
    assert str(path) in str(info.value)


def test_owner_read_only_is_accepted(tmp_path: Path) -> None:
    """Mode 0400 is private enough: the secret is read."""
    path = tmp_path / "secret"
    secret = load_or_create(path)
    path.chmod(0o400)
    assert load_or_create(path) == secret


def test_existing_hex_secret_is_decoded(tmp_path: Path) -> None:
    """A pre-provisioned hex secret (e.g. via LoadCredential) is returned as its bytes."""
    key = bytes(range(32))
    path = tmp_path / "secret"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    assert load_or_create(path) == key


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"ab" * 16 + b"\n", id="16-bytes-hex"),
        pytest.param(b"abcd" * 15 + b"ab\n", id="31-bytes-hex"),
        pytest.param(b"short secret\n", id="raw-text"),
        pytest.param(b"\n", id="empty"),
    ],
)
def test_too_short_secret_is_refused(tmp_path: Path, content: bytes) -> None:
    """A secret of fewer than 32 bytes is refused, naming registry.secret_file."""
    path = tmp_path / "secret"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="fewer than 32 bytes") as info:
        load_or_create(path)
    assert info.value.key == "registry.secret_file"


def test_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    """A secret path that cannot be created (its parent is a file) is a ConfigError."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError) as info:
        load_or_create(blocker / "secret")
    assert info.value.key == "registry.secret_file"


def test_config_key_is_named_in_errors(tmp_path: Path) -> None:
    """load_or_create names the config key it is given (e.g. a token secret file) in its
    errors."""
    path = tmp_path / "token"
    load_or_create(path, "http.token_secret_file")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_or_create(path, "http.token_secret_file")
    assert info.value.key == "http.token_secret_file"


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    """With create=False a missing file is a ConfigError naming the key, and no file or
    directory is made (a retired key is never invented)."""
    path = tmp_path / "keys" / "old"
    with pytest.raises(ConfigError) as info:
        load_or_create(path, "http.retired_token_secret_files", create=False)
    assert info.value.key == "http.retired_token_secret_files"
    assert str(path) in str(info.value)
    assert not path.parent.exists()


def test_create_false_reads_an_existing_file(tmp_path: Path) -> None:
    """With create=False an existing private secret is read like any other."""
    path = tmp_path / "old"
    secret = load_or_create(path)
    assert load_or_create(path, "http.retired_token_secret_files", create=False) == secret


def test_create_false_still_checks_mode_and_length(tmp_path: Path) -> None:
    """create=False applies the same checks: a short secret is refused with the given key."""
    path = tmp_path / "old"
    path.write_text("ab" * 8 + "\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="fewer than 32 bytes") as info:
        load_or_create(path, "http.retired_token_secret_files", create=False)
    assert info.value.key == "http.retired_token_secret_files"
