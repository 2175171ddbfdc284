"""Descriptor limits of the serving process (filterd/process_limits.py): the soft
RLIMIT_NOFILE raised to the hard one at start, and asyncio's accept-failure reports
turned into one warning per interval while every other report goes on as before."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import subprocess
import sys
from typing import Any

from filterd import logs
from filterd.process_limits import ACCEPT_LOG_EVERY_S, AcceptErrors, quiet_accept_errors


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    """A process started with soft 256 / hard 1024 descriptors runs with 1024 / 1024
    after raise_nofile_limit (checked in a child, so this test process keeps its own)."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))\n"
        "from filterd.process_limits import raise_nofile_limit\n"
        "print(raise_nofile_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "(1024, 1024) (1024, 1024)"


class FakeLoop:
    """Records what reaches asyncio's default exception handler."""

    def __init__(self) -> None:
        self.passed_on: list[dict[str, Any]] = []

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Keep the context instead of logging it."""
        self.passed_on.append(context)


def test_accept_failures_are_counted_and_logged_once_per_interval() -> None:
    """Many EMFILE accept reports within one interval give one `accept_backoff` warning
    (with the count), the next interval another; any other report is passed on to
    asyncio's default handler untouched."""
    now = [100.0]
    handler = AcceptErrors(clock=lambda: now[0])
    loop = FakeLoop()
    failure = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }
    other = {"message": "Task exception was never retrieved"}
    stream = io.StringIO()
    logs.configure(stream, "INFO")
    try:
        for _ in range(50):
            handler(loop, failure)  # type: ignore[arg-type]
        handler(loop, other)  # type: ignore[arg-type]
        now[0] += ACCEPT_LOG_EVERY_S
        handler(loop, failure)  # type: ignore[arg-type]
    finally:
        logs.configure(sys.stderr, "WARNING")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = [line for line in lines if line["event"] == "accept_backoff"]
    assert [(w["level"], w["failures"], w["error"]) for w in warnings] == [
        ("warning", 1, "Too many open files"),
        ("warning", 50, "Too many open files"),
    ]
    assert handler.total == 51
    assert loop.passed_on == [other]


def test_the_handler_is_installed_on_a_running_loop() -> None:
    """quiet_accept_errors puts the handler on the loop it is given."""

    async def run() -> bool:
        loop = asyncio.get_running_loop()
        handler = quiet_accept_errors(loop)
        return loop.get_exception_handler() is handler

    assert asyncio.run(run())
