"""One client connection of the SMTP relay (filterd/smtp/connection.py): the login
gate around AUTH, aiosmtpd's deprecated login_data kept quiet, connection caps and
the idle timeout, RCPT outside a transaction, draining on SIGTERM (against
`filterd serve` as a real process), and the fast reading of MAIL/RCPT paths
compared with aiosmtpd's parser."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from filterd.guard import ConnectionTable, LoginGate
from filterd.model import Kind
from filterd.settings import ListenerLimits
from filterd.smtp.connection import Connections, RelaySMTP
from filterd.smtp.inbound import RelayHandler
from filterd.smtp.transaction import Transactions
from tests.conftest import ServerPool, flush
from tests.helpers import LogReader, SinkServer
from tests.smtp_helpers import (
    FILTERD,
    MESSAGE,
    Relay,
    start_filterd,
    stop_filterd,
    write_config,
)


def test_successful_auth_logs_no_deprecation_warning(server_pool: ServerPool) -> None:
    """A successful AUTH (PLAIN and LOGIN) is logged as filterd's own `auth` line and
    the session may send; nothing on stdout or stderr mentions aiosmtpd's deprecated
    `Session.login_data`."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="smtp", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(home, registry_server.url, sink.port)
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    try:
        reader = LogReader(process)
        port = int(reader.wait_for("listening")["port"])  # type: ignore[call-overload]
        for mechanism in ("PLAIN", "LOGIN"):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("tool.test")
                client.user, client.password = "newsletter", "pw-news"
                authenticator = client.auth_plain if mechanism == "PLAIN" else client.auth_login
                assert client.auth(mechanism, authenticator, initial_response_ok=False)[0] == 235
                assert client.mail("shop@acme.test")[0] == 250
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stdout is not None
        assert process.stderr is not None
        stdout = reader.pending + process.stdout.read()
        stderr = process.stderr.read()
    finally:
        stop_filterd(process)
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    logins = [line for line in stdout.decode().splitlines() if '"event":"auth"' in line]
    assert len(logins) == 2
    assert all('"ok":true' in line for line in logins)
    assert b"login_data" not in stdout
    assert b"login_data" not in stderr


