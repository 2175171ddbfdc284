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
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from filterd import config as config_module
from filterd import logs
from filterd.accounts import AccountBook
from filterd.bootstrap import Runtime, build
from filterd.errors import ConfigError, FilterdError, RegistryUnavailable
from filterd.keywords import Keywords
from filterd.policy_service import start_policy_server
from filterd.secret import load_or_create
from filterd.smpp.carrier import CarrierClient
from filterd.smpp.server import SmppRelay
from filterd.smtp.inbound import RelayHandler, start_smtp_server
from filterd.smtp.outbound import UpstreamPool
from filterd.web import HttpFrontEnd, UnsubscribeSite

EXIT_OK, EXIT_START, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 1, 2, 3
_SUPERVISE_INTERVAL_S = 1.0
_DRAIN_TIMEOUT_S = 30.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="filterd", description="Commercial-message opt-out filter.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("serve", "run every front end configured"),
        ("check-config", "validate the config; exit 0, or 2 with the key and the reason"),
    ):
        c = sub.add_parser(name, help=helptext)
        c.add_argument(
            "--config",
            help="config file (default: $FILTERD_CONFIG, "
            "/etc/filterd/filterd.toml, config/filterd.toml)",
        )
        if name == "serve":
            # internal: a worker process started by `filterd serve` for smtp.workers > 1
            c.add_argument("--worker", choices=["smtp"], help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `filterd` console script."""
    args = _parser().parse_args(argv)
    path = config_module.default_path(args.config, dict(os.environ))
    try:
        settings = config_module.load(path)
        if args.command == "check-config":
            load_or_create_check(settings)
            sys.stdout.write(f"config ok: {path}\n")
            sys.exit(EXIT_OK)
    except ConfigError as exc:
        sys.stderr.write(f"filterd: {exc}\n")
        sys.exit(EXIT_CONFIG)
    logs.configure(sys.stdout, os.environ.get("FILTERD_LOG_LEVEL", "INFO"), cache=True)
    sys.exit(asyncio.run(serve(settings, worker=getattr(args, "worker", None))))


def load_or_create_check(settings: config_module.Settings) -> None:
    """check-config: an existing secret file must be private and long enough."""
    if settings.registry.secret_file.exists():
        load_or_create(settings.registry.secret_file)


async def serve(settings: config_module.Settings, worker: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the exit code.

    `worker="smtp"`: run only the SMTP front end (an extra process of a
    `smtp.workers > 1` set-up; the parent supervises the registry and workers).
    """
    log = logs.get_logger("daemon")
    logs.bind(pid=os.getpid(), role=f"{worker}-worker" if worker else "main")
    try:
        runtime = await asyncio.to_thread(build, settings)
        await runtime.registry.check_layout()
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return EXIT_CONFIG
    except (RegistryUnavailable, FilterdError) as exc:
        log.error("registry_unavailable", error=str(exc))
        return EXIT_UNAVAILABLE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = EXIT_OK
    try:
        async with asyncio.TaskGroup() as group:
            _start_front_ends(group, settings, runtime, stop, worker)
            log.info("started", config=str(settings.path), registry=settings.registry.url)
            await stop.wait()
            log.info("stopping", drain_timeout_s=_DRAIN_TIMEOUT_S)
    except* OSError as group_error:
        for error in group_error.exceptions:
            log.error("front_end_failed", error=str(error))
        code = EXIT_START
    finally:
        await runtime.close()
    log.info("stopped")
    return code


async def _run_smtp(
    settings: config_module.Settings,
    smtp: config_module.SmtpSettings,
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
) -> None:
    """The SMTP relay until `stop`; then drain: no new connections, finish transactions."""
    log = logs.get_logger("smtp")
    host, port = upstream
    hostname = smtp.hostname or socket.gethostname()
    pool = UpstreamPool(host, port, tls=smtp.upstream_tls, local_hostname=hostname)
    handler = RelayHandler(
        smtp,
        runtime.service,
        AccountBook(smtp.accounts),
        pool,
        default_region=settings.registry.default_region,
    )
    server = await _listen(
        "smtp", listen, start_smtp_server(smtp, listen, handler, hostname=hostname)
    )
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.drained(), _DRAIN_TIMEOUT_S)
        handler.close_all()
        await server.wait_closed()
        await pool.close()
        log.info("drained", front_end="smtp")


def _start_front_ends(
    group: asyncio.TaskGroup,
    settings: config_module.Settings,
    runtime: Runtime,
    stop: asyncio.Event,
    worker: str | None,
) -> None:
    """Create a task for each configured front end (a worker runs only its own)."""
    if worker is None:
        group.create_task(_supervise(runtime, stop))
    smtp = settings.smtp
    if smtp is not None and smtp.listen is not None and smtp.upstream is not None:
        group.create_task(
            _run_smtp(settings, smtp, runtime, stop, listen=smtp.listen, upstream=smtp.upstream)
        )
        if worker is None and smtp.workers > 1:
            group.create_task(_run_workers(settings, smtp.workers - 1, stop))
    if settings.smpp is not None and worker is None:
        group.create_task(_run_smpp(settings, settings.smpp, runtime, stop))
    if settings.policy is not None and worker is None:
        group.create_task(_run_policy(settings, settings.policy, runtime, stop))
    if settings.http is not None and worker is None:
        group.create_task(_run_http(settings.http, runtime, stop))


