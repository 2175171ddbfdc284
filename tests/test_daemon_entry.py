"""`filterd`'s command line (filterd/daemon/entry.py), run as a real subprocess:
`check-config` exits 0 on the reference config and 2 (key on stderr, no traceback)
on a bad or missing one; `--version`; help with descriptions and exit codes."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    FILTERD,
    ROOT,
    environment,
    run_filterd,
)


def test_check_config_reference_ok() -> None:
    """`filterd check-config --config config/filterd.toml` exits 0 and says so on stdout."""
    result = run_filterd("check-config", "--config", "config/filterd.toml")
    assert result.returncode == 0, result.stderr
    assert "config ok" in result.stdout
    assert "config/filterd.toml" in result.stdout
    assert result.stderr == ""


def test_check_config_does_not_create_state() -> None:
    """check-config validates only: no secret file or data dir appears next to the config."""
    var = ROOT / "config" / "var"
    existed = var.exists()
    run_filterd("check-config", "--config", "config/filterd.toml")
    assert var.exists() == existed


def test_check_config_bad_key_exits_2(tmp_path: Path) -> None:
    """A config with an unknown key exits 2, naming the key on stderr, without a traceback."""
    path = tmp_path / "filterd.toml"
    path.write_text('[registry]\nurl = "embedded"\nfail_mod = "closed"\n')
    result = run_filterd("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "registry.fail_mod" in result.stderr
    assert "unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_config_bad_value_exits_2(tmp_path: Path) -> None:
    """A bad value exits 2 with the dotted key and the reason on one stderr line."""
    path = tmp_path / "filterd.toml"
    path.write_text('[smtp]\nlisten = "127.0.0.1:2525"\nupstream = "127.0.0.1:25"\n'
                    "max_recipients = 0\n")  # fmt: skip
    result = run_filterd("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "smtp.max_recipients" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_check_config_bad_smpp_workers_exits_2(tmp_path: Path) -> None:
    """smpp.workers = 0 exits 2 with the key and the value on one stderr line; 2 workers
    on a fixed port pass."""
    path = tmp_path / "filterd.toml"
    path.write_text('[smpp]\nlisten = "127.0.0.1:2775"\nworkers = 0\n')
    result = run_filterd("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "smpp.workers: 0 is outside 1-64" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    path.write_text('[smpp]\nlisten = "127.0.0.1:2775"\nworkers = 2\n')
    assert run_filterd("check-config", "--config", str(path)).returncode == 0


def test_check_config_bad_cmpp_values_exit_2(tmp_path: Path) -> None:
    """A [cmpp] table with an sp_id that is not 6 digits, a version other than "2.0" or
    "3.0", or an sp_id given twice exits 2 with the key and the value on one stderr line;
    the corrected table passes."""
    path = tmp_path / "filterd.toml"
    head = '[cmpp]\nlisten = "127.0.0.1:7890"\n'
    account = (
        '[[cmpp.accounts]]\nsp_id = "{}"\nshared_secret = "x"\nsender = "acme"\n'
        'stream = "commercial"\n'
    )
    upstream = (
        '[cmpp.upstream]\nhost = "127.0.0.1"\nport = 7891\nsp_id = "901234"\n'
        'shared_secret = "s"\nversion = "{}"\n'
    )
    cases = [
        (head + account.format("90001"), "cmpp.accounts[0].sp_id: '90001' is not 6 digits"),
        (head + upstream.format("3.1"), "cmpp.upstream.version: '3.1'"),
        (head + account.format("900001") * 2, "cmpp.accounts[1].sp_id: '900001' is already"),
    ]
    for text, message in cases:
        path.write_text(text)
        result = run_filterd("check-config", "--config", str(path))
        assert result.returncode == 2
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
    path.write_text(head + upstream.format("2.0") + account.format("900001"))
    assert run_filterd("check-config", "--config", str(path)).returncode == 0


def test_check_config_missing_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist exits 2 with the path on stderr, no traceback."""
    path = tmp_path / "absent.toml"
    result = run_filterd("check-config", "--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_bad_config_exits_2(tmp_path: Path) -> None:
    """`serve` rejects a bad config like check-config: exit 2, key on stderr, no traceback."""
    path = tmp_path / "filterd.toml"
    path.write_text('[registry]\nfail_mode = "ajar"\n')
    result = run_filterd("serve", "--config", str(path))
    assert result.returncode == 2
    assert "registry.fail_mode" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_rejects_too_long_data_dir(tmp_path: Path) -> None:
    """A data_dir too long for the embedded server's socket is a config error (exit 2)."""
    path = tmp_path / "filterd.toml"
    path.write_text(f'[registry]\ndata_dir = "{"d" * 120}"\n')
    result = run_filterd("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "registry.data_dir" in result.stderr


def test_serve_unusable_secret_file_exits_2(short_dir: Path) -> None:
    """A secret_file that cannot be created is rejected with exit 2 and no traceback."""
    (short_dir / "blocker").write_text("")
    path = short_dir / "filterd.toml"
    path.write_text('[registry]\ndata_dir = "d"\nsecret_file = "blocker/secret"\n')
    result = run_filterd("serve", "--config", str(path))
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert "registry.secret_file" in result.stdout + result.stderr


def test_version_prints_the_package_version() -> None:
    """`filterd --version` prints `filterd VERSION` (the installed package's) and exits 0."""
    result = run_filterd("--version")
    assert result.returncode == 0
    assert result.stdout == f"filterd {metadata.version('filterd')}\n"


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_command_help_shows_a_description_and_the_exit_codes(command: str) -> None:
    """`filterd COMMAND --help` describes the command and lists the exit codes."""
    result = run_filterd(command, "--help")
    assert result.returncode == 0
    paragraphs = result.stdout.split("\n\n")
    assert not paragraphs[1].startswith("options:")
    assert "exit codes:" in result.stdout
    assert "2  bad config" in result.stdout


def test_check_config_without_any_config_file_names_every_path(tmp_path: Path) -> None:
    """Without --config and $FILTERD_CONFIG, in a directory with no config/filterd.toml,
    check-config exits 2 naming every path it looked at, without a traceback."""
    if Path("/etc/filterd/filterd.toml").exists():
        pytest.skip("this machine has /etc/filterd/filterd.toml")
    result = subprocess.run(
        [str(FILTERD), "check-config"], cwd=tmp_path, env=environment(), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "/etc/filterd/filterd.toml" in result.stderr
    assert str(tmp_path / "config" / "filterd.toml") in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_log_level_exits_2_naming_it() -> None:
    """FILTERD_LOG_LEVEL set to no level name: `filterd` exits 2 before it reads the
    config, naming the variable, the value and the names it takes; nothing on stdout."""
    result = subprocess.run(
        [str(FILTERD), "check-config", "--config", "config/filterd.toml"],
        cwd=ROOT,
        env={**environment(), "FILTERD_LOG_LEVEL": "verbose"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "filterd: FILTERD_LOG_LEVEL: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR\n"
    )
