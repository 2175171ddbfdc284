"""`filterd`: the daemon entry point (`serve`) and `check-config`.

The composition root of the long-running process: reads the config, sets up
logging (JSON lines to stdout, console on a TTY), builds the registry and
service, supervises the embedded registry server, and stops cleanly on
SIGTERM/SIGINT (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import filterd
from filterd import config as config_module
from filterd import logs
from filterd.accounts import AccountBook
from filterd.bootstrap import Runtime, build, dkim_signer
from filterd.bootstrap import senders as token_senders
from filterd.errors import ConfigError, FilterdError, RegistryUnavailable, shown_url
from filterd.filemodes import config_warnings
from filterd.guard import LoginGate
from filterd.keywords import Keywords
from filterd.metrics_dir import REPORT_INTERVAL_S, MetricsDir
from filterd.notify import Notifier
from filterd.policy_service import start_policy_server
from filterd.process_limits import quiet_accept_errors, raise_nofile_limit
from filterd.secret import load_or_create
from filterd.smpp.carrier import CarrierClient
from filterd.smpp.hub import Hub, HubClient
from filterd.smpp.server import SmppRelay
from filterd.smtp.inbound import RelayHandler, start_smtp_server
from filterd.smtp.oneclick import OneClick
from filterd.smtp.outbound import UpstreamPool
from filterd.web import HttpFrontEnd, UnsubscribeSite

EXIT_OK, EXIT_START, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3
_SUPERVISE_INTERVAL_S = 1.0
_PR_SET_PDEATHSIG = 1


_EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}  serve: stopped by SIGTERM/SIGINT; check-config: the config is valid
  {EXIT_START}  serve: a listener could not start (the log names its key)
  {EXIT_CONFIG}  bad config (the key and the reason on stderr)
  {EXIT_UNAVAILABLE}  serve: the registry is unreachable at start
"""


def _version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    try:
        return metadata.version("filterd")
    except metadata.PackageNotFoundError:
        return filterd.__version__


