"""systemd notify messages: what reaches a NOTIFY_SOCKET, and silence without one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from filterd.notify import Notifier


def _listener(address: str) -> socket.socket:
    """A datagram socket bound where systemd would listen."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_ready_stopping_and_watchdog_reach_the_socket(tmp_path: Path) -> None:
    """READY=1 with a STATUS line, then STOPPING=1 and WATCHDOG=1, arrive as datagrams."""
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        notifier = Notifier(path)
        assert notifier.enabled
        notifier.ready("serving 2 front end(s)")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving 2 front end(s)"
        notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.reloading()
        lines = sock.recv(4096).split(b"\n")
        assert lines[0] == b"RELOADING=1"
        assert lines[1].startswith(b"MONOTONIC_USEC=")
        assert int(lines[1].split(b"=")[1]) > 0


def test_abstract_socket_address_is_supported() -> None:
    """An address starting with '@' names a socket in the abstract namespace."""
    name = f"filterd-test-{os.getpid()}"
    with _listener("\0" + name) as sock:
        Notifier("@" + name).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    """No NOTIFY_SOCKET, a relative one, or one nobody listens on: calls return quietly."""
    for address in (None, "", "relative/path"):
        notifier = Notifier(address)
        assert not notifier.enabled
        notifier.ready("x")
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.enabled
    gone.ready("x")  # ENOENT is swallowed: a lost notification never stops the relay
    gone.watchdog()