def test_sigterm_finishes_open_transaction(relay: Relay) -> None:
    """SIGTERM while a transaction is open: the client can still finish it, then filterd exits 0."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    client.mail("shop@acme.test")
    assert client.rcpt("jane@example.com")[0] == 250
    relay.process.send_signal(signal.SIGTERM)
    relay.log.wait_for("stopping")
    assert client.data(MESSAGE)[0] == 250
    client.close()
    relay.process.wait(30)
    assert relay.process.returncode == 0
    assert len(relay.sink.handler.messages) == 1


def test_failed_logins_slow_down_the_next_auth_from_that_peer(relay: Relay) -> None:
    """Each wrong password from a peer makes its next AUTH wait longer before it is
    taken (0.5 s, then 1 s, ...); a right password clears the record (the next
    failure starts again at 0.5 s)."""

    def wrong() -> None:  # one AUTH PLAIN (login() would also try LOGIN)
        client = relay.smtp()
        client.user, client.password = "newsletter", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
        client.close()

    wrong()
    wrong()  # waits 0.5 s
    relay.login().quit()  # waits 1 s, then succeeds and clears
    wrong()
    wrong()  # waits 0.5 s again
    delays = [relay.log.wait_for("login_delayed")["delay_s"] for _ in range(3)]
    assert delays == [0.5, 1.0, 0.5]


def _parsed(parser: SMTP, arg: str, stock: bool) -> tuple[str | None, str | None] | str:
    """What a _getaddr gives for `arg`: its result, or the name of what it raised."""
    try:
        return SMTP._getaddr(parser, arg) if stock else parser._getaddr(arg)
    except Exception as exc:  # aiosmtpd's parser raises IndexError on some inputs
        return type(exc).__name__


_PATH_TEXT = st.text(alphabet='aZ09.-+=?_@<> \t\n()"\\[],:;é!~', max_size=30)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        _PATH_TEXT,
        st.builds(lambda a, b: f"<{a}>{b}", _PATH_TEXT, _PATH_TEXT),
        st.builds(lambda a, b, c: f"<{a}@{b}>{c}", _PATH_TEXT, _PATH_TEXT, _PATH_TEXT),
        st.from_regex(
            r"<[a-z0-9.+=?-]{1,8}@[a-z0-9.-]{1,8}>([ \t\n][A-Z=0-9 (]{0,8})?", fullmatch=True
        ),
    ),
    st.sampled_from([0, 4, 64]),
)
@example("<1rcpt@example.com>", 0)
@example("<a.b+c@d-e.example.com> SIZE=100 BODY=8BITMIME", 0)
@example("<a@b.c>  SIZE=1", 0)
@example("<a@b.c> (comment) X", 0)
@example("<a@b.c> \nX", 0)
@example("<=?utf-8?q?a?=@b.c>", 0)
@example("<a..b@c.d>", 0)
@example("<.a@c.d>", 0)
@example("<abcdef@c.d>", 4)
@example("<>", 0)
@example("<", 0)
def test_recipient_paths_parse_as_aiosmtpd_parses_them(arg: str, local_limit: int) -> None:
    """The relay's own reading of MAIL FROM / RCPT TO paths (a fast path for
    `<local@domain>`) gives exactly what aiosmtpd's parser gives for any text:
    the same address and parameters, the same None for a malformed or too-long
    path, the same exception."""
    parser = RelaySMTP.__new__(RelaySMTP)
    parser.local_part_limit = local_limit
    assert _parsed(parser, arg, stock=False) == _parsed(parser, arg, stock=True)


def test_connection_caps_and_idle_timeout(server_pool: ServerPool) -> None:
    """Beyond max_connections_per_address a client gets 421 4.7.0 and is closed; a
    client silent for idle_timeout is closed; a freed place takes a new client."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="caps", dir="/tmp"))
    sink = SinkServer().start()
    config = write_config(
        home, registry_server.url, sink.port, 'idle_timeout = "1s"\nmax_connections_per_address = 2'
    )
    process, _reader, port = start_filterd(config)
    try:
        first = socket.create_connection(("127.0.0.1", port), timeout=15)
        second = socket.create_connection(("127.0.0.1", port), timeout=15)
        assert first.recv(1024).startswith(b"220 ")
        assert second.recv(1024).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=15) as third:
            answer = b""
            while chunk := third.recv(1024):
                answer += chunk
            assert answer.startswith(b"421 4.7.0")
        assert first.recv(1024) == b""  # closed after 1 s of silence
        assert second.recv(1024) == b""
        first.close()
        second.close()
        client = smtplib.SMTP("127.0.0.1", port, timeout=15)
        client.login("newsletter", "pw-news")
        client.quit()
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)


def test_rcpt_without_mail_is_503_even_for_a_bad_address(relay: Relay) -> None:
    """After a finished transaction, a RCPT without a new MAIL gets aiosmtpd's 503 (no
    transaction), not admission's 553, however bad its address."""
    relay.record("jane@example.com", Kind.CONSENT)
    client = relay.login()
    assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
    assert client.rcpt("jane@")[0] == 503
    assert client.rcpt("jane@example.com")[0] == 503
    client.quit()