def _parser() -> argparse.ArgumentParser:
    """filterd's arguments: serve and check-config, --version, the exit codes."""
    p = argparse.ArgumentParser(
        prog="filterd",
        description="Commercial-message opt-out filter.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, helptext, description in (
        (
            "serve",
            "run every front end configured",
            "Run every front end the config names (SMTP and SMPP relays, Postfix policy\n"
            "service, HTTP) until SIGTERM or SIGINT, then drain and exit 0. SIGHUP\n"
            "reloads accounts, numbers and keywords. Logs JSON lines to stdout.\n",
        ),
        (
            "check-config",
            "validate the config; exit 0, or 2 with the key and the reason",
            "Load the config as serve would, check an existing registry secret and a\n"
            "DKIM key, print `config ok: PATH` and start nothing.\n",
        ),
    ):
        c = sub.add_parser(
            name,
            help=helptext,
            description=description,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        c.add_argument(
            "--config",
            metavar="PATH",
            help="config file (default: $FILTERD_CONFIG, "
            "/etc/filterd/filterd.toml, config/filterd.toml)",
        )
        if name == "serve":
            # internal: a worker process started by `filterd serve` for smtp/smpp.workers > 1
            c.add_argument("--worker", choices=["smtp", "smpp"], help=argparse.SUPPRESS)
            c.add_argument("--parent", type=int, help=argparse.SUPPRESS)
            c.add_argument("--hub-fd", type=int, help=argparse.SUPPRESS)
            c.add_argument("--metrics-dir", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `filterd` console script."""
    args = _parser().parse_args(argv)
    try:
        path = config_module.default_path(args.config, dict(os.environ))
        settings = config_module.load(path)
        if args.command == "check-config":
            load_or_create_check(settings)
            sys.stdout.write(f"config ok: {path}\n")
            sys.exit(EXIT_OK)
    except ConfigError as exc:
        sys.stderr.write(f"filterd: {exc}\n")
        sys.exit(EXIT_CONFIG)
    logs.configure(sys.stdout, os.environ.get("FILTERD_LOG_LEVEL", "INFO"), cache=True)
    worker = getattr(args, "worker", None)
    notifier = Notifier(None if worker else os.environ.get("NOTIFY_SOCKET"))
    watchdog = _watchdog_interval(os.environ)
    parent = getattr(args, "parent", None)
    hub_fd = getattr(args, "hub_fd", None)
    shared = getattr(args, "metrics_dir", None)
    metrics_dir = MetricsDir(Path(shared)) if shared else None
    serving = serve(
        settings, worker, notifier, watchdog, parent=parent, hub_fd=hub_fd, metrics_dir=metrics_dir
    )
    sys.exit(asyncio.run(serving))


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec (WATCHDOG_USEC), when it is meant for this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def load_or_create_check(settings: config_module.Settings) -> None:
    """check-config: an existing secret file must be private and long enough; a DKIM
    key must sign."""
    if settings.registry.secret_file.exists():
        load_or_create(settings.registry.secret_file)
    dkim_signer(settings)


@dataclass
class _Live:
    """What one serving process holds: the objects a reload updates, start-up progress."""

    settings: config_module.Settings
    runtime: Runtime
    stop: asyncio.Event
    notifier: Notifier
    accounts: AccountBook
    gate: LoginGate = field(default_factory=LoginGate)
    """The process's one login gate: SMTP AUTH and SMPP binds share its back-off."""
    relay: SmppRelay | None = None
    workers: dict[str, list[asyncio.subprocess.Process]] = field(default_factory=dict)
    """Worker processes by front end ("smtp", "smpp")."""
    hub: Hub | None = None
    """The parent's SMPP hub (smpp.workers > 1)."""
    hub_fd: int | None = None
    """An SMPP worker's end of its link to the hub."""
    metrics_dir: MetricsDir | None = None
    """Where workers write their counts for the main process's /metrics."""
    expected: int = 0
    listening: int = 0
    all_listening: asyncio.Event = field(default_factory=asyncio.Event)

    def listened(self) -> None:
        """One more front end listens; all of them: set `all_listening`."""
        self.listening += 1
        if self.listening >= self.expected:
            self.all_listening.set()


async def serve(
    settings: config_module.Settings,
    worker: str | None = None,
    notifier: Notifier | None = None,
    watchdog_s: float | None = None,
    *,
    parent: int | None = None,
    hub_fd: int | None = None,
    metrics_dir: MetricsDir | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the exit code. SIGHUP reloads (see `_reload`).

    `worker="smtp"` / `"smpp"`: run only that front end (an extra process of a
    `*.workers > 1` set-up; the parent supervises the registry and workers); an
    SMPP worker reaches the parent's delivery hub on `hub_fd` and writes its counts to
    `metrics_dir` (see filterd.metrics_dir).
    `notifier` tells systemd READY/RELOADING/STOPPING; with `watchdog_s` it also
    sends WATCHDOG at that interval. A worker stops when `parent` is gone.
    """
    log = logs.get_logger("daemon")
    logs.bind(pid=os.getpid(), role=f"{worker}-worker" if worker else "main")
    notifier = notifier or Notifier(None)
    nofile, _ = raise_nofile_limit()
    quiet_accept_errors(asyncio.get_running_loop())
    try:
        runtime = await asyncio.to_thread(build, settings)
        await runtime.registry.check_layout()
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return EXIT_CONFIG
    except (RegistryUnavailable, FilterdError) as exc:
        log.error("registry_unavailable", error=str(exc))
        return EXIT_UNAVAILABLE
    if worker is None:
        _warn_about_config_file(settings)
    live = _Live(
        settings, runtime, asyncio.Event(), notifier, AccountBook(_smtp_accounts(settings)),
        hub_fd=hub_fd, metrics_dir=metrics_dir,
    )  # fmt: skip
    _share_metrics(live, worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, live.stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(live))
    if worker is not None:
        _die_with_parent()
        if parent is None:
            parent = os.getppid()
    code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as group:
            _start_front_ends(group, live, worker, parent)
            if watchdog_s:
                group.create_task(_watchdog(live, watchdog_s))
            if worker is not None and live.metrics_dir is not None:
                group.create_task(_report_metrics(live, live.metrics_dir))
            await _wait_ready(live)
            if not live.stop.is_set():
                log.info(
                    "started",
                    config=str(settings.path),
                    registry=shown_url(settings.registry.url),
                    nofile=nofile,
                )
                notifier.ready(f"serving {live.listening} front end(s)")
            await live.stop.wait()
            notifier.stopping()
            log.info("stopping", drain_timeout_s=live.settings.daemon.drain_timeout_s)
    except* OSError as group_error:
        for error in group_error.exceptions:
            log.error("front_end_failed", error=str(error))
        code = EXIT_START
    finally:
        await runtime.close()
        _unshare_metrics(live, worker)
    log.info("stopped")
    return code


def _warn_about_config_file(settings: config_module.Settings) -> None:
    """Once at start: a config holding inline passwords that others may read, or that
    its group may write, is named with its mode."""
    for warning in config_warnings(settings.path):
        logs.get_logger("daemon").warning("config_file_mode", warning=warning)


def _share_metrics(live: _Live, worker: str | None) -> None:
    """The main process of a `workers > 1` set-up: a directory for the workers' counts,
    added into its /metrics."""
    smtp, smpp = live.settings.smtp, live.settings.smpp
    workers = (smtp is not None and smtp.workers > 1) or (smpp is not None and smpp.workers > 1)
    if worker is None and workers:
        live.metrics_dir = MetricsDir.create()
        live.runtime.service.metrics.include(live.metrics_dir.read)


def _unshare_metrics(live: _Live, worker: str | None) -> None:
    """At exit: the main process removes the directory; a worker writes its last counts
    (those of the drain too)."""
    if live.metrics_dir is None:
        return
    if worker is None:
        live.metrics_dir.remove()
    else:
        _write_metrics(live, live.metrics_dir)


async def _report_metrics(live: _Live, directory: MetricsDir) -> None:
    """A worker: write its counts for the main process's /metrics every second until `stop`."""
    while not live.stop.is_set():
        _write_metrics(live, directory)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), REPORT_INTERVAL_S)


def _write_metrics(live: _Live, directory: MetricsDir) -> None:
    try:
        directory.write(str(os.getpid()), live.runtime.service.metrics.snapshot())
    except OSError as exc:
        logs.get_logger("daemon").warning("metrics_report_failed", error=str(exc))


def _smtp_accounts(settings: config_module.Settings) -> tuple[config_module.SmtpAccount, ...]:
    return settings.smtp.accounts if settings.smtp is not None else ()


async def _wait_ready(live: _Live) -> None:
    """Return once every front end listens (or stop is set)."""
    if live.expected == 0:
        return
    ready = asyncio.ensure_future(live.all_listening.wait())
    stopping = asyncio.ensure_future(live.stop.wait())
    await asyncio.wait([ready, stopping], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopping.cancel()


def _reload(live: _Live) -> None:
    """SIGHUP: re-read the config; take new accounts, numbers and keywords.

    Connections stay up; sessions keep the account they logged in with. A
    config that does not load is logged and the running one kept. Changes
    that need a restart (listen addresses, upstreams, registry) are named in
    the log. Worker processes get the SIGHUP too and reload their own copy.
    """
    log = logs.get_logger("daemon")
    live.notifier.reloading()
    try:
        new = config_module.load(live.settings.path)
        senders = token_senders(new)
    except Exception as exc:  # a reload must never leave systemd waiting in RELOADING
        log.error("reload_failed", error=str(exc) or type(exc).__name__)
        live.notifier.ready("reload failed; running with the previous config")
        return
    old = live.settings
    restart = [name for name in _RESTART_KEYS if _part(old, name) != _part(new, name)]
    live.accounts.replace(_smtp_accounts(new))
    if live.relay is not None and new.smpp is not None:
        kw = new.keywords
        live.relay.reload(new.smpp, Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help))
    live.runtime.senders.clear()
    live.runtime.senders.update(senders)
    # live.settings stays the start-up config: what needs a restart keeps its old value
    for process in [p for processes in live.workers.values() for p in processes]:
        if process.returncode is None:
            process.send_signal(signal.SIGHUP)
    log.info("reloaded", config=str(new.path), restart_needed=restart or None)
    live.notifier.ready("reloaded")


_RESTART_KEYS = ("registry", "smtp.listen", "smtp.upstream", "smpp.listen", "smpp.upstream",
                 "http", "policy", "dkim", "smtp.workers", "smpp.workers", "smtp.limits",
                 "smpp.limits", "daemon")  # fmt: skip


def _part(settings: config_module.Settings, name: str) -> object:
    value: object = settings
    for attribute in name.split("."):
        value = getattr(value, attribute, None)
    return value


async def _watchdog(live: _Live, interval_s: float) -> None:
    """WATCHDOG=1 every `interval_s` while the event loop runs."""
    while not live.stop.is_set():
        live.notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), interval_s)


