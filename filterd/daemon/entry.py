"""`filterd`'s command line: `serve` and `check-config`, `--version`, exit codes.

The one place of the daemon that reads the environment (FILTERD_LOG_LEVEL,
NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID, FILTERD_CONFIG) and turns the
command line into a call of `filterd.daemon.serve.serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

import filterd
from filterd import logs
from filterd.bootstrap import dkim_signer
from filterd.config.load import load as load_config
from filterd.config.search import default_path
from filterd.daemon.serve import EXIT_CONFIG, EXIT_OK, EXIT_START, EXIT_UNAVAILABLE, serve
from filterd.errors import ConfigError
from filterd.metrics_dir import MetricsDir
from filterd.notify import Notifier
from filterd.secret import load_or_create
from filterd.settings import Settings

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
            # internal: a worker process started by `filterd serve` for smtp/smpp/cmpp.workers > 1
            c.add_argument("--worker", choices=["smtp", "smpp", "cmpp"], help=argparse.SUPPRESS)
            c.add_argument("--parent", type=int, help=argparse.SUPPRESS)
            c.add_argument("--hub-fd", type=int, help=argparse.SUPPRESS)
            c.add_argument("--metrics-dir", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `filterd` console script."""
    args = _parser().parse_args(argv)
    level = os.environ.get("FILTERD_LOG_LEVEL", "INFO")
    wrong_level = logs.unknown_level(level)
    if wrong_level is not None:
        sys.stderr.write(f"filterd: {wrong_level}\n")
        sys.exit(EXIT_CONFIG)
    try:
        path = default_path(args.config, dict(os.environ))
        settings = load_config(path)
        if args.command == "check-config":
            load_or_create_check(settings)
            sys.stdout.write(f"config ok: {path}\n")
            sys.exit(EXIT_OK)
    except ConfigError as exc:
        sys.stderr.write(f"filterd: {exc}\n")
        sys.exit(EXIT_CONFIG)
    logs.configure(sys.stdout, level, cache=True, batched=True)
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


def load_or_create_check(settings: Settings) -> None:
    """check-config: an existing secret file must be private and long enough; a DKIM
    key must sign."""
    if settings.registry.secret_file.exists():
        load_or_create(settings.registry.secret_file)
    dkim_signer(settings)
