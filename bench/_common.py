"""What the benchmark scripts in bench/ share: progress lines, machine facts, the
figures table, CPU accounting from /proc, starting and cleaning up the
processes and temp dir of a run, and Postfix's test tools (smtp-source, the
counting smtp-sink).

Imported by the scripts as `import _common` (a script run as `python bench/X.py`
has bench/ first on its path). Nothing here measures anything by itself; every
figure is still taken by the script that prints it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import pwd
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

from filterd.storage.embedded import (
    SOCKET_NAME,
    EmbeddedServer,
    ServerBinary,
    answers_ping,
    server_config,
)

_STARTED = time.monotonic()
_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the checkout whose git commit the reports name)."""


def progress(message: str, *, width: int = 7) -> None:
    """One progress line on stderr, with the time elapsed since the bench started."""
    print(f"[{time.monotonic() - _STARTED:{width}.1f}s] {message}", file=sys.stderr, flush=True)


def mark(ok: bool) -> str:
    """✔ or ✘, for the target column."""
    return "✔" if ok else "✘"


def run_main(main: Callable[[], int], interrupted: str) -> NoReturn:
    """`sys.exit(main())`; on Ctrl-C (or SIGTERM, see `sigterm_as_interrupt`), say
    `interrupted; {interrupted}` on stderr and exit 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def cleaning_up(
    cleanup: Callable[[], None], say: Callable[[str], None] = progress
) -> Iterator[None]:
    """Run the body; whatever happens (an error, Ctrl-C, SIGTERM), then say
    "cleaning up ..." and call `cleanup`."""
    try:
        yield
    finally:
        say("cleaning up ...")
        cleanup()


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so the bench cleans up as on Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# ---- machine facts -------------------------------------------------------------------


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, two decimals each."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def loadavg_line(when: str) -> str:
    """`- load average at {when}: ...` (when: "start" or "end")."""
    return f"- load average at {when}: {loadavg()}"


def wall_line(started: float) -> str:
    """`- wall time: N s` since `started` (a time.monotonic() value)."""
    return f"- wall time: {time.monotonic() - started:.1f} s"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "?"."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def library_versions(names: Sequence[str]) -> str:
    """`name version, ...` of installed distributions, in the order given."""
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)


def machine_line(*, node: bool = True) -> str:
    """`- machine: [HOST] ARCH, nproc N (usable U), CPU MODEL, PLATFORM`."""
    host = f"{platform.node()} " if node else ""
    return (
        f"- machine: {host}{platform.machine()}, nproc {os.cpu_count()} "
        f"(usable {len(os.sched_getaffinity(0))}), CPU {cpu_model()}, {platform.platform()}"
    )


def python_line(libraries: Sequence[str], *, executable: bool = True) -> str:
    """`- python: VERSION [(EXECUTABLE)]; library versions`."""
    where = f" ({sys.executable})" if executable else ""
    return f"- python: {sys.version.split()[0]}{where}; {library_versions(libraries)}"


def brief_machine(*extras: str) -> str:
    """The one-line machine facts of the fuzz and soak reports, `extras` before the load."""
    parts = [
        f"{platform.node()} {platform.machine()}",
        f"{os.cpu_count()} CPUs",
        f"Python {platform.python_version()}",
        *extras,
        f"load average {loadavg()}",
    ]
    return "machine: " + ", ".join(parts)


def command_version(command: list[str]) -> str:
    """The first line `command` prints (stdout, else stderr), or "?" if it cannot run."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    return "?"