async def _run_smtp(
    live: _Live,
    smtp: config_module.SmtpSettings,
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    intake: tuple[str, int] | None = None,
) -> None:
    """The SMTP relay (and, with `intake`, the unsubscribe listener) until `stop`;
    then drain: no new connections, finish transactions."""
    log = logs.get_logger("smtp")
    host, port = upstream
    hostname = smtp.hostname or socket.gethostname()
    pool = UpstreamPool(host, port, tls=smtp.upstream_tls, local_hostname=hostname)
    oneclick = _oneclick(live, smtp)
    handlers = [
        RelayHandler(
            smtp,
            live.runtime.service,
            live.accounts,
            pool,
            default_region=live.settings.registry.default_region,
            oneclick=oneclick,
            intake_only=only,
            gate=live.gate,
        )
        for only in ([False, True] if intake is not None else [False])
    ]
    servers = [
        await _listen(
            live,
            "smtp.unsubscribe" if handler.intake_only else "smtp",
            where,
            start_smtp_server(smtp, where, handler, hostname=hostname),
        )
        for handler, where in zip(handlers, [listen, intake], strict=False)
        if where is not None
    ]
    try:
        await live.stop.wait()
    finally:
        for server in servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(h.drained() for h in handlers)),
                live.settings.daemon.drain_timeout_s,
            )
        for handler in handlers:
            handler.close_all()
        for server in servers:
            await server.wait_closed()
        await pool.close()
        log.info("drained", front_end="smtp")


