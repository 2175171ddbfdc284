"""systemd's notify protocol (sd_notify): READY, STOPPING, RELOADING, STATUS, WATCHDOG.

A datagram of `KEY=value` lines to the unix socket systemd names in
NOTIFY_SOCKET (a path, or `@name` for the abstract namespace). The daemon
reads the environment and hands the address in; without one every call does
nothing, so the same code runs under systemd and outside it. Errors are
ignored: a lost notification must never stop the relay.
"""

from __future__ import annotations

import contextlib
import socket
import time


class Notifier:
    """Sends notifications to one NOTIFY_SOCKET address (or nowhere)."""

    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        if address and (address.startswith("/") or address.startswith("@")):
            self._address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return self._address is not None

    def send(self, *lines: str) -> None:
        """Send `KEY=value` lines in one datagram; do nothing without a socket."""
        if self._address is None:
            return
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.setblocking(False)
            sock.sendto("\n".join(lines).encode(), self._address)

    def ready(self, status: str) -> None:
        """All front ends listen."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload (SIGHUP) starts (with the monotonic time newer systemd asks for)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        """Draining before exit."""
        self.send("STOPPING=1", "STATUS=draining")

    def watchdog(self) -> None:
        """Still alive (the event loop runs)."""
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status for `systemctl status`."""
        self.send(f"STATUS={text}")
