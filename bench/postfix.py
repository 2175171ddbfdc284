"""Postfix benchmark: what filterd's policy service costs a real Postfix, in CPU and msg/s.

Run from the repository root, as root (Postfix's master runs as root):

    .venv/bin/python bench/postfix.py [--quick] [--messages M] [--rounds R]
                                      [--sessions S] [--size BYTES]

Default: R = 3 rounds per configuration, M = 3,000 messages per run (~30 s
on a 2-core VM); `--quick`: R = 2, M = 1,000. Each run is `smtp-source -s S -m M
-l BYTES -N -M bench.test -f shop@acme.test -t rcpt@example.com 127.0.0.1:PORT`
(S = 20, BYTES = 1,000): one message per connection, one recipient per message,
`-N` numbering the recipients `1rcpt@example.com` … `{M}rcpt@example.com`.

What it starts, all on loopback, in a temp dir made with
`tempfile.mkdtemp(dir="/tmp")`; everything is stopped and removed at the end,
on an error, on Ctrl-C and on SIGTERM (only a SIGKILL of this script would leave
Postfix running: stop it with `postfix -c DIR stop`, DIR as printed at start):

- a registry server (the binary the embedded registry picks, with its config,
  `filterd.storage.embedded.server_config`: AOF on, unix socket only); the
  system Redis on 6379 is never touched;
- consent of sender "acme" for every recipient smtp-source uses, written by
  `filterctl --config CFG import FILE --action consent --sender acme` from a CSV
  file, then read back with `filterctl check` (one consented recipient must
  get `deliver`, one other `drop no_consent`);
- `filterd serve` with only a `[policy]` listener (`127.0.0.1:0`, the port read
  from its `listening` log line) and one `[[smtp.accounts]]`, commercial,
  chosen by `networks = ["127.0.0.0/8"]` (Postfix sends no `sasl_username`);
  logging at INFO to a file, as in production: one `decision` line per request;
- `smtp-sink -c 127.0.0.1:PORT 1000`, counting the messages it receives;
- one Postfix instance from its own config directory (`postfix -c DIR start`):
  its own `queue_directory` and `data_directory` in the temp dir, mail_owner
  `postfix`, `inet_interfaces = 127.0.0.1`, `mydestination` empty and
  `local_transport = error:…` (no local delivery), `relayhost =
  [127.0.0.1]:SINK` with `smtp_dns_support_level = disabled` (no DNS look-up),
  every service with chroot off, logging to a file through postlogd. Its
  master.cf has two smtpd listeners on free 127.0.0.1 ports, which differ in one
  line only:

  * **policy**: `smtpd_recipient_restrictions = check_policy_service
    inet:127.0.0.1:POLICY, permit_mynetworks, reject` (filterd's policy service);
  * **alone**: `smtpd_recipient_restrictions = permit_mynetworks, reject`.

  Both feed the same cleanup, queue, qmgr and smtp client, so one Postfix
  serves both configurations and the rounds alternate without a reload.

Before timing: one SMTP session into each listener (an unconsented recipient
must get filterd's 550 through **policy** and 250 through **alone**, a consented
one 250 through **policy**), then a warm-up run of 200 messages into each.

Rounds: **alone** and **policy** alternate, the order reversed every round. A
run is timed from the start of smtp-source until smtp-sink has counted all its
messages and Postfix's incoming and active queues are empty; msg/s = M ÷ that
time. Over the same interval, from /proc: user + system CPU seconds of filterd
(every process of `filterd serve`), of the registry server, of Postfix (the
master and everything it started, exited children included through the
master's cutime/cstime), of smtp-sink and of this script with smtp-source, and
of the whole machine (/proc/stat, busy = all but idle and iowait).

A run counts only when smtp-source exited 0 and silent, smtp-sink counted
exactly M more messages, Postfix's log has M more `status=sent` lines and no
reject, deferral or bounce, and filterd logged exactly M `decision` lines, all
`deliver`, in a policy run (none in an alone run). A run that fails is shown as
failed in the per-run table and left out of every figure; its leftovers are
deleted from the queue (`postsuper -d ALL`) before the next run.

The deciding figure, the **CPU share**: filterd + registry CPU per message in
the policy runs ÷ the machine's busy CPU per message in the alone runs: what
the policy service adds, as a part of what the mail system costs without it.
Target ≤ 0.05. Beside it: msg/s policy ÷ alone, filterd's CPU µs per message,
and (notes) the same share against Postfix's own processes only, and the
machine's CPU per message in both configurations (which also holds the smtpd
side of the policy protocol).

The report goes to stdout, progress lines to stderr. Needs Postfix (Debian
package `postfix`: `postfix`, `postconf`, `postsuper`, `smtp-source`, `smtp-sink`)
and the `postfix` user and `postdrop` group the package creates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shlex
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common

from filterd.storage.embedded import ServerBinary, find_binary

SENDER = "acme"
HELO = "bench.test"
MAIL_FROM = "shop@acme.test"
RCPT_LOCAL = "rcpt"
RCPT_DOMAIN = "example.com"
UNKNOWN = f"nobody@{RCPT_DOMAIN}"
MAIL_OWNER = "postfix"
WARMUP_MESSAGES = 200
TARGET_SHARE = 0.05
CONFIGS = ("alone", "policy")
FILTERD = str(Path(sys.executable).parent / "filterd")
FILTERCTL = str(Path(sys.executable).parent / "filterctl")
_TICKS = os.sysconf("SC_CLK_TCK")
KTHREADD = 2
"""The kernel threads' parent."""
progress = _common.progress


