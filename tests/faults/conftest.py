"""Fixtures and drivers of the fault tests: real processes over loopback only.

Every process a fault test starts is tracked by the `reaper` fixture: filterd
runs in a session of its own (so its SMTP workers share its process group),
the registry servers are children of the test, and the embedded server is
found through its pid file. At teardown the reaper notes any process still
alive (a "leftover"), then SIGKILLs every group and pid it knows.

Knobs (read here only):

- `FILTERD_FAULT_ROUNDS` (default 5, the CI short form): kills, trials and
  outage cycles per test. Long mode: `FILTERD_FAULT_ROUNDS=20` or more.
- `FILTERD_FAULT_OUTAGE_S`: how long the registry stays down in the outage
  test (default 2 s; 5 s when ROUNDS ≥ 20).

Each test records its counts with `report()`; they are printed as one
`FAULT-COUNTS` line per test on stdout (seen with `-s`) and again in the
terminal summary, so CI output shows them either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from filterd.identity import ConsumerHasher
from filterd.model import ALL_SENDERS, FactRequest, Kind
from filterd.normalize import normalize
from filterd.service import Service
from filterd.smpp.decode import SmppProtocolError
from filterd.smpp.encode import encode
from filterd.smpp.framer import Framer
from filterd.smpp.pdu import (
    BindTransceiver,
    DeliverSm,
    EnquireLink,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    response_to,
)
from filterd.storage.redis import RedisRegistry
from tests.cmpp_ismg import FakeIsmg
from tests.helpers import RedisProcess, SinkServer, aof_args, bundled_valkey, system_redis
from tests.smsc import FakeSmsc

FILTERD = str(Path(sys.executable).parent / "filterd")
FILTERCTL = str(Path(sys.executable).parent / "filterctl")
SECRET = "fa" * 32
NUMBER = "10690001"
JANE_SMS = "8613800138000"
JANE = "jane@example.com"
BOB = "bob@example.com"
SMTP_USER, SMTP_PASSWORD = "newsletter", "pw-news"
SMPP_SYSTEM_ID, SMPP_PASSWORD = "promo", "chg-me-1"
CMPP_SP_ID, CMPP_SECRET = "900001", "chg-me-2"
POLICY_NETWORK = "192.0.2.0/24"
"""The client network of the account the policy service finds without a sasl_username."""

ROUNDS = max(1, int(os.environ.get("FILTERD_FAULT_ROUNDS", "5")))
LONG = ROUNDS >= 20
OUTAGE_S = float(os.environ.get("FILTERD_FAULT_OUTAGE_S", "5" if LONG else "2"))

RETRY_PACE_S = 0.05
"""How long a load client waits after a temporary failure before its next message."""

_COUNTS: list[str] = []


def report(test: str, **counts: object) -> str:
    """Record one test's counts: printed now and in the terminal summary."""
    line = f"FAULT-COUNTS {test}: " + " ".join(f"{k}={v}" for k, v in counts.items())
    print(line)
    _COUNTS.append(line)
    return line


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat every fault test's counts at the end of the run."""
    if _COUNTS:
        terminalreporter.section("fault test counts")
        for line in _COUNTS:
            terminalreporter.write_line(line)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a state that has no event to await (a server answering), bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- processes ------------------------------------------------------------------------


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process in process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append((int(entry.name), cmdline))
    return found


def await_group_exit(pgid: int, timeout: float = 10) -> list[tuple[int, str]]:
    """Wait (pidfd, no polling) for the members of a process group to exit, `timeout`
    seconds at most each; the members still alive then."""
    for pid, _ in group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid)
            try:
                select.select([pidfd], [], [], timeout)
            finally:
                os.close(pidfd)
    return group_members(pgid)


