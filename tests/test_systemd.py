"""The shipped systemd unit: it passes `systemd-analyze verify`, its exposure score
is at most 2.0, and it runs the daemon the way the daemon expects (Type=notify,
reload by SIGHUP, secret by LoadCredential)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "filterd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's `filterd` (verify checks it)."""
    filterd = Path(sys.executable).parent / "filterd"
    text = UNIT.read_text().replace("/opt/filterd/bin/filterd", str(filterd))
    copy = tmp_path / "filterd.service"
    copy.write_text(text)
    return copy


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single complaint."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "filterd.service" not in done.stderr, done.stderr


@needs_analyze
def test_unit_exposure_score_is_at_most_two(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the unit's exposure 2.0 or lower."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for filterd\.service: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    print(f"systemd-analyze security exposure: {found.group(1)}")
    assert float(found.group(1)) <= 2.0


def test_unit_matches_how_the_daemon_runs() -> None:
    """Type=notify with the main process notifying, SIGHUP reload, a watchdog, the
    secret from LoadCredential, no capabilities and a private state directory."""
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(settings["WatchdogSec"]) > 0
    assert settings["LoadCredential"].startswith("secret:")
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["StateDirectory"] == "filterd"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
