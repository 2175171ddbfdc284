"""The `filterd` console script, run as a real subprocess.

`check-config` exits 0 on the reference config and 2 (key on stderr, no
traceback) on a bad or missing one; `serve` with only a [registry] section
starts its embedded registry server, logs JSON lines to stdout (a "started"
event), and on SIGTERM exits 0 and stops the server it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from filterd.storage.embedded import answers_ping
from tests.helpers import LogReader, RedisProcess, free_port, wait_until

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


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp with a short path (unix socket paths must be < 100 chars)."""
    path = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---- check-config ---------------------------------------------------------------


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


# ---- serve -----------------------------------------------------------------------


@pytest.fixture
def serve_config(short_dir: Path) -> Path:
    """A minimal config: only [registry], embedded, data and secret in a short directory."""
    path = short_dir / "filterd.toml"
    path.write_text('[registry]\nurl = "embedded"\ndata_dir = "data"\nsecret_file = "secret/key"\n')
    return path


def test_serve_starts_logs_json_and_stops_on_sigterm(serve_config: Path) -> None:
    """serve logs JSON lines and "started"; on SIGTERM it exits 0 and stops its server.

    The embedded server answers on data_dir/registry.sock while serve runs; after
    the exit its process is gone and the socket no longer answers.
    """
    data_dir = serve_config.parent / "data"
    sock = data_dir / "registry.sock"
    server_pid: int | None = None
    with subprocess.Popen(
        [str(FILTERD), "serve", "--config", str(serve_config)],
        cwd=serve_config.parent,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None
            reader = LineReader(proc.stdout)
            started = reader.until_event("started", START_TIMEOUT_S)
            assert started["level"] == "info"
            assert started["component"] == "daemon"
            assert started["registry"] == "embedded"
            assert started["config"] == str(serve_config)

            assert answers_ping(sock), "the embedded registry server does not answer"
            server_pid = int((data_dir / "registry.pid").read_text().strip())
            secret = serve_config.parent / "secret" / "key"
            assert secret.stat().st_mode & 0o777 == 0o600

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
            rest = reader.rest(timeout=5.0)
            stderr = proc.stderr.read().decode() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            if server_pid is not None and not wait_pid_gone(server_pid, 0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server_pid, signal.SIGTERM)

    entries = [json.loads(line) for line in reader.lines]  # every stdout line is JSON
    assert all(isinstance(entry, dict) for entry in entries)
    assert [entry["event"] for entry in entries].count("started") == 1
    assert [json.loads(line)["event"] for line in rest][-2:] == ["stopping", "stopped"]
    assert "Traceback" not in stderr
    assert wait_pid_gone(server_pid, STOP_TIMEOUT_S), "the embedded server still runs"
    assert not answers_ping(sock), "the embedded registry socket still answers"


def test_serve_runs_the_policy_service(valkey_server: RedisProcess, short_dir: Path) -> None:
    """`filterd serve` with [policy] and accounts-only [smtp] answers Postfix policy requests
    from the registry, and stops cleanly."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    config = short_dir / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
        '[policy]\nlisten = "127.0.0.1:0"\n'
        '[[smtp.accounts]]\nusername = "mta"\nsender = "acme"\nstream = "commercial"\n'
    )
    process = serve(config)
    try:
        port = int(LogReader(process).wait_for("listening")["port"])  # type: ignore[call-overload]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=mta\n"
                b"recipient=jane@example.com\nclient_address=10.0.0.1\n\n"
            )
            reply = sock.makefile("rb").readline()
        assert reply == b"action=550 5.7.1 <jane@example.com>: no consent or request on record\n"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stdout is not None
        process.stdout.close()


def test_listener_port_in_use_exits_1_naming_the_key(
    valkey_server: RedisProcess, short_dir: Path
) -> None:
    """A listen address already in use: filterd logs the key and the reason, exits 1."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = short_dir / "filterd.toml"
        config.write_text(
            f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
            f'[policy]\nlisten = "127.0.0.1:{port}"\n'
        )
        result = subprocess.run(
            [FILTERD, "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"policy.listen 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_runs_the_http_front_end(valkey_server: RedisProcess, short_dir: Path) -> None:
    """`filterd serve` with [http] listens (port from the OS), answers /healthz 200 with a
    JSON body, records a one-click refusal for a URL filterctl made, serves /metrics, and
    on SIGTERM drains the HTTP front end and exits 0."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    config = short_dir / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test"\n'
        '[[smtp.accounts]]\nusername = "mta"\nsender = "acme"\nstream = "commercial"\n'
    )
    made = subprocess.run(
        [FILTERD.parent / "filterctl", "--config", str(config), "unsubscribe-url",
         "jane@example.com", "--sender", "acme"],
        capture_output=True, text=True, timeout=60, check=False, env=environment(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = urllib.parse.urlsplit(made.stdout.strip()).path
    with serving(config) as process:
        log = LogReader(process)
        listening = log.wait_for("listening")
        assert listening["front_end"] == "http"
        base = f"http://127.0.0.1:{listening['port']}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:  # noqa: S310
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok", "registry": "ok"}
        one_click = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
            base + path, data=b"List-Unsubscribe=One-Click", method="POST"
        )
        with urllib.request.urlopen(one_click, timeout=30) as response:  # noqa: S310
            assert response.status == 200
        fact = log.wait_for("fact")
        assert (fact["origin"], fact["sender"], fact["result"]) == ("one-click", "acme", "stored")
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:  # noqa: S310
            assert b'filterd_optouts_total{origin="one-click"} 1.0' in response.read()
        process.send_signal(signal.SIGTERM)
        assert log.wait_for("drained")["front_end"] == "http"
        assert process.wait(STOP_TIMEOUT_S) == 0
    status = subprocess.run(
        [FILTERD.parent / "filterctl", "--config", str(config), "--json", "status",
         "jane@example.com"],
        capture_output=True, text=True, timeout=60, check=False, env=environment(),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    [entry] = json.loads(status.stdout)
    assert (entry["fact"], entry["sender"], entry["source"]) == ("refusal", "acme", "one-click")


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


def test_smtp_and_smpp_workers_side_by_side(valkey_server: RedisProcess, short_dir: Path) -> None:
    """smtp.workers = 2 and smpp.workers = 2 at once: the main process serves both relays,
    one worker only SMTP and one only SMPP, each on the shared fixed port; SIGHUP reaches
    both workers (each logs "reloaded") and SIGTERM stops all three, exit 0."""
    smtp_port, smpp_port = free_port(), free_port()
    config = smtp_workers_config(
        short_dir, valkey_server.url, smtp_port,
        f'[smpp]\nlisten = "127.0.0.1:{smpp_port}"\nworkers = 2\n'
        '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "pw"\nsender = "acme"\n'
        'stream = "commercial"\n',
    )  # fmt: skip
    with serving(config) as process:
        log = LogReader(process)
        listening = [log.wait_for("listening", START_TIMEOUT_S) for _ in range(4)]
        assert sorted((e["role"], e["front_end"], e["port"]) for e in listening) == [  # type: ignore[type-var]
            ("main", "smpp", smpp_port), ("main", "smtp", smtp_port),
            ("smpp-worker", "smpp", smpp_port), ("smtp-worker", "smtp", smtp_port),
        ]  # fmt: skip
        process.send_signal(signal.SIGHUP)
        reloaded = [log.wait_for("reloaded") for _ in range(3)]
        assert sorted(str(e["role"]) for e in reloaded) == ["main", "smpp-worker", "smtp-worker"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT_S) == 0
    for entry in listening:
        if entry["role"] != "main":
            with pytest.raises(ProcessLookupError):
                os.kill(int(entry["pid"]), 0)  # type: ignore[call-overload]


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


def test_workers_decisions_show_in_the_main_processs_metrics(
    valkey_server: RedisProcess, short_dir: Path
) -> None:
    """With smtp.workers = 2 the main process's /metrics counts the decisions of both
    processes (a worker reports within a second); after kill -9 of the worker the totals
    do not drop and its replacement adds on; after SIGTERM the main process's private
    metrics directory is gone."""
    temp = short_dir / "tmp"
    temp.mkdir()
    smtp_port = free_port()
    config = smtp_workers_config(
        short_dir, valkey_server.url, smtp_port,
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test"\n',
    )  # fmt: skip
    with serving(config, {**environment(), "TMPDIR": str(temp)}) as process:
        log = LogReader(process)
        listening = [log.wait_for("listening", START_TIMEOUT_S) for _ in range(3)]
        [http] = [e for e in listening if e["front_end"] == "http"]
        [worker] = [e for e in listening if e["role"] == "smtp-worker"]
        base = f"http://127.0.0.1:{http['port']}"
        refused_rcpts(smtp_port, 16)
        roles = {str(log.wait_for("decision")["role"]) for _ in range(16)}
        assert roles == {"main", "smtp-worker"}, "the kernel gave every connection to one"
        wait_until("16 decisions in /metrics", lambda: smtp_decisions(base) == 16, 10)
        os.kill(int(worker["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        log.wait_for("worker_restarted", 30)
        assert smtp_decisions(base) == 16
        log.wait_for("listening", START_TIMEOUT_S)
        refused_rcpts(smtp_port, 8)
        wait_until("24 decisions in /metrics", lambda: smtp_decisions(base) == 24, 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT_S) == 0
    assert list(temp.iterdir()) == []
