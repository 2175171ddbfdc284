"""Shared by the tests of the daemon package (tests/test_daemon_*.py): `filterd` run
as a real subprocess, its JSON log lines read with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import select
import smtplib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
FILTERD = Path(sys.executable).parent / "filterd"
if not FILTERD.exists():
    FILTERD = ROOT / ".venv" / "bin" / "filterd"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def environment() -> dict[str, str]:
    """The test's environment without $FILTERD_CONFIG, so only --config counts."""
    env = dict(os.environ)
    env.pop("FILTERD_CONFIG", None)
    env.pop("FILTERD_LOG_LEVEL", None)
    return env


def run_filterd(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `filterd ARGS` from the repository root and capture its output."""
    return subprocess.run(
        [str(FILTERD), *args],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class LineReader:
    """Reads a pipe line by line with a deadline (select, no sleeping)."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.buffer = b""
        self.eof = False
        self.lines: list[str] = []

    def readline(self, deadline: float) -> str | None:
        """The next line, or None at EOF; TimeoutError once `deadline` has passed."""
        while b"\n" not in self.buffer:
            if self.eof:
                if not self.buffer:
                    return None
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete line in time; so far: {self.lines!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                self.eof = not chunk
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        text = line.decode()
        self.lines.append(text)
        return text

    def until_event(self, event: str, timeout: float) -> dict[str, Any]:
        """Read JSON lines until one has `event`; fail on EOF or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(deadline)
            if line is None:
                pytest.fail(f"stdout closed before {event!r}; lines: {self.lines!r}")
            entry = json.loads(line)
            if entry.get("event") == event:
                return dict(entry)

    def rest(self, timeout: float) -> list[str]:
        """Every remaining line up to EOF (within `timeout`)."""
        deadline = time.monotonic() + timeout
        rest = []
        while (line := self.readline(deadline)) is not None:
            rest.append(line)
        return rest


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """True once process `pid` has exited (pidfd readable), within `timeout`."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def serve(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`filterd serve` on `config`, its log lines on a pipe (stderr dropped)."""
    return subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env or environment(),
        bufsize=0,
    )


@contextlib.contextmanager
def serving(config: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """serve(config); killed at the end if still running, its pipe closed."""
    process = serve(config, env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
        assert process.stdout is not None
        process.stdout.close()


def smtp_workers_config(directory: Path, registry_url: str, smtp_port: int, more: str) -> Path:
    """A secret and a config in `directory`: the registry, an SMTP relay on `smtp_port`
    with workers = 2 and account mta/pw (commercial, upstream: a port nobody listens on),
    then the `more` sections."""
    (directory / "secret").write_text("cd" * 32 + "\n")
    (directory / "secret").chmod(0o600)
    config = directory / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{registry_url}"\nsecret_file = "secret"\n'
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\nupstream = "127.0.0.1:{free_port()}"\n'
        "workers = 2\n"
        '[[smtp.accounts]]\nusername = "mta"\npassword = "pw"\nsender = "acme"\n'
        'stream = "commercial"\n' + more
    )
    return config


def smtp_decisions(base: str) -> float:
    """The sum of filterd_decisions_total{front_end="smtp"} that GET /metrics shows."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:  # noqa: S310
        text = response.read().decode()
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == "filterd_decisions_total" and found.labels["front_end"] == "smtp"
    )


def refused_rcpts(port: int, count: int) -> None:
    """`count` SMTP sessions, each a new connection: AUTH, one RCPT with no consent (550)."""
    for number in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.login("mta", "pw")
            client.mail("shop@acme.test")
            code, _ = client.rcpt(f"nobody{number}@example.com")
            assert code == 550