def recipient(sequence: int) -> str:
    """The address `smtp-source -N -t rcpt@example.com` uses for sequence number n."""
    return f"{sequence}{RCPT_LOCAL}@{RCPT_DOMAIN}"


def restrictions(config: str, policy_port: int) -> str:
    """The smtpd_recipient_restrictions of a configuration's listener."""
    check = f"check_policy_service inet:127.0.0.1:{policy_port}, " if config == "policy" else ""
    return f"{check}permit_mynetworks, reject"


# ---- CPU accounting: process trees ------------------------------------------------------


def _process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, CPU ticks: utime + stime + cutime + cstime) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
            table[int(entry.name)] = (int(fields[1]), ticks)
    return table


def descendants(table: dict[int, tuple[int, int]], root: int) -> list[int]:
    """`root` and every process below it in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def tree_seconds(table: dict[int, tuple[int, int]], root: int) -> float:
    """CPU seconds of `root`'s tree: each live process's own time plus that of the
    children it reaped (cutime, cstime), so a process that exits between two
    readings still counts, in its parent's."""
    return sum(table[pid][1] for pid in descendants(table, root)) / _TICKS


def others_seconds(table: dict[int, tuple[int, int]], ours: set[int]) -> float:
    """CPU seconds of every process not in `ours` and not a kernel thread (pid 2 and
    its children), counted like `tree_seconds`: other users' load on the machine."""
    return (
        sum(
            ticks
            for pid, (parent, ticks) in table.items()
            if pid not in ours and KTHREADD not in (pid, parent)
        )
        / _TICKS
    )


# ---- Postfix -------------------------------------------------------------------------


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:{alone} inet n - n - - smtpd
  -o {{ smtpd_recipient_restrictions = {alone_restrictions} }}