def pid_alive(pid: int) -> bool:
    """True for a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Reaper:
    """Every process a test started; kills what is left at teardown and says what it was."""

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.pid_files: list[Path] = []
        self.popens: list[subprocess.Popen[bytes]] = []
        self.finalizers: list[Callable[[], None]] = []
        self.leftovers: list[str] = []

    def track(self, process: subprocess.Popen[bytes], *, group: bool = True) -> None:
        """Remember a process (and, with group=True, its whole process group)."""
        self.popens.append(process)
        if group:
            self.groups.append(process.pid)

    def leftover_processes(self) -> list[str]:
        """Command lines of tracked processes still alive."""
        alive = [f"{pid}:{cmd}" for pgid in self.groups for pid, cmd in group_members(pgid)]
        for pid_file in self.pid_files:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().strip())
                if pid_alive(pid):
                    alive.append(f"{pid}:{pid_file.parent.name} server")
        return sorted(set(alive))

    def reap(self) -> None:
        """Note leftovers, then SIGKILL every known group and pid, and run the finalizers."""
        self.leftovers = self.leftover_processes()
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid_file in self.pid_files:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().strip())
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        for process in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for finalizer in reversed(self.finalizers):
            with contextlib.suppress(Exception):
                finalizer()


@pytest.fixture
def reaper(request: pytest.FixtureRequest) -> Iterator[Reaper]:
    """The test's process tracker; leftovers are reported with the test's node id."""
    tracker = Reaper()
    try:
        yield tracker
    finally:
        tracker.reap()
        if tracker.leftovers:
            report(request.node.name, killed_at_teardown=";".join(tracker.leftovers))


@pytest.fixture
def home(reaper: Reaper) -> Path:
    """A short temp dir under /tmp (unix socket paths must stay under ~100 characters)."""
    path = Path(tempfile.mkdtemp(prefix="flt", dir="/tmp"))
    reaper.finalizers.append(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def registry_server(kind: str, directory: Path, reaper: Reaper) -> RedisProcess:
    """A registry server of `kind` this test owns: "valkey" (AOF everysec + WAITAOF) or
    "redis" (Debian's 7.0, appendfsync always); skips when the binary is missing."""
    binary = bundled_valkey() if kind == "valkey" else system_redis()
    if binary is None:
        pytest.skip(f"no {kind} server binary installed")
    server = RedisProcess(binary, directory, aof_args(binary)).start()
    reaper.finalizers.append(server.kill)
    return server


@pytest.fixture
def valkey(home: Path, reaper: Reaper) -> RedisProcess:
    """A Valkey registry server owned by the test (it may be killed and restarted)."""
    return registry_server("valkey", home / "valkey", reaper)


# ---- registry contents ------------------------------------------------------------------


def record_fact(url: str, address: str, kind: Kind, sender: str = "acme") -> None:
    """Write a fact into the registry filterd reads (same secret)."""

    async def write() -> None:
        registry = RedisRegistry.from_url(url)
        service = Service(registry, ConsumerHasher(bytes.fromhex(SECRET)), request_ttl_s=3600)
        normalised = normalize(address)
        channel = None if sender == ALL_SENDERS else normalised.channel
        await service.record(
            FactRequest(normalised, kind, sender, channel, "fault-test"), origin="test"
        )
        await registry.close()

    asyncio.run(write())


@contextlib.contextmanager
def daemon_on_valkey(
    reaper: Reaper,
    prefix: str,
    facts: list[tuple[str, Kind]],
    front_ends: tuple[str, ...],
    **config: Any,
) -> Iterator[Daemon]:
    """A started filterd (`front_ends`, `write_config(**config)`) on its own Valkey in a
    temp dir named `prefix…`, with `facts` recorded for sender acme; everything `reaper`
    holds is reaped and the dir removed at the end (the fuzz tests' shared target)."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        server = registry_server("valkey", home / "valkey", reaper)
        for address, kind in facts:
            record_fact(server.url, address, kind)
        yield Daemon(write_config(home, server.url, **config), reaper, front_ends).start()
    finally:
        reaper.reap()
        shutil.rmtree(home, ignore_errors=True)


def facts_of(url: str, address: str) -> list[tuple[str, str, str]]:
    """(kind, sender, source) of every fact on record for `address`."""

    async def read() -> list[tuple[str, str, str]]:
        registry = RedisRegistry.from_url(url)
        hasher = ConsumerHasher(bytes.fromhex(SECRET))
        try:
            facts = await registry.facts(hasher.consumer_id(normalize(address)))
        finally:
            await registry.close()
        return [(f.kind.value, f.sender, f.source) for f in facts]

    return asyncio.run(read())


# ---- config and the daemon ----------------------------------------------------------------


def free_port() -> int:
    """A port the OS considers free now (for smtp.workers > 1, which needs a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    home: Path,
    registry_url: str,
    *,
    smtp_upstream: int | None = None,
    smtp_listen: str = "127.0.0.1:0",
    workers: int = 1,
    smsc_port: int | None = None,
    smpp_listen: str = "127.0.0.1:0",
    smpp_workers: int = 1,
    http: bool = False,
    policy: bool = False,
    ismg: FakeIsmg | None = None,
    cmpp_listen: str = "127.0.0.1:0",
    cmpp_workers: int = 1,
) -> Path:
    """A config with the SMTP relay (if `smtp_upstream`), the SMPP relay (if `smsc_port`),
    the HTTP front end (if `http`; port chosen by the OS, so unsubscribe URLs name
    port 0 and the caller puts in the port the daemon logged) and the Postfix policy
    service (if `policy`; without the SMTP relay its account is an `[smtp]` account with
    no listener, found by sasl_username or by a client address in POLICY_NETWORK) and
    the CMPP relay (if `ismg`: linked to that fake ISMG, account CMPP_SP_ID of acme,
    window 64)."""
    secret = home / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    registry = f'url = "{registry_url}"'
    if registry_url == "embedded":
        registry += '\ndata_dir = "var"'
    text = f"""
[registry]
{registry}
secret_file = "secret"
default_region = "CN"
"""
    if smtp_upstream is not None:
        text += f"""
[smtp]
listen = "{smtp_listen}"
upstream = "127.0.0.1:{smtp_upstream}"
hostname = "filterd.test"
workers = {workers}

[[smtp.accounts]]
username = "{SMTP_USER}"
password = "{SMTP_PASSWORD}"
sender = "acme"
stream = "commercial"
"""
    if smsc_port is not None:
        text += f"""
[smpp]
listen = "{smpp_listen}"
workers = {smpp_workers}

[smpp.upstream]
host = "127.0.0.1"
port = {smsc_port}
system_id = "filterd"
password = "secret1"

[[smpp.accounts]]
system_id = "{SMPP_SYSTEM_ID}"
password = "{SMPP_PASSWORD}"
sender = "acme"
stream = "commercial"

[[smpp.numbers]]
address = "{NUMBER}"
sender = "acme"
"""
    if ismg is not None:
        text += f"""
[cmpp]
listen = "{cmpp_listen}"
workers = {cmpp_workers}
window = 64

[cmpp.upstream]
host = "127.0.0.1"
port = {ismg.port}
sp_id = "{ismg.sp_id}"
shared_secret = "{ismg.secret}"

[[cmpp.accounts]]
sp_id = "{CMPP_SP_ID}"
shared_secret = "{CMPP_SECRET}"
sender = "acme"
stream = "commercial"

[[cmpp.numbers]]
address = "{NUMBER}"
sender = "acme"
"""
    if policy and smtp_upstream is None:
        text += f"""
[smtp]

[[smtp.accounts]]
username = "{SMTP_USER}"
sender = "acme"
stream = "commercial"
networks = ["{POLICY_NETWORK}"]
"""
    if policy:
        text += """
[policy]
listen = "127.0.0.1:0"
"""
    if http:
        text += """
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:0"
"""
    path = home / "filterd.toml"
    path.write_text(text)
    return path


class LogTail:
    """filterd's JSON log lines, read by a thread as they come (the pipe never fills)."""

    def __init__(
        self, stream: IO[bytes], keep: Callable[[dict[str, Any]], bool] | None = None
    ) -> None:
        self.records: list[dict[str, Any]] = []
        self._keep = keep
        """Which records to keep (default: all); a long run keeps few."""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and (self._keep is None or self._keep(record)):
                    with self._changed:
                        self.records.append(record)
                        self._changed.notify_all()
        with self._changed:
            self.records.append({"event": "<eof>"})
            self._changed.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], start: int = 0, timeout: float = 30
    ) -> dict[str, Any]:
        """The first record from index `start` that matches (bounded)."""
        with self._changed:
            found: list[dict[str, Any]] = []

            def look() -> bool:
                for record in self.records[start:]:
                    if match(record) or record.get("event") == "<eof>":
                        found.append(record)
                        return True
                return False

            if not self._changed.wait_for(look, timeout):
                raise AssertionError("filterd did not log the awaited line in time")
        if found[0].get("event") == "<eof>":
            raise AssertionError("filterd's log ended before the awaited line")
        return found[0]


