"""kill -9 the registry server right after an opt-out was acknowledged, restart it on the
same data directory: the refusal is there. Acknowledged means `filterctl refuse` exited 0,
or the SMPP relay answered the carrier's deliver_sm and sent the consumer's confirmation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from filterd.smpp.pdu import ESME_ROK, ESME_RTHROTTLED
from tests.faults.conftest import (
    FILTERCTL,
    NUMBER,
    ROUNDS,
    Daemon,
    Reaper,
    facts_of,
    pid_alive,
    registry_server,
    report,
    wait_until,
    write_config,
)
from tests.helpers import RedisProcess
from tests.smsc import FakeSmsc

pytestmark = pytest.mark.timeout(120 + 15 * ROUNDS)


def answers_ping(path: Path) -> bool:
    """True when a server answers PING on the unix socket `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Registry:
    """The registry server under test: external (killed and restarted by the test) or the
    embedded one (killed through its pid file, restarted by the daemon's supervision)."""

    def __init__(self, kind: str, home: Path, reaper: Reaper) -> None:
        self.kind = kind
        self.home = home
        self.server: RedisProcess | None = None
        if kind == "embedded":
            self.socket_path = home / "var" / "registry.sock"
            self.config_url = "embedded"
            reaper.pid_files.append(home / "var" / "registry.pid")
        else:
            self.server = registry_server(kind, home / kind, reaper)
            self.socket_path = self.server.socket_path
            self.config_url = self.server.url

    @property
    def url(self) -> str:
        """The server's unix:// URL."""
        return f"unix://{self.socket_path}"

    def kill9_and_restart(self) -> None:
        """SIGKILL the server, then have it running again on the same data directory."""
        if self.server is not None:
            self.server.kill()
            self.server.start()
            return
        pid_file = self.home / "var" / "registry.pid"
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the embedded server to die")
        # the daemon's supervision restarts it (it checks once a second)
        wait_until(lambda: answers_ping(self.socket_path), 30, "the embedded server to return")


@pytest.mark.parametrize("kind", ["embedded", "valkey", "redis"])
def test_refusal_survives_kill9_of_registry(kind: str, home: Path, reaper: Reaper) -> None:
    """ROUNDS trials, alternating `filterctl refuse` (exit 0) and an SMS STOP (deliver_sm
    answered ESME_ROK, confirmation sent): right after the acknowledgement the registry
    server gets SIGKILL and is restarted on its data directory; every refusal is there.
    Servers: the embedded Valkey (appendfsync always + WAITAOF), an external Valkey
    (AOF everysec + WAITAOF) and Debian's Redis 7.0 (appendfsync always)."""
    registry = Registry(kind, home, reaper)
    smsc = FakeSmsc().start()
    reaper.finalizers.append(smsc.shutdown)
    config = write_config(home, registry.config_url, smsc_port=smsc.port)
    daemon = Daemon(config, reaper, ("smpp",)).start()
    smsc.wait_bound()
    lost: list[str] = []
    cli_trials = sms_trials = throttled = 0
    for trial in range(ROUNDS):
        number = f"86138001{trial:05d}"
        if trial % 2 == 0:
            cli_trials += 1
            done = subprocess.run(
                [FILTERCTL, "--config", str(config), "refuse", "+" + number, "--sender", "acme"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
        else:
            sms_trials += 1
            confirmations = len(smsc.submits)
            while (status := smsc.send_mo(number, NUMBER, b"STOP")) == ESME_RTHROTTLED:
                throttled += 1  # the registry is not back yet for the daemon: the carrier retries
                assert throttled < 100
            assert status == ESME_ROK
            confirmation = smsc.wait_submits(confirmations + 1)[-1]
            assert confirmation.destination_addr == number
        registry.kill9_and_restart()
        facts = facts_of(registry.url, "+" + number)
        if ("refusal", "acme") not in {(k, s) for k, s, _ in facts}:
            lost.append(number)
    assert daemon.alive()
    assert daemon.stop() == 0
    line = report(
        f"registry_kill9[{kind}]",
        trials=ROUNDS,
        cli=cli_trials,
        sms=sms_trials,
        mo_throttled_then_retried=throttled,
        lost=len(lost),
    )
    assert not lost, line
