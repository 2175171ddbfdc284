"""kill -9 the registry server right after an opt-out was acknowledged, restart it on the
same data directory: the refusal is there. Acknowledged means `filterctl refuse` exited 0,
the SMPP relay answered the carrier's deliver_sm and sent the consumer's confirmation, or
the one-click unsubscribe POST got 200."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from filterd.smpp.status import ESME_ROK, ESME_RTHROTTLED
from filterd.storage.embedded import answers_ping
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


def filterctl(config: Path, *args: str) -> str:
    """Run filterctl; its stdout (exit 0 required)."""
    done = subprocess.run(
        [FILTERCTL, "--config", str(config), *args], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def one_click(url: str) -> int:
    """RFC 8058 one-click POST; the HTTP status."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL from filterctl
        url, data=b"List-Unsubscribe=One-Click", method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


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
    """ROUNDS trials, in turn `filterctl refuse` (exit 0), an SMS STOP (deliver_sm answered
    ESME_ROK, confirmation sent) and an RFC 8058 one-click POST (HTTP 200): right after
    the acknowledgement the registry server gets SIGKILL and is restarted on its data
    directory; every refusal is there.
    Servers: the embedded Valkey (appendfsync always + WAITAOF), an external Valkey
    (AOF everysec + WAITAOF) and Debian's Redis 7.0 (appendfsync always)."""
    registry = Registry(kind, home, reaper)
    smsc = FakeSmsc().start()
    reaper.finalizers.append(smsc.shutdown)
    config = write_config(home, registry.config_url, smsc_port=smsc.port, http=True)
    daemon = Daemon(config, reaper, ("smpp", "http")).start()
    smsc.wait_bound()
    lost: list[str] = []
    trials: Counter[str] = Counter()
    throttled = 0
    for trial in range(ROUNDS):
        way = ("cli", "sms", "http")[trial % 3]
        trials[way] += 1
        number = f"86138001{trial:05d}"
        address = f"user{trial}@example.com" if way == "http" else "+" + number
        if way == "cli":
            filterctl(config, "refuse", address, "--sender", "acme")
        elif way == "http":
            url = filterctl(config, "unsubscribe-url", address, "--sender", "acme").strip()
            url = url.replace("127.0.0.1:0/", f"127.0.0.1:{daemon.ports['http']}/", 1)
            assert one_click(url) == 200
        else:
            confirmations = len(smsc.submits)
            while (status := smsc.send_mo(number, NUMBER, b"STOP")) == ESME_RTHROTTLED:
                throttled += 1  # the registry is not back yet for the daemon: the carrier retries
                assert throttled < 100
            assert status == ESME_ROK
            confirmation = smsc.wait_submits(confirmations + 1)[-1]
            assert confirmation.destination_addr == number
        registry.kill9_and_restart()
        facts = facts_of(registry.url, address)
        if ("refusal", "acme") not in {(k, s) for k, s, _ in facts}:
            lost.append(f"{way}:{address}")
    assert daemon.alive()
    assert daemon.stop() == 0
    line = report(
        f"registry_kill9[{kind}]",
        trials=ROUNDS,
        by_way=dict(trials),
        mo_throttled_then_retried=throttled,
        lost=len(lost),
        lost_addresses=",".join(lost) or "-",
    )
    assert not lost, line
