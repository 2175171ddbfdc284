"""`filterctl`: the registry admin CLI's entry point, the one place of it that reads
the environment (FILTERD_LOG_LEVEL, FILTERD_CONFIG).

stdout carries only the command's result (text, or one JSON document with
--json); diagnostics and logs go to stderr. Exit codes: filterd.cli.exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from filterd import logs
from filterd.cli.commands import Invocation
from filterd.cli.exits import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_UNAVAILABLE, EXIT_USAGE
from filterd.cli.parsing import parser
from filterd.config.load import load as load_config
from filterd.config.search import default_path
from filterd.errors import ConfigError, FilterdError, RegistryUnavailable, UsageError


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `filterctl` console script.

    A reader that closes stdout early (`filterctl export | head -1`) ends the
    command quietly with EXIT_PIPE: no traceback, and stdout is pointed at
    /dev/null so that the interpreter's last flush has nowhere to fail.
    """
    try:
        try:
            code: int | str | None = run(argv, sys.stdout, sys.stderr)
        finally:  # also after --help, --version and usage errors (SystemExit)
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = EXIT_PIPE
    sys.exit(code)


def run(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    """Run one command; return its exit code."""
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.config = getattr(args, "config", None)
    log_level = os.environ.get("FILTERD_LOG_LEVEL", "WARNING")
    wrong_level = logs.unknown_level(log_level)
    if wrong_level is not None:
        err.write(f"filterctl: {wrong_level}\n")
        return EXIT_USAGE
    logs.configure(err, log_level)
    try:
        settings = load_config(default_path(args.config, dict(os.environ)))
        command = Invocation(args, settings, out, err, log_level=log_level)
        command.validate()
        return asyncio.run(command.execute())
    except (UsageError, ConfigError) as exc:
        err.write(f"filterctl: {exc}\n")
        return EXIT_USAGE
    except RegistryUnavailable as exc:
        err.write(f"filterctl: registry unreachable: {exc}\n")
        return EXIT_UNAVAILABLE
    except FilterdError as exc:
        err.write(f"filterctl: {exc}\n")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        err.write("filterctl: interrupted\n")
        return EXIT_INTERRUPTED
