"""/metrics with workers: the main process adds the counts its workers write once a
second to a private directory (see filterd.metrics_dir)."""

from __future__ import annotations

import asyncio
import contextlib
import os

from filterd import logs
from filterd.daemon.live import Live
from filterd.metrics_dir import REPORT_INTERVAL_S, MetricsDir


def share_metrics(live: Live, worker: str | None) -> None:
    """The main process of a `workers > 1` set-up: a directory for the workers' counts,
    added into its /metrics."""
    smtp, smpp = live.settings.smtp, live.settings.smpp
    workers = (smtp is not None and smtp.workers > 1) or (smpp is not None and smpp.workers > 1)
    if worker is None and workers:
        live.metrics_dir = MetricsDir.create()
        live.runtime.service.metrics.include(live.metrics_dir.read)


def unshare_metrics(live: Live, worker: str | None) -> None:
    """At exit: the main process removes the directory; a worker writes its last counts
    (those of the drain too)."""
    if live.metrics_dir is None:
        return
    if worker is None:
        live.metrics_dir.remove()
    else:
        _write_metrics(live, live.metrics_dir)


async def report_metrics(live: Live, directory: MetricsDir) -> None:
    """A worker: write its counts for the main process's /metrics every second until `stop`."""
    while not live.stop.is_set():
        _write_metrics(live, directory)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), REPORT_INTERVAL_S)


def _write_metrics(live: Live, directory: MetricsDir) -> None:
    try:
        directory.write(str(os.getpid()), live.runtime.service.metrics.snapshot())
    except OSError as exc:
        logs.get_logger("daemon").warning("metrics_report_failed", error=str(exc))