def _oneclick(live: _Live, smtp: config_module.SmtpSettings) -> OneClick | None:
    """Opt-out intake and signing for the SMTP relay, when configured ([http] needed)."""
    runtime, http = live.runtime, live.settings.http
    if http is None or runtime.tokens is None:
        return None
    if smtp.unsubscribe_domain is None and runtime.signer is None:
        return None
    return OneClick(
        runtime.service,
        runtime.tokens,
        runtime.senders,
        public_url=http.public_url,
        domain=smtp.unsubscribe_domain,
        signer=runtime.signer,
    )


def _start_front_ends(
    group: asyncio.TaskGroup, live: _Live, worker: str | None, parent: int | None
) -> None:
    """Create a task for each configured front end (a worker runs only its own)."""
    settings = live.settings
    main = worker is None
    if main:
        group.create_task(_supervise(live))
    if parent is not None:
        group.create_task(_watch_parent(parent, live.stop))
    smtp, smpp = settings.smtp, settings.smpp
    tasks: list[Coroutine[Any, Any, None]] = []
    listeners = 0
    if (
        smtp is not None
        and smtp.listen is not None
        and smtp.upstream is not None
        and (worker in (None, "smtp"))
    ):
        intake = smtp.unsubscribe_listen if main else None
        tasks.append(
            _run_smtp(live, smtp, listen=smtp.listen, upstream=smtp.upstream, intake=intake)
        )
        listeners += 1 if intake is None else 2
        if main and smtp.workers > 1:
            group.create_task(_run_workers(live, "smtp", smtp.workers - 1))
    if smpp is not None and worker in (None, "smpp"):
        tasks.append(_run_smpp(live, smpp))
        if main and smpp.workers > 1:
            live.hub = Hub()
            group.create_task(_run_workers(live, "smpp", smpp.workers - 1, live.hub))
    if settings.policy is not None and main:
        tasks.append(_run_policy(live, settings.policy))
    if settings.http is not None and main:
        tasks.append(_run_http(live, settings.http))
    live.expected = listeners + len(tasks) - (1 if listeners else 0)
    for task in tasks:
        group.create_task(task)


