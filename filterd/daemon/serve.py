"""`filterd serve`: the composition root of the long-running process.

Builds the registry and service, installs the signal handlers, starts every
configured front end (a worker process runs only its own), supervises the
embedded registry server, tells systemd READY/RELOADING/STOPPING/WATCHDOG, and
on SIGTERM/SIGINT drains and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from typing import Any

from filterd import logs
from filterd.accounts import AccountBook
from filterd.bootstrap import build
from filterd.cmpp.hub import CMPP_WIRE
from filterd.daemon.frontends import (
    ApiService,
    CmppFrontEnd,
    HttpService,
    PolicyFrontEnd,
    SmppFrontEnd,
    SmtpFrontEnd,
    run,
)
from filterd.daemon.live import SUPERVISE_INTERVAL_S, Live, smtp_accounts
from filterd.daemon.reload import reload
from filterd.daemon.shared_metrics import report_metrics, share_metrics, unshare_metrics
from filterd.daemon.workers import die_with_parent, run_workers, watch_parent
from filterd.errors import ConfigError, FilterdError, RegistryUnavailable, shown_url
from filterd.filemodes import config_warnings
from filterd.heap import freeze_startup_heap
from filterd.hub import Hub
from filterd.metrics_dir import MetricsDir
from filterd.notify import Notifier
from filterd.process_limits import quiet_accept_errors, raise_nofile_limit
from filterd.settings import Settings
from filterd.smpp.hub import SMPP_WIRE

EXIT_OK, EXIT_START, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3
"""serve's exit codes: stopped by a signal, a listener could not start, bad config,
registry unreachable at start."""


async def serve(
    settings: Settings,
    worker: str | None = None,
    notifier: Notifier | None = None,
    watchdog_s: float | None = None,
    *,
    parent: int | None = None,
    hub_fd: int | None = None,
    metrics_dir: MetricsDir | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; return the exit code. SIGHUP reloads (see `reload`).

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
    live = Live(
        settings, runtime, asyncio.Event(), notifier, AccountBook(smtp_accounts(settings)),
        hub_fd=hub_fd, metrics_dir=metrics_dir,
    )  # fmt: skip
    share_metrics(live, worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, live.stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(live))
    if worker is not None:
        die_with_parent()
        if parent is None:
            parent = os.getppid()
    code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as group:
            _start_front_ends(group, live, worker, parent)
            if watchdog_s:
                group.create_task(_watchdog(live, watchdog_s))
            if worker is not None and live.metrics_dir is not None:
                group.create_task(report_metrics(live, live.metrics_dir))
            await _wait_ready(live)
            if not live.stop.is_set():
                freeze_startup_heap()
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
        unshare_metrics(live, worker)
    log.info("stopped")
    return code


def _warn_about_config_file(settings: Settings) -> None:
    """Once at start: a config holding inline passwords that others may read, or that
    its group may write, is named with its mode; a config without [compliance] is
    named as such (written before it existed, it keeps its behaviour)."""
    for warning in config_warnings(settings.path):
        logs.get_logger("daemon").warning("config_file_mode", warning=warning)
    if settings.compliance is None and (
        settings.smtp or settings.smpp or settings.cmpp or settings.policy
    ):
        logs.get_logger("daemon").warning(
            "compliance_off",
            warning="no [compliance] table: commercial messages are not checked for a "
            "cancel method, a signature or quiet hours",
        )


async def _wait_ready(live: Live) -> None:
    """Return once every front end listens (or stop is set)."""
    if live.expected == 0:
        return
    ready = asyncio.ensure_future(live.all_listening.wait())
    stopping = asyncio.ensure_future(live.stop.wait())
    await asyncio.wait([ready, stopping], return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopping.cancel()


async def _watchdog(live: Live, interval_s: float) -> None:
    """WATCHDOG=1 every `interval_s` while the event loop runs."""
    while not live.stop.is_set():
        live.notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), interval_s)


def _start_front_ends(
    group: asyncio.TaskGroup, live: Live, worker: str | None, parent: int | None
) -> None:
    """Create a task for each configured front end (a worker runs only its own)."""
    settings = live.settings
    main = worker is None
    if main:
        group.create_task(_supervise(live))
    if parent is not None:
        group.create_task(watch_parent(parent, live.stop))
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
            run(
                live,
                SmtpFrontEnd(live, smtp, listen=smtp.listen, upstream=smtp.upstream, intake=intake),
            )
        )
        listeners += 1 if intake is None else 2
        if main and smtp.workers > 1:
            group.create_task(run_workers(live, "smtp", smtp.workers - 1))
    if smpp is not None and worker in (None, "smpp"):
        tasks.append(run(live, SmppFrontEnd(live, smpp)))
        if main and smpp.workers > 1:
            live.hub = Hub(SMPP_WIRE)
            group.create_task(run_workers(live, "smpp", smpp.workers - 1, live.hub))
    cmpp = settings.cmpp
    if cmpp is not None and worker in (None, "cmpp"):
        tasks.append(run(live, CmppFrontEnd(live, cmpp)))
        if main and cmpp.workers > 1:
            live.cmpp_hub = Hub(CMPP_WIRE)
            group.create_task(run_workers(live, "cmpp", cmpp.workers - 1, live.cmpp_hub))
    if settings.policy is not None and main:
        tasks.append(run(live, PolicyFrontEnd(live, settings.policy)))
    if settings.http is not None and main:
        tasks.append(run(live, HttpService(live, settings.http)))
    if settings.api is not None and main:
        tasks.append(run(live, ApiService(live, settings.api)))
    live.expected = listeners + len(tasks) - (1 if listeners else 0)
    for task in tasks:
        group.create_task(task)


async def _supervise(live: Live) -> None:
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
            await asyncio.wait_for(stop.wait(), SUPERVISE_INTERVAL_S)
