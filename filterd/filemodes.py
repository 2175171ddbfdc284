"""Warnings about the mode of the config file (SPEC §11), as texts to log once at start.

A config that holds a password inline (an `[[smtp.accounts]]` password rather than
its password_file, an `[[smpp.accounts]]` or `[smpp.upstream]` password, a
`[[cmpp.accounts]]` or `[cmpp.upstream]` shared_secret, a password in
`registry.url`) and that its group or others may read is warned about; so is a
config its group may write (one others may write is refused by config.load). Each
text names the file, its mode in octal, and what to do. Apart from one stat and
one read of the file, the functions here are pure: the caller logs what they return.
"""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filterd.errors import shown_url

GROUP_OR_OTHER_READ = 0o044
GROUP_WRITE = 0o020


def config_warnings(path: Path) -> list[str]:
    """The warnings about the config file at `path`; none when it cannot be read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []  # load() reports an unreadable config; nothing to add here
    return mode_warnings(path, mode, inline_passwords(data))


def inline_passwords(data: Mapping[str, Any]) -> list[str]:
    """The keys of parsed config TOML that hold a password written in the file itself."""
    keys = []
    url = _table(data, "registry").get("url")
    if isinstance(url, str) and shown_url(url) != url:
        keys.append("registry.url")
    smtp, smpp = _table(data, "smtp"), _table(data, "smpp")
    keys += _in_accounts(smtp, "smtp.accounts")
    if "password" in _table(smpp, "upstream"):
        keys.append("smpp.upstream.password")
    keys += _in_accounts(smpp, "smpp.accounts")
    cmpp = _table(data, "cmpp")
    if "shared_secret" in _table(cmpp, "upstream"):
        keys.append("cmpp.upstream.shared_secret")
    keys += _in_accounts(cmpp, "cmpp.accounts", "shared_secret")
    return keys


def mode_warnings(path: Path, mode: int, inline: list[str]) -> list[str]:
    """The warnings for a config at `path` with permission bits `mode` whose keys
    `inline` hold passwords."""
    texts = []
    readers = [who for who, bit in (("its group", 0o040), ("others", 0o004)) if mode & bit]
    if inline and readers:
        smtp = any(key.startswith("smtp.") for key in inline)
        texts.append(
            f"config {path} has mode {mode:04o} and holds passwords inline "
            f"({', '.join(inline)}): {' and '.join(readers)} may read them; chmod 600 {path}"
            + (" (or give those [[smtp.accounts]] a password_file)" if smtp else "")
        )
    if mode & GROUP_WRITE:
        texts.append(
            f"config {path} has mode {mode:04o}: its group may write it, and so name the "
            f"upstreams and the accounts; chmod g-w {path} (640, or 600)"
        )
    return texts


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _in_accounts(section: Mapping[str, Any], name: str, key: str = "password") -> list[str]:
    accounts = section.get("accounts")
    if not isinstance(accounts, list):
        return []
    return [
        f"{name}[{index}].{key}"
        for index, account in enumerate(accounts)
        if isinstance(account, dict) and key in account
    ]