def _listening(front_end: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the `listening` line of one front end."""
    return lambda r: r.get("event") == "listening" and r.get("front_end") == front_end


class Daemon:
    """`filterd serve` in a session of its own; killable and restartable."""

    def __init__(
        self,
        config: Path,
        reaper: Reaper,
        front_ends: tuple[str, ...],
        keep: Callable[[dict[str, Any]], bool] | None = None,
        *,
        nofile: int | None = None,
    ) -> None:
        self.config = config
        self.keep = keep
        self.nofile = nofile
        """RLIMIT_NOFILE (soft = hard) the daemon is started with; None: inherited."""
        self.reaper = reaper
        self.front_ends = front_ends
        self.process: subprocess.Popen[bytes] | None = None
        self.log: LogTail | None = None
        self.ports: dict[str, int] = {}
        self.starts = 0

    def start(self) -> Daemon:
        """Start and wait until every front end logs `listening`."""
        errors = (self.config.parent / f"stderr.{self.starts}").open("wb")
        self.process = subprocess.Popen(
            [FILTERD, "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
            preexec_fn=self._limit if self.nofile is not None else None,  # noqa: PLW1509
        )
        errors.close()
        self.starts += 1
        self.reaper.track(self.process)
        assert self.process.stdout is not None
        self.log = LogTail(self.process.stdout, self.keep)
        self.ports = {}
        for name in self.front_ends:
            record = self.log.wait_for(_listening(name))
            self.ports[name] = int(record["port"])
        return self

    def _limit(self) -> None:
        """In the child, before exec: lower the descriptor limit."""
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def pid(self) -> int:
        """The main process id."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """True while the main process runs."""
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> list[tuple[int, str]]:
        """SIGKILL the main process only (as a crash would); the group members left alive."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return group_members(self.process.pid)

    def stop(self) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def unexpected_log_lines(daemon: Daemon) -> list[str]:
    """What filterd logged that no fault test expects: records at error level or with an
    exception (a handler crash, asyncio's "Task exception was never retrieved"), as
    "event: end of the traceback", and any traceback on its stderr."""
    assert daemon.log is not None
    found = [
        f"{record.get('event')}: {str(record.get('exception') or record.get('exc_info'))[-300:]}"
        for record in list(daemon.log.records)
        if record.get("level") in ("error", "critical")
        or "exception" in record
        or "exc_info" in record
    ]
    for stderr in sorted(daemon.config.parent.glob("stderr.*")):
        text = stderr.read_text(errors="replace")
        if "Traceback" in text:
            found.append(f"{stderr.name}: {text[-300:]}")
    return found


# ---- where clients connect ------------------------------------------------------------------


class Target:
    """The port clients should use now; a new generation after each restart."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.port: int | None = None
        self.generation = 0

    def set(self, port: int | None) -> None:
        """Point clients at `port` (None: down)."""
        with self._changed:
            self.port = port
            self.generation += 1
            self._changed.notify_all()

    def current(self) -> tuple[int | None, int]:
        """(port, generation)."""
        with self._changed:
            return self.port, self.generation

    def wait_change(self, generation: int, timeout: float) -> None:
        """Wait for a generation after `generation` (or `timeout`, the retry pace)."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation != generation, timeout)


@dataclass
class Attempt:
    """One message a client tried to send, and what it was told."""

    ident: str
    started: float
    ended: float
    outcome: str
    """delivered | temporary | permanent | cut (the connection broke: no answer)."""
    detail: str = ""


@dataclass
class Ledger:
    """Every attempt of a load generator, with a condition to await counts."""

    attempts: list[Attempt] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, attempt: Attempt) -> None:
        """Record an attempt and wake waiters."""
        with self.changed:
            self.attempts.append(attempt)
            self.changed.notify_all()

    def count(self, outcome: str, since: float = 0.0) -> int:
        """Attempts with `outcome` that started at or after `since`."""
        with self.changed:
            return sum(a.outcome == outcome and a.started >= since for a in self.attempts)

    def wait(self, outcome: str, at_least: int, since: float = 0.0, timeout: float = 60) -> None:
        """Block until `at_least` attempts with `outcome` started at or after `since`."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: (
                    sum(a.outcome == outcome and a.started >= since for a in self.attempts)
                    >= at_least
                ),
                timeout,
            )
        if not ok:
            raise AssertionError(
                f"fewer than {at_least} {outcome} attempts since {since:.3f}: {self.summary()}"
            )

    def acknowledged(self) -> set[str]:
        """Idents the client saw accepted."""
        with self.changed:
            return {a.ident for a in self.attempts if a.outcome == "delivered"}

    def summary(self) -> dict[str, int]:
        """Counts by outcome."""
        with self.changed:
            return dict(Counter(a.outcome for a in self.attempts))

    def details(self, outcome: str) -> Counter[str]:
        """Reply details of the attempts with `outcome`."""
        with self.changed:
            return Counter(a.detail for a in self.attempts if a.outcome == outcome)


_IDS = itertools.count(1)


def message(ident: str, recipients: list[str]) -> bytes:
    """A small commercial message whose Message-ID is `ident`."""
    return (
        f"From: shop@acme.test\r\nTo: {', '.join(recipients)}\r\n"
        f"Subject: offer {ident}\r\nMessage-ID: <{ident}@fault.test>\r\n\r\nHello.\r\n"
    ).encode()


MESSAGE_ID = re.compile(rb"Message-ID: <([^@>]+)@fault\.test>")


def sink_idents(messages: list[tuple[str, list[str], bytes]]) -> list[str]:
    """The Message-ID idents of the messages at an SMTP sink."""
    found = []
    for _, _, content in list(messages):
        match = MESSAGE_ID.search(content)
        if match:
            found.append(match.group(1).decode())
    return found


def _smtp_code_outcome(code: int) -> str:
    return "temporary" if 400 <= code < 500 else "permanent"


class SmtpLoad:
    """Threads sending commercial messages through filterd's SMTP relay, one after another
    on a connection, reconnecting (to the current Target) whenever the connection breaks."""

    def __init__(self, target: Target, recipients: list[str], threads: int = 2) -> None:
        self.target = target
        self.recipients = recipients
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.connect_failures = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> SmtpLoad:
        """Start sending."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop after the messages in flight; join the threads."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "an SMTP load thread did not stop"

    def _run(self) -> None:
        while not self.stopping.is_set():
            port, generation = self.target.current()
            if port is None:
                self.target.wait_change(generation, 0.5)
                continue
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=20)
                client.ehlo("tool.test")
                client.login(SMTP_USER, SMTP_PASSWORD)
            except (OSError, smtplib.SMTPException):
                self.connect_failures += 1
                self.target.wait_change(generation, 0.1)
                continue
            try:
                while not self.stopping.is_set() and client.sock is not None:
                    attempt = self._send(client)
                    self.ledger.add(attempt)
                    if attempt.outcome == "temporary":
                        self.stopping.wait(RETRY_PACE_S)  # a client backs off on 4xx
            finally:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    client.quit()
                client.close()

    def _send(self, client: smtplib.SMTP) -> Attempt:
        ident = f"m{next(_IDS)}"
        started = time.monotonic()
        try:
            refused = client.sendmail(
                "shop@acme.test", self.recipients, message(ident, self.recipients)
            )
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            outcome = "temporary" if all(400 <= c < 500 for c in codes) else "permanent"
            details = sorted(
                {f"{code} {text.decode()[:5]}" for code, text in exc.recipients.values()}
            )
            return Attempt(ident, started, time.monotonic(), outcome, "rcpt " + ",".join(details))
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == -1:
                return Attempt(ident, started, time.monotonic(), "cut", "disconnected")
            detail = f"{type(exc).__name__} {exc.smtp_code} {str(exc.smtp_error)[:12]}"
            return Attempt(
                ident, started, time.monotonic(), _smtp_code_outcome(exc.smtp_code), detail
            )
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            client.close()
            return Attempt(ident, started, time.monotonic(), "cut", type(exc).__name__)
        detail = ",".join(sorted(f"{rcpt}:{code}" for rcpt, (code, _) in refused.items()))
        return Attempt(ident, started, time.monotonic(), "delivered", detail)


