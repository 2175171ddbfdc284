"""Worker processes (`smtp.workers`, `smpp.workers`, `cmpp.workers` > 1): started and restarted by
the main process, each an own `filterd serve --worker`; a worker stops when its
parent is gone (parent-death signal, and a check every second)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from filterd import logs
from filterd.daemon.live import SUPERVISE_INTERVAL_S, Live
from filterd.hub import Hub

_PR_SET_PDEATHSIG = 1


async def run_workers(live: Live, front_end: str, count: int, hub: Hub[Any] | None = None) -> None:
    """Keep `count` extra worker processes of `front_end` running (restarted 1 s after a
    death; each SMPP or CMPP worker with a fresh link to `hub`); on stop, SIGTERM and
    wait for them."""
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
    live: Live,
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
    live: Live, front_end: str, spawn: Callable[[], Awaitable[asyncio.subprocess.Process]]
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
            await asyncio.wait_for(live.stop.wait(), SUPERVISE_INTERVAL_S)
    return None


def die_with_parent() -> None:
    """A worker gets SIGTERM (so it drains) when `filterd serve` dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop a worker whose parent is gone (the fallback where prctl is not available)."""
    while not stop.is_set():
        if os.getppid() != parent:
            logs.get_logger("daemon").error("parent_gone", parent=parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUPERVISE_INTERVAL_S)