async def _listen(
    live: _Live,
    name: str,
    listen: tuple[str, int],
    starting: Coroutine[Any, Any, asyncio.Server],
) -> asyncio.Server:
    """Await a front end's listener; a bind failure names the key; log the bound address.

    A listener that cannot bind stops the daemon: `stop` is set (so that every task
    ends, even one whose cancellation got lost: redis-py on Python 3.11 can swallow
    one) and the OSError goes to the task group. When the group cancels this task
    because another front end failed first, the bind still runs to its end, so that
    every listener that cannot bind is named, not only the first: its failure is
    raised as above; a listener that did bind is closed and the cancellation goes on.
    """
    key = "smtp.unsubscribe_listen" if name == "smtp.unsubscribe" else f"{name}.listen"
    attempt = asyncio.ensure_future(starting)
    try:
        try:
            server = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            server = await attempt  # a local bind: it ends at once
            server.close()
            raise
    except OSError as exc:
        live.stop.set()
        raise OSError(f"{key} {listen[0]}:{listen[1]}: {exc.strerror}") from exc
    bound = server.sockets[0].getsockname()
    logs.get_logger(name).info("listening", front_end=name, host=bound[0], port=bound[1])
    live.listened()
    return server


async def _run_policy(live: _Live, policy: config_module.PolicySettings) -> None:
    """The Postfix policy service until `stop`; then finish the requests in flight."""
    log = logs.get_logger("policy")
    starting = start_policy_server(
        policy.listen,
        live.runtime.service,
        live.accounts,
        default_region=live.settings.registry.default_region,
        limits=policy.limits,
    )
    server = await _listen(live, "policy", policy.listen, starting)
    try:
        await live.stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), live.settings.daemon.drain_timeout_s)
        log.info("drained", front_end="policy")


async def _run_http(live: _Live, http: config_module.HttpSettings) -> None:
    """The HTTP front end (unsubscribe, health, metrics) until `stop`."""
    log = logs.get_logger("http")
    runtime = live.runtime
    if runtime.tokens is None:  # build() makes the keys whenever [http] is set
        raise ConfigError("http", "no token keys")
    site = UnsubscribeSite(
        runtime.service, runtime.tokens, runtime.senders, status_networks=http.status_networks
    )
    front_end = HttpFrontEnd(site, http.limits, body_timeout_s=http.body_timeout_s)
    try:
        server = await _listen(live, "http", http.listen, front_end.start(http.listen))
    except asyncio.CancelledError:  # it did listen, then stopped before serving: take it down
        await front_end.close()
        raise
    try:
        await live.stop.wait()
    finally:
        server.close()
        await front_end.close()
        log.info("drained", front_end="http")


async def _run_smpp(live: _Live, smpp: config_module.SmppSettings) -> None:
    """The SMPP relay and its carrier link until `stop`; then unbind both sides."""
    log = logs.get_logger("smpp")
    kw = live.settings.keywords
    relay = SmppRelay(
        smpp,
        live.runtime.service,
        live.runtime.registry,
        Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
        default_region=live.settings.registry.default_region,
        drain_s=live.settings.daemon.drain_timeout_s,
        gate=live.gate,
    )
    live.relay = relay
    if live.hub is not None:  # the parent of SMPP workers: its own clients are on the hub too
        live.hub.local = relay.deliver_local
        relay.hub = live.hub
    hub_link = None
    if live.hub_fd is not None:
        client = await HubClient.open(live.hub_fd, relay.deliver_local)
        relay.hub = client
        hub_link = asyncio.create_task(_hub_link(client, live.stop))
    carrier_task = None
    carrier_stop = asyncio.Event()  # set only once the clients' submits are answered
    if smpp.upstream is not None:
        relay.carrier = CarrierClient(smpp.upstream, relay.from_carrier)
        carrier_task = asyncio.create_task(relay.carrier.run(carrier_stop))
    server = await _listen(live, "smpp", smpp.listen, relay.start())
    try:
        await live.stop.wait()
    finally:
        server.close()
        await relay.unbind_all()
        if hub_link is not None:
            hub_link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hub_link
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), live.settings.daemon.drain_timeout_s)
        carrier_stop.set()
        if carrier_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(carrier_task, 10)
        log.info("drained", front_end="smpp")


async def _hub_link(client: HubClient, stop: asyncio.Event) -> None:
    """An SMPP worker's link to the hub; lost while serving: stop, so that `filterd serve`
    starts this worker afresh with a new link (its clients bind again)."""
    try:
        await client.run()
    finally:
        await client.close()
    if not stop.is_set():
        logs.get_logger("daemon").error("hub_link_lost")
        stop.set()