def server_version(binary: ServerBinary) -> str:
    """The first line of `BINARY --version`; raises if the binary does not run."""
    out = subprocess.run(
        [binary.path, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return out.strip().splitlines()[0]


def code_version() -> str:
    """The git commit of the checkout, and which files under filterd/ differ from it."""
    commit = command_version(["git", "-C", str(ROOT), "log", "-1", "--format=%h %cI %s"])
    try:
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "filterd"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return f"git commit {commit}"
    changed = [line[3:] for line in status if line.strip()]
    local = f"; uncommitted under filterd/: {', '.join(changed)}" if changed else ""
    return f"git commit {commit}{local}"


def environment_line() -> str:
    """The environment `Cleanup.spawn` gives filterd (log level, PYTHONUNBUFFERED)."""
    unbuffered = os.environ.get("PYTHONUNBUFFERED", "unset")
    return (
        f"- filterd environment: FILTERD_LOG_LEVEL=INFO, PYTHONUNBUFFERED={unbuffered}; "
        "logs to a file"
    )


def bench_command(script: str, argv: Sequence[str]) -> str:
    """The command line to print: `.venv/bin/python bench/SCRIPT ARGS` (relative python)."""
    return shlex.join([os.path.relpath(sys.executable), script, *argv])


def full_command() -> str:
    """This process's command line as run: absolute python, then sys.argv."""
    return shlex.join([sys.executable, *sys.argv])


def report_head(title: str, command: str, facts: Sequence[str]) -> list[str]:
    """`# title`, the command line and the machine facts, as the report's first lines."""
    return [f"# {title}", "", f"command: `{command}`", "", *facts]


# ---- the figures table ---------------------------------------------------------------


@dataclass
class Table:
    """Rows of figure | filterd | baseline | ratio | target."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(
        self,
        figure: str,
        ours: float | None,
        base: float | None,
        target: str = "—",
        digits: int = 0,
    ) -> None:
        """A row; the ratio is filterd ÷ baseline ("—" where either is missing or 0)."""
        ratio = f"{ours / base:.2f}×" if ours is not None and base else "—"
        self.rows.append((figure, _num(ours, digits), _num(base, digits), ratio, target))

    def markdown(self) -> str:
        """The table as GitHub markdown."""
        head = ("figure", "filterd", "baseline", "ratio", "target")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def percentile(
    latencies: Sequence[int], share: float, unit: float, empty: float = math.nan
) -> float:
    """The latency at `share` (0..1) of `latencies` (ns), divided by `unit`; `empty` if none."""
    ordered = sorted(latencies)
    if not ordered:
        return empty
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / unit


# ---- CPU accounting ------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time used so far by `pids` (their own, not their children's)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (user..steal, all cores) so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICKS  # minus idle, iowait


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# ---- processes and clean-up ----------------------------------------------------------


def server_command(binary: ServerBinary, directory: Path) -> list[str]:
    """Make `directory` (0700), write the embedded registry's server config there; the
    command line that starts the server on it (run it with cwd=directory)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / "registry.conf"
    conf.write_text(server_config(directory, binary))
    return [binary.path, str(conf)]


def wait_for_server(
    process: subprocess.Popen[bytes], binary: ServerBinary, directory: Path, timeout: float = 30.0
) -> str:
    """Wait until the server started on `directory` answers PING; its unix:// URL."""
    path = directory / SOCKET_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{binary.path} exited ({process.returncode})")
        if answers_ping(path):
            return f"unix://{path}"
        time.sleep(0.01)
    raise RuntimeError(f"{binary.path} did not answer PING in {timeout:.0f}s")


def stop_child(child: subprocess.Popen[bytes], timeout: float = 40.0) -> int:
    """SIGTERM, then SIGKILL if it lingers; close its pipes; its exit code."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            progress(f"pid {child.pid} did not stop in {timeout:.0f}s: SIGKILL")
            child.kill()
            child.wait(10)
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    return child.returncode


@dataclass
class Cleanup:
    """Every child process and the temp dir, undone in reverse order."""

    temp_dir: Path | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop_timeout: float = 40.0

    def spawn(
        self, command: list[str], *, log: Path | None, cwd: Path, pipes: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a child in its own session, FILTERD_LOG_LEVEL=INFO; output appended to
        `log`, or piped (stdin too with `pipes`)."""
        with contextlib.ExitStack() as stack:
            out: IO[bytes] | int = subprocess.PIPE
            if log is not None:
                out = stack.enter_context(log.open("ab"))
            child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if log is not None else None,
                cwd=cwd,
                start_new_session=True,
                env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
            )
        self.children.append(child)
        return child

    def run(self) -> None:
        """Stop every child (newest first), remove the temp dir."""
        for child in reversed(self.children):
            stop_child(child, self.stop_timeout)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_registry(
    binary: ServerBinary, directory: Path, cleanup: Cleanup
) -> tuple[str, subprocess.Popen[bytes]]:
    """A private server with the embedded registry's config, its output logged in
    `directory`; its unix:// URL and process."""
    command = server_command(binary, directory)
    child = cleanup.spawn(command, log=directory / "stdout.log", cwd=directory)
    return wait_for_server(child, binary, directory), child


def release_embedded(embedded: EmbeddedServer) -> None:
    """Leave the embedded server (it shuts down), reap it; SIGKILL it if it lingers."""
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int((embedded.data_dir / "registry.pid").read_text().strip())
    embedded.release()
    if pid is None:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # our child only if we started it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    progress(f"embedded server {pid} did not stop: SIGKILL")
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def write_secret(path: Path) -> bytes:
    """A fresh 32-byte secret, written hex to `path` (0600) as filterd reads it."""
    secret = secrets.token_bytes(32)
    path.write_text(secret.hex() + "\n")
    path.chmod(0o600)
    return secret


# ---- Postfix test tools (smtp-source, smtp-sink) -------------------------------------

_COUNTERS = re.compile(rb"sess=(\d+) quit=\d+ mesg=(\d+)\r")
_RCPT_ARG = re.compile(rb"^X-Rcpt-Args: <([^>]*)>", re.MULTILINE)


def tool(name: str) -> str:
    """Path of a Postfix test tool (PATH, then /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} not found: install Postfix (Debian package postfix)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_banner(port: int, child: subprocess.Popen[bytes] | None, what: str) -> None:
    """Wait until `what` greets with 220 on 127.0.0.1:`port`; an error if `child` (the
    process that should listen there, if it is ours) exits first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{what} exited ({child.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            if s.recv(64).startswith(b"220"):
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not greet on port {port}")


@dataclass
class Sink:
    """An smtp-sink child: counting (-c) and optionally dumping (-D) what it receives."""

    port: int
    output: Path
    process: subprocess.Popen[bytes]
    dump: Path | None = None

    @classmethod
    def start(cls, name: str, directory: Path, cleanup: Cleanup, *, dump: bool = False) -> Sink:
        """`smtp-sink -c [-D FILE] 127.0.0.1:PORT 1000` on a free port."""
        port = free_port()
        output = directory / f"{name}.out"
        command = [tool("smtp-sink"), "-c"]
        if os.geteuid() == 0:
            command += ["-u", pwd.getpwuid(0).pw_name]
        dump_path = directory / f"{name}.dump" if dump else None
        if dump_path is not None:
            command += ["-D", str(dump_path)]
        command += [f"127.0.0.1:{port}", "1000"]
        child = cleanup.spawn(command, log=output, cwd=directory)
        wait_banner(port, child, "smtp-sink")
        return cls(port, output, child, dump_path)

    def counters(self) -> tuple[int, int]:
        """The last (sessions ended, messages) that -c printed; (0, 0) before any."""
        with self.output.open("rb") as f:
            f.seek(max(0, self.output.stat().st_size - 512))
            found = _COUNTERS.findall(f.read())
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)

    def messages(self) -> int:
        """The sink's message counter."""
        return self.counters()[1]

    def wait_for(self, expected: int, timeout: float = 10.0) -> int:
        """The counter once it reaches `expected` (or whatever it is after `timeout`)."""
        deadline = time.monotonic() + timeout
        count = self.messages()
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            count = self.messages()
        return count

    def recipients(self) -> list[list[str]]:
        """Per dumped transaction, its X-Rcpt-Args addresses (dumping sink only)."""
        if self.dump is None or not self.dump.exists():
            return []
        messages = self.dump.read_bytes().split(b"X-Client-Addr: ")[1:]
        return [[a.decode() for a in _RCPT_ARG.findall(message)] for message in messages]
