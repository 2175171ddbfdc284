"""filterctl's command line (filterd/cli/parsing.py): bad usage is exit 2 naming the
value, --version, and help that teaches (a description, help on every argument, the
exit codes)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from tests.cli_helpers import (
    COMMANDS,
    EXIT_CODE_LINES,
    arguments_without_help,
    ctl,
)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "+8613800138000"],  # --sender missing
        ["refuse", "+8613800138000"],  # scope missing
        ["consent", "+8613800138000", "--sender", "acme", "--channel", "email"],
        ["request", "+8613800138000", "--sender", "acme", "--ttl", "soon"],
        ["audit", "--since", "yesterday"],
        ["audit", "--limit", "0"],
        ["nosuchcommand"],
    ],
)
def test_bad_usage_exits_2(home: Path, args: list[str]) -> None:
    """Bad usage exits 2 with a message on stderr and nothing on stdout."""
    result = ctl(home, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip()


def test_version_prints_the_package_version(home: Path) -> None:
    """`filterctl --version` prints `filterctl VERSION` (the installed package's) and exits 0."""
    result = ctl(home, "--version")
    assert result.returncode == 0
    assert result.stdout == f"filterctl {metadata.version('filterd')}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_description_and_the_exit_codes(
    home: Path, command: str
) -> None:
    """`filterctl COMMAND --help` exits 0 and shows a description of the command (a
    paragraph between the usage and the arguments), a help text for every argument and
    the exit codes."""
    result = ctl(home, command, "--help")
    assert result.returncode == 0
    assert result.stderr == ""
    paragraphs = result.stdout.split("\n\n")
    assert paragraphs[0].startswith(f"usage: filterctl {command} ")
    assert not paragraphs[1].startswith(("positional arguments:", "options:"))
    assert len(paragraphs[1].split()) >= 10
    for line in EXIT_CODE_LINES:
        assert "\n  " + line in result.stdout
    assert arguments_without_help(result.stdout) == []


def test_consent_help_teaches_its_use(home: Path) -> None:
    """`filterctl consent --help` says what a consent does, when --evidence is needed, and
    shows an example command."""
    text = ctl(home, "consent", "--help").stdout
    assert "--evidence" in text
    assert "refusal on record" in text
    assert "filterctl consent +86" in text