def test_the_ehlo_reply_is_written_at_once() -> None:
    """The EHLO reply's lines reach the transport in one write (aiosmtpd alone writes
    each line on its own, a send each); the client reads the same lines, and HELP
    still knows EHLO."""
    writes: list[bytes] = []

    class Counted(RelaySMTP):
        """Keeps what each write to its transport carried."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            write = cast(asyncio.WriteTransport, transport).write

            def counted(data: Any) -> None:
                writes.append(bytes(data))
                write(data)

            transport.write = counted  # type: ignore[attr-defined]
            super().connection_made(transport)

    async def main() -> tuple[list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        transactions = Transactions(cast(Any, None))
        handler = RelayHandler.__new__(RelayHandler)
        handler.transactions = transactions
        handler.envelope_stage = cast(Any, type("Stage", (), {"intake_only": False}))
        connections = Connections(ConnectionTable("smtp", ListenerLimits(300.0)), transactions)

        def factory() -> RelaySMTP:
            return Counted(handler, connections=connections, envelope_stage=cast(Any, None),
                           gate=LoginGate(), hostname="filterd.test", auth_required=False,
                           auth_require_tls=False, authenticator=handler.authenticate)  # fmt: skip

        server = await loop.create_server(factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        await reader.readline()
        writer.write(b"EHLO tool.test\r\nHELP EHLO\r\n")
        lines = [await reader.readline()]
        while not lines[-1].startswith(b"250 Syntax"):
            lines.append(await reader.readline())
        writer.close()
        server.close()
        await server.wait_closed()
        return lines, b"".join(lines[:-1])

    lines, ehlo = asyncio.run(main())
    assert writes[1] == ehlo
    assert [line[:4] for line in lines] == [b"250-"] * (len(lines) - 2) + [b"250 ", b"250 "]
    assert b"250-PIPELINING\r\n" in lines
    assert b"250-AUTH LOGIN PLAIN\r\n" in lines
    assert lines[-1] == b"250 Syntax: EHLO hostname\r\n"


def test_each_connection_finds_the_same_commands_mechanisms_and_hooks() -> None:
    """RelaySMTP lists no attribute to aiosmtpd and builds its command and AUTH tables
    from names listed once per class, and RelayHandler lists only its hook names (so
    that a new connection does not walk every attribute): a connection still gets
    every command, AUTH mechanism and handler hook, bound to itself, that aiosmtpd
    would have found by listing every attribute, the EHLO hook in its 5-argument form,
    and no mechanism it was told to leave out."""

    class Everything:
        """Lists every attribute, as an object without the shortcut would."""

        def __init__(self, wrapped: object) -> None:
            self.wrapped = wrapped

        def __dir__(self) -> list[str]:
            return object.__dir__(self.wrapped)

        def __getattr__(self, name: str) -> object:
            return getattr(self.wrapped, name)

    handler = RelayHandler.__new__(RelayHandler)
    loop = asyncio.new_event_loop()  # aiosmtpd would make one of its own, left open
    try:
        options: dict[str, Any] = {"hostname": "filterd.test", "auth_required": False, "loop": loop}
        unused: Any = None  # no connection is made
        made = {
            excluded: RelaySMTP(handler, connections=unused, envelope_stage=unused,
                                gate=LoginGate(), auth_exclude_mechanism=excluded, **options)
            for excluded in ((), ("LOGIN",))
        }  # fmt: skip
        full = SMTP.__new__(SMTP)
        SMTP.__init__(full, Everything(handler), **options)
    finally:
        loop.close()
    fast = made[()]
    every_name = object.__dir__(fast)
    commands = {name.removeprefix("smtp_") for name in every_name if name.startswith("smtp_")}
    assert set(fast._smtp_methods) == commands
    assert fast._smtp_methods["EHLO"] == fast.smtp_EHLO
    assert set(fast._auth_methods) == set(full._auth_methods) == {"LOGIN", "PLAIN"}
    assert fast._auth_methods["PLAIN"] == (fast.auth_PLAIN, True)
    assert set(made["LOGIN",]._auth_methods) == {"PLAIN"}
    assert set(fast._handle_hooks) == set(full._handle_hooks)
    assert {"EHLO", "MAIL", "RCPT", "DATA", "RSET", "exception"} <= set(fast._handle_hooks)
    assert fast._ehlo_hook_ver == "new"


def test_an_ended_connection_is_freed_without_the_cyclic_collector() -> None:
    """A connection that ended, by QUIT or by its client leaving mid-session (its
    handler cancelled), is freed by reference counting as soon as it ends: aiosmtpd's
    self-references and the cancelled handler's traceback are dropped, so a storm of
    dropped connections leaves nothing for one long full collection to free at once."""

    async def main() -> list[RelaySMTP | None]:
        loop = asyncio.get_running_loop()
        connections = Connections(
            ConnectionTable("smtp", ListenerLimits(300.0)), Transactions(cast(Any, None))
        )
        made: list[weakref.ref[RelaySMTP]] = []

        def factory() -> RelaySMTP:
            connection = RelaySMTP(
                RelayHandler.__new__(RelayHandler),
                connections=connections,
                envelope_stage=cast(Any, None),  # no MAIL or RCPT in this test
                gate=LoginGate(),
                hostname="filterd.test",
                auth_required=False,
            )
            made.append(weakref.ref(connection))
            return connection

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"QUIT\r\n")
        assert (await reader.readline()).startswith(b"221 ")
        assert await reader.read() == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.close()  # gone mid-session: the handler is cancelled
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(made) == 2 and not connections.open:
                break
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return [ref() for ref in made]

    gc.disable()
    try:
        alive = asyncio.run(main())
    finally:
        gc.enable()
    assert len(alive) == 2
    assert alive == [None, None]