127.0.0.1:{policy} inet n - n - - smtpd
  -o {{ smtpd_recipient_restrictions = {policy_restrictions} }}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = {owner}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:no local delivery in this benchmark
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
smtp_dns_support_level = disabled
maillog_file = {log}
maillog_file_prefixes = {directory}
biff = no
"""


@dataclass
class Postfix:
    """A Postfix instance run from its own config directory."""

    directory: Path
    ports: dict[str, int]
    policy_port: int
    log: Path
    log_offset: int = 0
    started: bool = False

    @property
    def config_dir(self) -> Path:
        """The `-c` directory (main.cf, master.cf)."""
        return self.directory / "conf"

    @property
    def queue(self) -> Path:
        """Its queue_directory."""
        return self.directory / "queue"

    @classmethod
    def create(cls, directory: Path, sink_port: int, policy_port: int) -> Postfix:
        """Write main.cf and master.cf for two listeners on free ports; nothing started."""
        ports = {config: _common.free_port() for config in CONFIGS}
        owner = pwd.getpwnam(MAIL_OWNER)
        for sub in ("conf", "queue", "data"):
            (directory / sub).mkdir(parents=True, mode=0o755)
        os.chown(directory / "data", owner.pw_uid, owner.pw_gid)
        log = directory / "maillog"
        (directory / "conf" / "main.cf").write_text(
            MAIN_CF.format(
                queue=directory / "queue", data=directory / "data", owner=MAIL_OWNER,
                sink=sink_port, log=log, directory=directory,
            )
        )  # fmt: skip
        (directory / "conf" / "master.cf").write_text(
            MASTER_CF.format(
                alone=ports["alone"], policy=ports["policy"],
                alone_restrictions=restrictions("alone", policy_port),
                policy_restrictions=restrictions("policy", policy_port),
            )
        )  # fmt: skip
        return cls(directory, ports, policy_port, log)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`postfix -c DIR ARGS`, its output captured."""
        return subprocess.run(
            [_common.tool("postfix"), "-c", str(self.config_dir), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def start(self) -> None:
        """`postfix check`, `postfix start`; returns once both listeners greet."""
        done = self.command("check")
        if done.returncode != 0:
            raise RuntimeError(f"postfix check: {done.stderr.strip()}")
        self.started = True
        done = self.command("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start: {done.stderr.strip()} {self.log_tail()}")
        for config, port in self.ports.items():
            _common.wait_banner(port, None, f"Postfix smtpd ({config})")
        self.new_log()  # skip the start-up lines

    def master_pid(self) -> int | None:
        """The master's pid from its pid file, if that process runs."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
            if Path(f"/proc/{pid}").exists():
                return pid
        return None

    def queue_empty(self) -> bool:
        """No file in the incoming or active queue."""
        return not any(any(os.scandir(self.queue / name)) for name in ("incoming", "active"))

    def new_log(self) -> list[str]:
        """The log lines written since the last call."""
        with self.log.open("rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.log_offset += end
        return data[:end].decode(errors="replace").splitlines()

    def log_tail(self) -> str:
        """The last lines of its log, for an error message."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-1500:]
        return ""

    def delete_queue(self) -> None:
        """`postsuper -d ALL`: drop whatever a failed run left queued."""
        subprocess.run(
            [_common.tool("postsuper"), "-c", str(self.config_dir), "-d", "ALL"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        """`postfix stop`, then `abort` and SIGKILL for whatever is left; checks that
        no process of this instance runs afterwards."""
        if not self.started:
            return
        master = self.master_pid()
        pids = descendants(_process_table(), master) if master else []
        self.command("stop")
        if not _wait_gone(pids, 15):
            progress("postfix stop did not end every process: postfix abort")
            self.command("abort")
        if not _wait_gone(pids, 5):
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(pids, 5)
        left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        if left:
            progress(f"Postfix processes still running: {left}")
        self.started = False


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """True once none of `pids` exists (within `timeout` s)."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- filterd -------------------------------------------------------------------------


FILTERD_TOML = """\
[registry]
url = "{url}"
secret_file = "{secret}"

[policy]
listen = "127.0.0.1:0"

[[smtp.accounts]]
username = "postfix-bench"
networks = ["127.0.0.0/8"]
sender = "{sender}"
stream = "commercial"
"""


@dataclass
class Filterd:
    """`filterd serve` with its policy listener, its log read incrementally."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    offset: int = 0

    @classmethod
    def start(cls, config: Path, directory: Path, cleanup: _common.Cleanup) -> Filterd:
        """Spawn it; return once it logged the policy listener's port."""
        log = directory / "filterd.log"
        child = cleanup.spawn([FILTERD, "serve", "--config", str(config)], log=log, cwd=directory)
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"filterd serve did not start ({child.poll()}): {tail}")
            for record in _records(log.read_bytes()):
                if record.get("event") == "listening" and record.get("front_end") == "policy":
                    filterd = cls(child, int(record["port"]), log)
                    filterd.tally()  # skip the start-up lines
                    return filterd
            time.sleep(0.05)

    def tally(self) -> dict[str, int]:
        """Events logged since the last call: `decision:<origin>:<decision>` or the event."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        counts: dict[str, int] = {}
        for record in _records(data[:end]):
            key = str(record.get("event"))
            if key == "decision":
                key += f":{record.get('origin')}:{record.get('decision')}"
            counts[key] = counts.get(key, 0) + 1
        return counts


def _records(data: bytes) -> list[dict[str, Any]]:
    """The JSON log lines in `data` (anything else is skipped)."""
    records = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def load_consent(config: Path, directory: Path, count: int) -> list[str]:
    """`filterctl import` consent for recipient(1..count); `filterctl check` two of them.
    The check lines for the report."""
    csv = directory / "consent.csv"
    csv.write_text("".join(f"{recipient(n)}\n" for n in range(1, count + 1)))
    base = [FILTERCTL, "--config", str(config)]
    command = [*base, "import", str(csv), "--action", "consent", "--sender", SENDER]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"filterctl import exited {done.returncode}: {done.stderr[-1000:]}")
    summary = " ".join(done.stdout.split())
    lines = [
        f"- consent for {recipient(1)} … {recipient(count)}: `filterctl import FILE --action "
        f"consent --sender {SENDER}` exit 0 in {seconds:.2f} s (`{summary}`)"
    ]
    for address, code, answer in ((recipient(count), 0, "deliver"), (UNKNOWN, 1, "drop")):
        done = subprocess.run(
            [*base, "check", address, "--sender", SENDER],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != code or not done.stdout.startswith(answer):
            raise RuntimeError(f"filterctl check {address}: exit {done.returncode} {done.stdout}")
        lines.append(
            f"- `filterctl check {address} --sender {SENDER}`: exit {code}, `{done.stdout.strip()}`"
        )
    return lines


# ---- runs ----------------------------------------------------------------------------


def source_command(port: int, sessions: int, messages: int, size: int) -> list[str]:
    """The smtp-source command line of every run."""
    return [
        _common.tool("smtp-source"),
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        "-N",
        "-M", HELO,
        "-f", MAIL_FROM,
        "-t", f"{RCPT_LOCAL}@{RCPT_DOMAIN}",
        f"127.0.0.1:{port}",
    ]  # fmt: skip


@dataclass
class Bench:
    """Everything a run needs."""

    postfix: Postfix
    filterd: Filterd
    sink: _common.Sink
    registry_pid: int
    sessions: int
    size: int
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far, per part, and the clock."""

    clock: float
    filterd: float
    registry: float
    postfix: float
    others: float
    machine: float

    @classmethod
    def take(cls, bench: Bench) -> Snapshot:
        """Read /proc now. This script's tree holds filterd, the registry server,
        smtp-sink and (reaped, in its cutime) every smtp-source; Postfix's master is
        a daemon of its own."""
        table = _process_table()
        master = bench.postfix.master_pid()
        ours = set(descendants(table, os.getpid()))
        postfix = 0.0
        if master is not None:
            ours.update(descendants(table, master))
            postfix = tree_seconds(table, master)
        return cls(
            time.perf_counter(),
            tree_seconds(table, bench.filterd.process.pid),
            tree_seconds(table, bench.registry_pid),
            postfix,
            others_seconds(table, ours),
            _common.machine_busy_seconds(),
        )


@dataclass
class Run:
    """One smtp-source run through one configuration."""

    round: int
    config: str
    messages: int
    accept_s: float = 0.0
    seconds: float = 0.0
    filterd: float = 0.0
    registry: float = 0.0
    postfix: float = 0.0
    others: float = 0.0
    machine: float = 0.0
    failure: str = ""

    @property
    def ok(self) -> bool:
        """Counted in the figures."""
        return not self.failure

    @property
    def rate(self) -> float:
        """msg/s, smtp-source start to the last message delivered."""
        return self.messages / self.seconds if self.seconds else 0.0

    def per_message_us(self, seconds: float) -> float:
        """`seconds` of CPU per message, in µs."""
        return seconds * 1e6 / self.messages

    @property
    def mail(self) -> float:
        """The machine's busy CPU seconds less other users' processes: the mail system
        (Postfix, smtp-source, smtp-sink, filterd, registry, this script) and the
        kernel's work (interrupts, loopback, the queue's disk writes)."""
        return max(0.0, self.machine - self.others)

    @property
    def foreign(self) -> float:
        """Cores kept busy by other users' processes."""
        return self.others / self.seconds if self.seconds else 0.0


def _check_run(
    bench: Bench, run: Run, source: subprocess.CompletedProcess[bytes], sink_got: int
) -> str:
    """Why the run does not count ("" if it does); its check line goes into the notes."""
    problems = []
    if source.returncode != 0 or source.stderr.strip():
        problems.append(
            f"smtp-source exit {source.returncode}: "
            f"{source.stderr.decode(errors='replace').strip()[-300:]}"
        )
    if sink_got != run.messages:
        problems.append(f"smtp-sink counted {sink_got} of {run.messages} messages")
    lines = bench.postfix.new_log()
    sent = sum(1 for line in lines if " status=sent " in line)
    bad = [
        line
        for line in lines
        if " reject: " in line or " status=deferred " in line or " status=bounced " in line
    ]
    warnings = [line for line in lines if "warning:" in line or "fatal:" in line]
    if sent != run.messages:
        problems.append(f"Postfix logged {sent} status=sent of {run.messages}")
    if bad:
        problems.append(f"{len(bad)} rejects/deferrals/bounces in Postfix's log: {bad[0][-200:]}")
    if warnings:
        bench.notes.append(
            f"- round {run.round} {run.config}: {len(warnings)} Postfix warning(s), first: "
            f"`{warnings[0][-200:]}`"
        )
    counts = bench.filterd.tally()
    decided = counts.pop("decision:policy:deliver", 0)
    expected = run.messages if run.config == "policy" else 0
    if decided != expected:
        problems.append(f"filterd logged {decided} deliver decisions, expected {expected}")
    others = {k: v for k, v in counts.items() if k.startswith("decision")}
    if others:
        problems.append(f"filterd logged other decisions: {others}")
    extra = {k: v for k, v in counts.items() if not k.startswith("decision")}
    if extra:
        bench.notes.append(f"- round {run.round} {run.config}: other filterd log events {extra}")
    return "; ".join(problems)


def run_source(bench: Bench, config: str, messages: int, number: int) -> Run:
    """One smtp-source run into the `config` listener, timed to the last delivery, checked."""
    run = Run(number, config, messages)
    command = source_command(bench.postfix.ports[config], bench.sessions, messages, bench.size)
    before_sink = bench.sink.messages()
    before = Snapshot.take(bench)
    source = subprocess.run(command, capture_output=True, timeout=max(300, messages), check=False)
    run.accept_s = time.perf_counter() - before.clock
    # Every message smtp-source saw accepted is in the queue by now (Postfix answers
    # the final dot once the queue file is safe), so an empty queue means delivered.
    gave_up = source.returncode != 0  # what it did not send will not come
    deadline = time.monotonic() + 60 + messages / 50
    while time.monotonic() < deadline:
        if bench.postfix.queue_empty() and (
            gave_up or bench.sink.messages() >= before_sink + messages
        ):
            break
        time.sleep(0.01)
    after = Snapshot.take(bench)
    time.sleep(0.2)  # postlogd writes the last lines; a late or extra message shows too
    sink_got = bench.sink.messages() - before_sink
    run.seconds = after.clock - before.clock
    run.filterd = after.filterd - before.filterd
    run.registry = after.registry - before.registry
    run.postfix = after.postfix - before.postfix
    run.others = after.others - before.others
    run.machine = after.machine - before.machine
    run.failure = _check_run(bench, run, source, sink_got)
    if run.failure:
        progress(f"  round {number} {config}: FAILED: {run.failure}")
        bench.notes.append(f"- round {number} {config} FAILED, not counted: {run.failure}")
        bench.postfix.delete_queue()
        time.sleep(1)
        bench.postfix.new_log()
        bench.filterd.tally()
    elif number:
        progress(
            f"  round {number} {config:6}: {run.rate:7,.0f} msg/s ({run.seconds:.2f} s), "
            f"filterd {run.per_message_us(run.filterd):5,.0f} µs/msg, mail system "
            f"{run.per_message_us(run.mail):6,.0f} µs/msg, other load {run.foreign:.2f} cores"
        )
    return run


def smtp_probe(port: int, address: str) -> tuple[int, str]:
    """HELO, MAIL, RCPT `address`, QUIT: the RCPT reply (nothing is queued)."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO, timeout=30) as client:
        client.mail(MAIL_FROM)
        code, text = client.rcpt(address)
    return code, text.decode(errors="replace")


def probe(bench: Bench) -> None:
    """Through policy, an unknown recipient gets filterd's 550 and a consented one 250;
    through alone, the unknown one gets 250."""
    cases = (("policy", UNKNOWN, 550), ("policy", recipient(1), 250), ("alone", UNKNOWN, 250))
    for config, address, expected in cases:
        code, text = smtp_probe(bench.postfix.ports[config], address)
        if code != expected:
            raise RuntimeError(f"RCPT TO:<{address}> via {config}: {code} {text}")
        bench.checks.append(f"- RCPT TO:<{address}> into the {config} listener: `{code} {text}`")
    counts = bench.filterd.tally()
    wanted = {"decision:policy:drop": 1, "decision:policy:deliver": 1}
    if {k: v for k, v in counts.items() if k.startswith("decision")} != wanted:
        raise RuntimeError(f"filterd's log after the probes: {counts}")
    bench.checks.append(
        "- filterd logged exactly those two decisions (drop, deliver); the alone listener "
        "never asked it"
    )
    bench.postfix.new_log()


def measure(bench: Bench, rounds: int, messages: int) -> list[Run]:
    """Warm-up, then the rounds, alone and policy alternating, order reversed each round."""
    progress(f"warm-up: {WARMUP_MESSAGES} messages into each listener ...")
    for config in CONFIGS:
        warm = run_source(bench, config, WARMUP_MESSAGES, 0)
        if not warm.ok:
            raise RuntimeError(f"warm-up into {config} failed: {warm.failure}")
    runs = []
    for number in range(1, rounds + 1):
        progress(f"round {number} of {rounds}: {messages:,} messages per configuration ...")
        order = CONFIGS if number % 2 else CONFIGS[::-1]
        runs += [run_source(bench, config, messages, number) for config in order]
    return runs


# ---- report ------------------------------------------------------------------------


@dataclass
class Totals:
    """The counted runs of one configuration, summed."""

    runs: list[Run]

    def total(self, pick: Callable[[Run], float]) -> float:
        """Sum of one figure over the runs."""
        return sum(pick(run) for run in self.runs)

    @property
    def messages(self) -> int:
        """Messages over the counted runs."""
        return sum(run.messages for run in self.runs)

    def rate(self) -> float | None:
        """msg/s over the counted runs."""
        seconds = self.total(lambda r: r.seconds)
        return self.messages / seconds if self.runs else None

    def per_message_us(self, pick: Callable[[Run], float]) -> float | None:
        """CPU µs per message over the counted runs."""
        return self.total(pick) * 1e6 / self.messages if self.runs else None


def _share(ours: float | None, base: float | None) -> float | None:
    return ours / base if ours is not None and base else None


def build_table(alone: Totals, policy: Totals) -> tuple[_common.Table, dict[str, float | None]]:
    """The figures table; the shares (mail system, machine, Postfix only)."""
    t = _common.Table()
    ours = policy.per_message_us(lambda r: r.filterd + r.registry)
    mail = alone.per_message_us(lambda r: r.mail)
    machine = alone.per_message_us(lambda r: r.machine)
    shares = {
        "mail": _share(ours, mail),
        "machine": _share(ours, machine),
        "postfix": _share(ours, alone.per_message_us(lambda r: r.postfix)),
    }
    share = shares["mail"]
    verdict = "—" if share is None else f"{share:.3f} {_common.mark(share <= TARGET_SHARE)}"
    t.add(
        "**CPU share**: filterd + registry CPU µs/msg, policy runs (baseline: the mail "
        "system's CPU µs/msg, alone runs = machine busy less other users' processes)",
        ours,
        mail,
        f"share ≤ {TARGET_SHARE}: {verdict}",
    )
    machine_share = shares["machine"]
    t.add(
        "CPU share, unadjusted: filterd + registry CPU µs/msg, policy runs (baseline: machine "
        "busy CPU µs/msg, alone runs, other users' processes included)",
        ours,
        machine,
        "—" if machine_share is None else f"{machine_share:.3f}",
    )
    t.add("msg/s, policy (baseline: alone)", policy.rate(), alone.rate())
    t.add(
        "filterd CPU µs/msg (all its processes), policy runs",
        policy.per_message_us(lambda r: r.filterd),
        None,
        digits=1,
    )
    t.add(
        "registry server CPU µs/msg, policy runs",
        policy.per_message_us(lambda r: r.registry),
        None,
        digits=1,
    )
    t.add(
        "Postfix CPU µs/msg (master and every process it started), policy (baseline: alone)",
        policy.per_message_us(lambda r: r.postfix),
        alone.per_message_us(lambda r: r.postfix),
    )
    t.add(
        "mail system CPU µs/msg, policy (baseline: alone)",
        policy.per_message_us(lambda r: r.mail),
        mail,
    )
    return t, shares


def runs_table(runs: Sequence[Run]) -> list[str]:
    """One row per run."""
    head = (
        "round", "config", "messages", "smtp-source s", "delivered s", "msg/s",
        "filterd µs/msg", "registry µs/msg", "Postfix µs/msg", "mail system µs/msg",
        "machine µs/msg", "other load, cores", "counted",
    )  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        lines.append(
            f"| {r.round} | {r.config} | {r.messages:,} | {r.accept_s:.2f} | {r.seconds:.2f} "
            f"| {r.rate:,.0f} | {r.per_message_us(r.filterd):,.1f} "
            f"| {r.per_message_us(r.registry):,.1f} | {r.per_message_us(r.postfix):,.0f} "
            f"| {r.per_message_us(r.mail):,.0f} | {r.per_message_us(r.machine):,.0f} "
            f"| {r.foreign:.2f} | {'yes' if r.ok else 'FAILED (see the notes)'} |"
        )
    return lines


def machine_facts(binary: ServerBinary) -> list[str]:
    """Code, nproc, CPU, Python, libraries, registry server, Postfix, environment."""
    names = ("filterd", "redis", "hiredis", "structlog")
    postfix = _common.command_version([_common.tool("postconf"), "-d", "mail_version"])
    return [
        f"- code: {_common.code_version()}",
        _common.machine_line(),
        _common.python_line(names),
        f"- registry server: {binary.path} ({_common.command_version([binary.path, '--version'])})",
        f"- postfix: {_common.tool('postfix')} ({postfix}), {_common.tool('smtp-source')}, "
        f"{_common.tool('smtp-sink')}",
        _common.environment_line(),
        _common.loadavg_line("start"),
    ]


def report(
    bench: Bench, runs: Sequence[Run], args: argparse.Namespace, command: str, header: list[str]
) -> tuple[str, bool]:
    """The markdown report, and whether every run counted."""
    totals = {c: Totals([r for r in runs if r.config == c and r.ok]) for c in CONFIGS}
    alone, policy = totals["alone"], totals["policy"]
    table, shares = build_table(alone, policy)
    failed = [r for r in runs if not r.ok]
    rates = [policy.rate(), alone.rate()]
    ratio = f"{rates[0] / rates[1]:.2f}" if rates[0] and rates[1] else "—"
    example = source_command(bench.postfix.ports["policy"], bench.sessions, args.messages, 0)
    example[example.index("-l") + 1] = str(bench.size)
    foreign = [r.foreign for r in runs if r.ok]
    out = [
        *_common.report_head("filterd policy service in a real Postfix", command, header),
        "",
        table.markdown(),
        "",
        f"CPU share = {_fmt(shares['mail'], 3)} (target ≤ {TARGET_SHARE}); msg/s policy ÷ "
        f"alone = {ratio}; filterd CPU per message "
        f"{_fmt(policy.per_message_us(lambda r: r.filterd), 1)} µs, registry "
        f"{_fmt(policy.per_message_us(lambda r: r.registry), 1)} µs.",
        "",
        *runs_table(runs),
        "",
        f"load: `{shlex.join(example)}` into each listener's port; {args.rounds} round(s), "
        "alone and policy alternating, the order reversed every round; msg/s = messages ÷ "
        "time from smtp-source's start to the last message at smtp-sink (incoming and active "
        "queues empty).",
        "",
        "configurations (one Postfix, two smtpd listeners; main.cf and everything else shared):",
        f"- policy: `smtpd_recipient_restrictions = "
        f"{restrictions('policy', bench.postfix.policy_port)}`",
        f"- alone: `smtpd_recipient_restrictions = {restrictions('alone', 0)}`",
        "",
        "checks:",
        *bench.checks,
        "- every counted run: smtp-source exit 0 and silent; smtp-sink counted exactly the "
        "messages sent; Postfix logged as many `status=sent` and no reject, deferral or "
        "bounce; filterd logged one `deliver` decision per message in policy runs, none "
        f"in alone runs. Runs that failed: {len(failed)} of {len(runs)}.",
        "",
        "notes:",
        "- CPU share = filterd + registry CPU per message in the policy runs ÷ the mail "
        "system's CPU per message in the alone runs: what the policy service adds, as a part "
        "of what the mail system costs without it. Mail system = the machine's busy CPU "
        "(/proc/stat, every core, all but idle and iowait) less the processes of other users "
        "of the machine: Postfix, smtp-source, smtp-sink, this script, the kernel's work "
        "(interrupts, loopback, the queue's disk writes) and the idle filterd and registry.",
        "- the unadjusted share divides by the machine's whole busy CPU; on a machine that "
        "runs nothing else the two are equal. Other users' processes: every process outside "
        "this script's tree and Postfix's, kernel threads excepted; the 'other load' column "
        "gives them in cores, per run ("
        + (f"{min(foreign):.2f} … {max(foreign):.2f} here)." if foreign else "no counted run).")
        + " CPU times from /proc are counted in clock ticks (10 ms): a short run's figures "
        "are coarse.",
        "- idle during the alone runs: filterd "
        f"{_fmt(alone.per_message_us(lambda r: r.filterd), 1)} µs/msg, registry "
        f"{_fmt(alone.per_message_us(lambda r: r.registry), 1)} µs/msg.",
        f"- the share against Postfix's own processes only (no smtp-source, smtp-sink or "
        f"kernel work): {_fmt(shares['postfix'], 3)}",
        "- Postfix CPU: the master and every process under it, those that exited during a "
        "run through the master's cutime/cstime (smtpd processes end after `max_use` = 100 "
        "connections; smtp-source opens one connection per message).",
        "- mail system CPU, policy vs alone: the whole cost of the policy check, with "
        "Postfix's side of it (smtpd writing requests and reading replies).",
        *bench.notes,
    ]
    return "\n".join(out), not failed and bool(alone.runs) and bool(policy.runs)


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


# ---- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """--quick, --messages, --rounds, --sessions, --size."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 1,000 messages")
    p.add_argument("--messages", type=int, help="messages per run (default 3,000)")
    p.add_argument("--rounds", type=int, help="rounds per configuration (default 3)")
    p.add_argument("--sessions", type=int, default=20, help="smtp-source -s (default 20)")
    p.add_argument("--size", type=int, default=1000, help="smtp-source -l (default 1000)")
    args = p.parse_args(argv)
    if args.messages is None:
        args.messages = 1_000 if args.quick else 3_000
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.rounds < 1 or args.sessions < 1 or args.messages < 100 or args.size < 0:
        p.error("need --rounds ≥ 1, --sessions ≥ 1, --messages ≥ 100, --size ≥ 0")
    return args


def setup(args: argparse.Namespace, binary: ServerBinary, cleanup: _common.Cleanup) -> Bench:
    """Registry, consent, filterd, smtp-sink, Postfix; then the probes."""
    temp = cleanup.temp_dir
    if temp is None:
        raise RuntimeError("no temp dir yet")
    progress(f"temp dir {temp}; registry server ...")
    url, registry = _common.start_registry(binary, temp / "r", cleanup)
    secret = temp / "secret"
    _common.write_secret(secret)
    config = temp / "filterd.toml"
    config.write_text(FILTERD_TOML.format(url=url, secret=secret, sender=SENDER))
    consented = max(args.messages, WARMUP_MESSAGES)
    progress(f"consent for {consented:,} recipients (filterctl import) ...")
    checks = load_consent(config, temp, consented)
    progress("filterd serve, smtp-sink ...")
    filterd = Filterd.start(config, temp, cleanup)
    sink = _common.Sink.start("sink", temp, cleanup)
    postfix = Postfix.create(temp / "postfix", sink.port, filterd.port)
    progress(f"Postfix (postfix -c {postfix.config_dir} start) ...")
    return Bench(postfix, filterd, sink, registry.pid, args.sessions, args.size, checks)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report on stdout; stop everything whatever happens."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if os.geteuid() != 0:
        print("bench/postfix.py runs Postfix, whose master needs root: run it as root",
              file=sys.stderr)  # fmt: skip
        return 2
    for name in ("postfix", "postconf", "postsuper", "smtp-source", "smtp-sink"):
        _common.tool(name)
    pwd.getpwnam(MAIL_OWNER)  # KeyError: the postfix package was not installed
    _common.sigterm_as_interrupt()
    cleanup = _common.Cleanup()
    postfix: list[Postfix] = []

    def stop_all() -> None:
        for instance in postfix:
            instance.stop()
        cleanup.run()

    wall = time.monotonic()
    with _common.cleaning_up(stop_all):
        binary = find_binary()
        header = machine_facts(binary)
        cleanup.temp_dir = Path(tempfile.mkdtemp(prefix="fdpf-", dir="/tmp"))
        cleanup.temp_dir.chmod(0o711)  # Postfix's processes run as mail_owner
        bench = setup(args, binary, cleanup)
        postfix.append(bench.postfix)
        bench.postfix.start()
        probe(bench)
        runs = measure(bench, args.rounds, args.messages)
        command = _common.bench_command("bench/postfix.py", raw_argv)
        text, ok = report(
            bench, runs, args, command,
            [*header, _common.loadavg_line("end"), _common.wall_line(wall)],
        )  # fmt: skip
        print(text, flush=True)
        return 0 if ok else 1


if __name__ == "__main__":
    _common.run_main(main, "Postfix and every process stopped, temp files removed")