class SmppLoad:
    """One thread with a raw SMPP transceiver bind to filterd, keeping `window` submit_sm
    outstanding; each submit's short_message is its ident. Reconnects like SmtpLoad."""

    def __init__(self, target: Target, destination: str = JANE_SMS, window: int = 8) -> None:
        self.target = target
        self.destination = destination
        self.window = window
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.connect_failures = 0
        self._sequence = itertools.count(1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SmppLoad:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending, collect the answers in flight, join."""
        self.stopping.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the SMPP load thread did not stop"

    def _run(self) -> None:
        while not self.stopping.is_set():
            port, generation = self.target.current()
            if port is None:
                self.target.wait_change(generation, 0.5)
                continue
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            except OSError:
                self.connect_failures += 1
                self.target.wait_change(generation, 0.1)
                continue
            with sock:
                self._session(sock)

    def _session(self, sock: socket.socket) -> None:
        framer = Framer()
        outstanding: dict[int, tuple[str, float]] = {}
        try:
            sock.sendall(
                encode(
                    BindTransceiver(
                        sequence_number=next(self._sequence),
                        system_id=SMPP_SYSTEM_ID,
                        password=SMPP_PASSWORD,
                    )
                )
            )
            bound = self._read_one(sock, framer)
            if bound is None or bound.command_status != 0:
                self.connect_failures += 1
                return
            while True:
                while not self.stopping.is_set() and len(outstanding) < self.window:
                    sequence = next(self._sequence)
                    ident = f"s{next(_IDS)}"
                    outstanding[sequence] = (ident, time.monotonic())
                    sock.sendall(encode(self._submit(sequence, ident)))
                if not outstanding:
                    with contextlib.suppress(OSError):
                        sock.sendall(encode(Unbind(sequence_number=next(self._sequence))))
                    return
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by filterd")
                framer.feed(data)
                for pdu in framer:
                    if isinstance(pdu, SubmitSmResp) and pdu.sequence_number in outstanding:
                        ident, started = outstanding.pop(pdu.sequence_number)
                        status = pdu.command_status
                        outcome = "delivered" if status == 0 else f"status {status:#x}"
                        self.ledger.add(
                            Attempt(ident, started, time.monotonic(), outcome, f"{status:#x}")
                        )
                        if status != 0:
                            self.stopping.wait(RETRY_PACE_S)  # an ESME backs off on errors
                    elif isinstance(pdu, EnquireLink | DeliverSm):
                        sock.sendall(encode(response_to(pdu)))
        except (OSError, SmppProtocolError) as exc:
            for ident, started in outstanding.values():
                self.ledger.add(
                    Attempt(ident, started, time.monotonic(), "cut", type(exc).__name__)
                )

    def _read_one(self, sock: socket.socket, framer: Framer) -> Any:
        while (pdu := framer.next_pdu()) is None:
            data = sock.recv(65536)
            if not data:
                return None
            framer.feed(data)
        return pdu

    def _submit(self, sequence: int, ident: str) -> SubmitSm:
        return SubmitSm(
            sequence_number=sequence,
            source_addr_ton=0,
            source_addr=NUMBER,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=self.destination,
            short_message=ident.encode(),
        )


@pytest.fixture
def sink(reaper: Reaper) -> SinkServer:
    """An aiosmtpd upstream sink for this test."""
    server = SinkServer().start()
    reaper.finalizers.append(server.shutdown)
    return server


@pytest.fixture
def ismg(reaper: Reaper) -> FakeIsmg:
    """A fake ISMG for this test."""
    server = FakeIsmg().start()
    reaper.finalizers.append(server.shutdown)
    return server


@pytest.fixture
def smsc(reaper: Reaper) -> FakeSmsc:
    """A fake carrier SMSC for this test."""
    server = FakeSmsc().start()
    reaper.finalizers.append(server.shutdown)
    return server
