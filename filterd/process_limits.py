"""Descriptor limits of the serving process (SPEC §11: descriptor exhaustion never
stops the daemon).

- `raise_nofile_limit`: at start, the soft RLIMIT_NOFILE is raised to the hard
  limit (the unit sets `LimitNOFILE=`), so the listeners' caps, not the
  kernel's default of 1,024, bound the connections.
- `quiet_accept_errors`: when descriptors do run out, asyncio's accept loop
  already backs off (it stops accepting on that listener for a second and tries
  again) but reports every failure at ERROR with a traceback. This exception
  handler turns those reports into one warning line per `ACCEPT_LOG_EVERY_S`
  (`accept_backoff`, with how many were seen) and leaves every other report to
  asyncio's default handler.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from filterd.logs import get_logger

log = get_logger("daemon")

ACCEPT_LOG_EVERY_S = 10.0
_ACCEPT_FAILED = "socket.accept() out of system resource"
"""asyncio's message when accept() fails with EMFILE, ENFILE, ENOBUFS or ENOMEM."""


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; return (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an infinite hard limit the kernel refuses
            log.warning("nofile_limit_kept", soft=soft, hard=hard, error=str(exc))
            return soft, hard
        soft = hard
    return soft, hard


class AcceptErrors:
    """A loop exception handler that rate-limits asyncio's accept-failure reports."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._seen = 0
        self._logged_at = -ACCEPT_LOG_EVERY_S
        self.total = 0
        """Accept failures seen since start."""

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Count an accept failure (logged at most once per interval); pass others on."""
        if context.get("message") != _ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        self.total += 1
        self._seen += 1
        now = self._clock()
        if now - self._logged_at >= ACCEPT_LOG_EVERY_S:
            error = context.get("exception")
            log.warning(
                "accept_backoff",
                error=error.strerror if isinstance(error, OSError) else str(error),
                failures=self._seen,
                retry_s=1.0,
            )
            self._seen, self._logged_at = 0, now


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> AcceptErrors:
    """Install the handler on `loop`; return it (for its count)."""
    handler = AcceptErrors()
    loop.set_exception_handler(handler)
    return handler