async def _listen(
    name: str, listen: tuple[str, int], starting: Coroutine[Any, Any, asyncio.Server]
) -> asyncio.Server:
    """Await a front end's listener; a bind failure names the key; log the bound address."""
    try:
        server = await starting
    except OSError as exc:
        raise OSError(f"{name}.listen {listen[0]}:{listen[1]}: {exc.strerror}") from exc
    bound = server.sockets[0].getsockname()
    logs.get_logger(name).info("listening", front_end=name, host=bound[0], port=bound[1])
    return server


async def _run_policy(
    settings: config_module.Settings,
    policy: config_module.PolicySettings,
    runtime: Runtime,
    stop: asyncio.Event,
) -> None:
    """The Postfix policy service until `stop`; then finish the requests in flight."""
    log = logs.get_logger("policy")
    accounts = AccountBook(settings.smtp.accounts if settings.smtp is not None else ())
    starting = start_policy_server(
        policy.listen,
        runtime.service,
        accounts,
        default_region=settings.registry.default_region,
    )
    server = await _listen("policy", policy.listen, starting)
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _DRAIN_TIMEOUT_S)
        log.info("drained", front_end="policy")


async def _run_http(
    http: config_module.HttpSettings, runtime: Runtime, stop: asyncio.Event
) -> None:
    """The HTTP front end (unsubscribe, health, metrics) until `stop`."""
    log = logs.get_logger("http")
    if runtime.tokens is None:  # build() makes the keys whenever [http] is set
        raise ConfigError("http", "no token keys")
    front_end = HttpFrontEnd(UnsubscribeSite(runtime.service, runtime.tokens, runtime.senders))
    server = await _listen("http", http.listen, front_end.start(http.listen))
    try:
        await stop.wait()
    finally:
        server.close()
        await front_end.close()
        log.info("drained", front_end="http")


async def _run_smpp(
    settings: config_module.Settings,
    smpp: config_module.SmppSettings,
    runtime: Runtime,
    stop: asyncio.Event,
) -> None:
    """The SMPP relay and its carrier link until `stop`; then unbind both sides."""
    log = logs.get_logger("smpp")
    kw = settings.keywords
    relay = SmppRelay(
        smpp,
        runtime.service,
        runtime.registry,
        Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
        default_region=settings.registry.default_region,
    )
    carrier_task = None
    carrier_stop = asyncio.Event()  # set only once the clients' submits are answered
    if smpp.upstream is not None:
        relay.carrier = CarrierClient(smpp.upstream, relay.from_carrier)
        carrier_task = asyncio.create_task(relay.carrier.run(carrier_stop))
    server = await _listen("smpp", smpp.listen, relay.start())
    try:
        await stop.wait()
    finally:
        server.close()
        await relay.unbind_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _DRAIN_TIMEOUT_S)
        carrier_stop.set()
        if carrier_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(carrier_task, 10)
        log.info("drained", front_end="smpp")


async def _run_workers(settings: config_module.Settings, count: int, stop: asyncio.Event) -> None:
    """Keep `count` extra SMTP worker processes running; on stop, SIGTERM and wait for them."""
    log = logs.get_logger("daemon")
    command = [sys.executable, "-m", "filterd", "serve", "--config", str(settings.path),
               "--worker", "smtp"]  # fmt: skip
    workers: list[asyncio.subprocess.Process] = []
    for _ in range(count):
        workers.append(await asyncio.create_subprocess_exec(*command))
    log.info("workers_started", front_end="smtp", pids=[w.pid for w in workers])
    while not stop.is_set():
        waits = [asyncio.ensure_future(w.wait()) for w in workers]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        for future in [*waits, stopping]:
            future.cancel()
        for index, process in enumerate(workers):
            if process.returncode is not None and not stop.is_set():
                log.error("worker_died", pid=process.pid, code=process.returncode)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)  # back off before a restart
                if not stop.is_set():
                    workers[index] = await asyncio.create_subprocess_exec(*command)
    for process in workers:
        if process.returncode is None:
            process.terminate()
    for process in workers:
        try:
            await asyncio.wait_for(process.wait(), _DRAIN_TIMEOUT_S + 5)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _supervise(runtime: Runtime, stop: asyncio.Event) -> None:
    """Keep the embedded registry server running; note when the registry is unreachable."""
    log = logs.get_logger("daemon")
    healthy = True
    while not stop.is_set():
        if runtime.embedded is not None:
            try:
                await asyncio.to_thread(runtime.embedded.ensure_running)
            except FilterdError as exc:
                log.error("embedded_registry_restart_failed", error=str(exc))
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
