"""filterctl's command line (filterd/cli/parsing.py): bad usage is exit 2 naming the
value, --version, and help that teaches (a description, help on every argument, the
exit codes)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from filterd.cli.parsing import parser
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
        ["consent", "jane@example.com", "--sender", "acme", "--channel", "voice"],
        ["refuse", "jane@example.com", "--all-senders", "--channel", "voice"],
        ["check", "+8613800138000", "--sender", "acme", "--channel", "all"],
        ["consent", "+8613800138000", "--sender", "acme", "--channel", "phone"],
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


VOICE_COMMANDS = [
    ["consent", "+8613800138000", "--sender", "acme"],
    ["request", "+8613800138000", "--sender", "acme"],
    ["refuse", "+8613800138000", "--all-senders"],
    ["check", "+8613800138000", "--sender", "acme"],
    ["unsubscribe-url", "+8613800138000", "--sender", "acme"],
    ["import", "calls.csv", "--action", "refuse", "--all-senders"],
]


@pytest.mark.parametrize("args", VOICE_COMMANDS, ids=lambda args: args[0])
def test_every_channel_option_takes_voice(args: list[str]) -> None:
    """Every command with --channel takes voice (commercial calls) beside email and
    sms; without it the channel is left to the address (None)."""
    assert parser().parse_args([*args, "--channel", "voice"]).channel == "voice"
    assert parser().parse_args(args).channel is None


@pytest.mark.parametrize(
    ("args", "takes_all"),
    [(args, args[0] in ("refuse", "import")) for args in VOICE_COMMANDS],
    ids=lambda value: value[0] if isinstance(value, list) else str(value),
)
def test_only_refuse_and_import_take_all(args: list[str], takes_all: bool) -> None:
    """`--channel all` (email, sms and voice) is a refusal's choice: refuse and import
    take it, the others exit 2."""
    if takes_all:
        assert parser().parse_args([*args, "--channel", "all"]).channel == "all"
    else:
        with pytest.raises(SystemExit) as exit_info:
            parser().parse_args([*args, "--channel", "all"])
        assert exit_info.value.code == 2
