"""filterctl's entry point (filterd/cli/main.py), through the real console script:
stdout holds only results, the registry unreachable is exit 3, a closed stdout ends
quietly (141), a missing config names every path tried."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import (
    FILTERCTL,
    PHONE_RAW,
    ctl,
)


def test_stdout_holds_only_results(home: Path) -> None:
    """With INFO logging on, logs go to stderr; stdout is the result alone."""
    result = ctl(home, "refuse", "+8613800138000", "--all-senders", "--json",
                 env={"FILTERD_LOG_LEVEL": "INFO"})  # fmt: skip
    assert result.returncode == 0
    assert json.loads(result.stdout)["result"] == "stored"
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "fact" in events
    assert "13800138000" not in result.stderr


def test_registry_unreachable_exits_3(home: Path) -> None:
    """A registry that cannot be reached exits 3 with a message."""
    (home / "down.toml").write_text(
        '[registry]\nurl = "redis://127.0.0.1:1"\nsecret_file = "var/secret"\n'
    )
    result = subprocess.run(
        [FILTERCTL, "--config", str(home / "down.toml"), "check", "+8613800138000",
         "--sender", "acme"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert "registry unreachable" in result.stderr
    assert result.stdout == ""


def test_export_into_a_pipe_closed_after_the_first_line_ends_quietly(home: Path) -> None:
    """`filterctl export --format jsonl | head -1` on a registry with many facts: the first
    line arrives, then the closed pipe ends the command with exit 141 (as a shell reports
    a program ended by SIGPIPE), nothing on stderr (no BrokenPipeError traceback)."""
    (home / "many.csv").write_text("".join(f"+86138{i:08d}\n" for i in range(5000)))
    imported = ctl(home, "import", str(home / "many.csv"), "--action", "refuse", "--sender", "acme")
    assert imported.returncode == 0, imported.stderr
    environ = {k: v for k, v in os.environ.items() if k != "FILTERD_CONFIG"}
    with subprocess.Popen(
        [FILTERCTL, "--config", str(home / "filterd.toml"), "export", "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = json.loads(process.stdout.readline())
        process.stdout.close()  # the reader is gone; more than a pipe buffer is still to come
        assert process.wait(60) == 141
        stderr = process.stderr.read().decode()
    assert first["fact"] == "refusal"
    assert stderr == ""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["status", PHONE_RAW], ["--json", "audit"], ["stats"],
     ["check", PHONE_RAW, "--sender", "acme"]],
    ids=["help", "version", "status", "audit", "stats", "check"],
)  # fmt: skip
def test_stdout_closed_before_the_first_write_ends_quietly(home: Path, args: list[str]) -> None:
    """Every command whose stdout reader is already gone ends with exit 141 and nothing
    on stderr: the result cannot be printed, and that is no error worth a traceback."""
    ctl(home, "refuse", PHONE_RAW, "--all-senders")
    read_end, write_end = os.pipe()
    os.close(read_end)
    environ = {k: v for k, v in os.environ.items() if k != "FILTERD_CONFIG"}
    try:
        result = subprocess.run(
            [FILTERCTL, "--config", str(home / "filterd.toml"), *args],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=environ,
            check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_without_any_config_file_every_path_looked_at_is_named(tmp_path: Path) -> None:
    """With no --config, no $FILTERD_CONFIG and neither default file, filterctl exits 2 and
    its one-line error names /etc/filterd/filterd.toml and config/filterd.toml of the
    working directory."""
    if Path("/etc/filterd/filterd.toml").exists():
        pytest.skip("this machine has /etc/filterd/filterd.toml")
    environ = {k: v for k, v in os.environ.items() if k != "FILTERD_CONFIG"}
    result = subprocess.run(
        [FILTERCTL, "stats"], cwd=tmp_path, env=environ, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "/etc/filterd/filterd.toml" in line
    assert str(tmp_path / "config" / "filterd.toml") in line
    missing = tmp_path / "absent.toml"
    result = subprocess.run(
        [FILTERCTL, "stats"], cwd=tmp_path, env={**environ, "FILTERD_CONFIG": str(missing)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"$FILTERD_CONFIG: {missing}: no such file" in result.stderr


def test_unknown_log_level_exits_2_naming_it(home: Path) -> None:
    """FILTERD_LOG_LEVEL set to no level name: filterctl does nothing and exits 2, naming
    the variable and the value on stderr; a level in lower case is taken."""
    wrong = ctl(home, "refuse", "+8613800138000", "--all-senders",
                env={"FILTERD_LOG_LEVEL": "loud"})  # fmt: skip
    assert wrong.returncode == 2
    assert wrong.stdout == ""
    assert "FILTERD_LOG_LEVEL: 'loud' is not one of DEBUG, INFO, WARNING, ERROR" in wrong.stderr
    check = ctl(home, "check", "+8613800138000", "--sender", "acme",
                env={"FILTERD_LOG_LEVEL": "debug"})  # fmt: skip
    assert check.returncode in (0, 1), check.stderr
    assert "not one of" not in check.stderr