async def _run_workers(live: _Live, front_end: str, count: int, hub: Hub | None = None) -> None:
    """Keep `count` extra worker processes of `front_end` running (restarted 1 s after a
    death; each SMPP worker with a fresh link to `hub`); on stop, SIGTERM and wait for them."""
    command = [sys.executable, "-m", "filterd", "serve", "--config", str(live.settings.path),
               "--worker", front_end, "--parent", str(os.getpid())]  # fmt: skip
    if live.metrics_dir is not None:
        command += ["--metrics-dir", str(live.metrics_dir.path)]

    async def spawn() -> asyncio.subprocess.Process:
        if hub is None:
            return await asyncio.create_subprocess_exec(*command)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                *command, "--hub-fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        hub.attach(ours, f"{front_end}-worker {process.pid}")
        return process

    workers = live.workers.setdefault(front_end, [])
    try:
        await _supervise_workers(live, front_end, workers, count, spawn)
    finally:
        for process in workers:
            if process.returncode is None:
                process.terminate()
        for process in workers:
            try:
                await asyncio.wait_for(process.wait(), live.settings.daemon.drain_timeout_s + 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if hub is not None:
            await hub.close()


async def _supervise_workers(
    live: _Live,
    front_end: str,
    workers: list[asyncio.subprocess.Process],
    count: int,
    spawn: Callable[[], Awaitable[asyncio.subprocess.Process]],
) -> None:
    """Start `count` workers, restart any that dies, until `stop`."""
    log = logs.get_logger("daemon")
    stop = live.stop
    for _ in range(count):
        process = await _spawn_until_started(live, front_end, spawn)
        if process is None:
            return
        workers.append(process)
    log.info("workers_started", front_end=front_end, pids=[w.pid for w in workers])
    while not stop.is_set():
        waits = [asyncio.ensure_future(w.wait()) for w in workers]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        for future in [*waits, stopping]:
            future.cancel()
        for index, process in enumerate(workers):
            if process.returncode is not None and not stop.is_set():
                log.error(
                    "worker_died", front_end=front_end, pid=process.pid, code=process.returncode
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)  # back off before a restart
                restarted = await _spawn_until_started(live, front_end, spawn)
                if restarted is not None:
                    workers[index] = restarted
                    log.info("worker_restarted", front_end=front_end, pid=restarted.pid)


async def _spawn_until_started(
    live: _Live, front_end: str, spawn: Callable[[], Awaitable[asyncio.subprocess.Process]]
) -> asyncio.subprocess.Process | None:
    """Start a worker; while that fails (no descriptors or processes left), log it and
    try again every second: the running front ends keep serving meanwhile. None once
    `stop` is set."""
    while not live.stop.is_set():
        try:
            return await spawn()
        except OSError as exc:
            logs.get_logger("daemon").error(
                "worker_start_failed", front_end=front_end, error=exc.strerror or str(exc)
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), _SUPERVISE_INTERVAL_S)
    return None


def _die_with_parent() -> None:
    """A worker gets SIGTERM (so it drains) when `filterd serve` dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop a worker whose parent is gone (the fallback where prctl is not available)."""
    while not stop.is_set():
        if os.getppid() != parent:
            logs.get_logger("daemon").error("parent_gone", parent=parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SUPERVISE_INTERVAL_S)


async def _supervise(live: _Live) -> None:
    """Keep the embedded registry server running; note when the registry is unreachable."""
    log = logs.get_logger("daemon")
    runtime, stop = live.runtime, live.stop
    task = asyncio.current_task()
    healthy = True
    while not stop.is_set():
        if task is not None and task.cancelling():
            # a cancel the registry client swallowed (asyncio.wait_for on Python 3.11
            # can lose one that lands as its wait ends): honour it, or serve never exits
            raise asyncio.CancelledError
        if runtime.embedded is not None:
            try:
                await asyncio.to_thread(runtime.embedded.ensure_running)
            except FilterdError as exc:
                log.error("embedded_registry_restart_failed", error=str(exc))
            except OSError as exc:  # e.g. no descriptor left for its lock file: next second
                log.warning("embedded_registry_check_failed", error=exc.strerror or str(exc))
        try:
            await runtime.registry.ping()
            if not healthy:
                log.info("registry_reachable")
            healthy = True
        except RegistryUnavailable as exc:
            if healthy:
                log.error("registry_unreachable", error=str(exc))
            healthy = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SUPERVISE_INTERVAL_S)
