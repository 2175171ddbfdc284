"""The registry secret: the HMAC key for consumer ids and unsubscribe tokens.

Created on first use as 32 random bytes written hex-encoded to a file of mode
0600. A secret file that others can read is refused, as is one shorter than
32 bytes.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from filterd.errors import ConfigError
from filterd.identity import MIN_SECRET_BYTES


def load_or_create(path: Path, key: str = "registry.secret_file", *, create: bool = True) -> bytes:
    """Return the secret in `path`, creating it (0600) when it does not exist.

    `key` names the config key in errors; with `create` False a missing file
    is an error (retired token keys must not be made up).
    """
    try:
        return _load_or_create(path, key, create)
    except OSError as exc:
        raise ConfigError(key, f"{path}: {exc.strerror or exc}") from None


def _load_or_create(path: Path, key: str, create: bool) -> bytes:
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(MIN_SECRET_BYTES) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(key, f"{path} has mode {mode:04o}; it must be 0600 (chmod 600)")
    text = path.read_bytes().strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = text
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(key, f"{path} holds fewer than {MIN_SECRET_BYTES} bytes")
    return secret
