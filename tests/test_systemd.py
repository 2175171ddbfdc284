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

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "filterd.service"
UNITS = {"filterd.service": UNIT, "filterd@relay.service": SYSTEMD / "filterd@.service"}
"""Unit name to check → file it comes from (the template checked as one instance)."""
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _local_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at this environment's `filterd` (verify checks it)."""
    filterd = Path(sys.executable).parent / "filterd"
    text = UNITS[name].read_text().replace("/opt/filterd/bin/filterd", str(filterd))
    copy = tmp_path / name
    copy.write_text(text)
    return copy


@needs_analyze
@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    """`systemd-analyze verify` accepts the unit (and an instance of the template)
    without a single complaint."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(_local_copy(tmp_path, name))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "filterd" not in done.stderr, done.stderr


@needs_analyze
@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_exposure_score_is_at_most_two(tmp_path: Path, name: str) -> None:
    """`systemd-analyze security --offline` rates the exposure 2.0 or lower."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(_local_copy(tmp_path, name))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    print(f"systemd-analyze security exposure of {name}: {found.group(1)}")
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


def test_privileged_port_drop_in_grants_only_net_bind_service() -> None:
    """The port-25 drop-in adds CAP_NET_BIND_SERVICE and bounds the set to it alone."""
    text = (SYSTEMD / "filterd.service.d" / "bind-privileged-port.conf").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "[Service]",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ]
