"""Shared by the tests of filterctl (tests/test_cli_*.py): filterctl run through its
real console script against its embedded registry, and what checks its output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from filterd.identity import ConsumerHasher
from filterd.normalize import normalize
from filterd.secret import load_or_create
from filterd.tokens import TokenKeys, Unsubscribe, derive_key, sender_table

FILTERCTL = str(Path(sys.executable).parent / "filterctl")
PHONE_RAW = "+86 138 0013 8000"
PHONE_NATIONAL = "13800138000"
HTTP_SECTIONS = (
    '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test/base/"\n'
    '[[smtp.accounts]]\nusername = "mta"\nsender = "acme"\nstream = "commercial"\n'
)
COMMANDS = ["consent", "request", "refuse", "status", "check", "import", "export", "audit",
            "stats", "unsubscribe-url"]  # fmt: skip
EXIT_CODE_LINES = ["0    success", "1    check: the message would be dropped",
                   "2    bad usage or bad input", "3    the registry is unreachable",
                   "141  stdout was closed"]  # fmt: skip


def ctl(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run filterctl with the home's config; capture stdout and stderr separately."""
    environ = {k: v for k, v in os.environ.items() if k != "FILTERD_CONFIG"}
    environ.update(env or {})
    return subprocess.run(
        [FILTERCTL, "--config", str(home / "filterd.toml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def verify_url(home: Path, url: str, key: bytes | None = None) -> Unsubscribe:
    """The request the URL's token carries, checked with the home's secret (or `key`)."""
    prefix = "https://unsub.acme.test/base/unsubscribe/"
    assert url.startswith(prefix)
    secret = load_or_create(home / "var" / "secret")
    keys = TokenKeys(key or derive_key(secret), max_age_s=400 * 86400)
    return keys.verify(url.removeprefix(prefix), sender_table(["acme"]), int(time.time()))


def consumer_of(home: Path, address: str) -> bytes:
    """The consumer id of `address` under the home's secret."""
    secret = load_or_create(home / "var" / "secret")
    return ConsumerHasher(secret).consumer_id(normalize(address, "CN"))


def arguments_without_help(text: str) -> list[str]:
    """The arguments in argparse help `text` (its "positional arguments:" and "options:"
    sections) that have no help text: an entry line (two spaces, then the argument) with
    no text after the argument and no deeper-indented line below it."""
    missing = []
    for section in text.split("\n\n"):
        lines = section.splitlines()
        if not lines or lines[0] not in ("positional arguments:", "options:"):
            continue
        entries = lines[1:]
        for index, line in enumerate(entries):
            if not line.startswith("  ") or line.startswith("   "):
                continue  # a continuation line
            following = entries[index + 1] if index + 1 < len(entries) else ""
            has_text = "  " in line.strip()
            if not has_text and not following.startswith("   "):
                missing.append(line.strip())
    return missing
