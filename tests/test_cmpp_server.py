"""The CMPP server (filterd/cmpp/server.py) over loopback: connection caps and the idle
timeout of its listener, status reports and consumers' replies from the ISMG reaching
the SP's connection (across versions), CMPP_TERMINATE at shutdown; and `filterd serve`
with a [cmpp] table as a real process between an SP client (filterd's codec, and
cmppy as an independent one) and the fake ISMG."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cmppy.request import ConnectReq, SubmitReq
from cmppy.response import parse_response

from filterd.cmpp.header import V20, V30
from filterd.cmpp.pdu import ActiveTest, ActiveTestResp, Deliver, Terminate
from filterd.cmpp.report import decode_report
from filterd.keywords import Keywords
from filterd.model import Kind, MessageClass
from filterd.settings import CmppAccount, KeywordSettings
from tests.cmpp_ismg import FakeIsmg
from tests.cmpp_relay_helpers import (
    JANE,
    NUMBER,
    SECRET,
    SP_ID,
    SP_SECRET,
    CmppClient,
    in_process_relay,
    limits,
    record,
    settings,
)
from tests.helpers import LogReader, RedisProcess

FILTERD = str(Path(sys.executable).parent / "filterd")


@pytest.fixture
def ismg() -> Iterator[FakeIsmg]:
    """A fake ISMG."""
    server = FakeIsmg().start()
    yield server
    server.shutdown()


def test_connection_caps_and_idle_timeout(valkey_server: RedisProcess) -> None:
    """With max_connections_per_address = 1 a second connection from the address is
    closed at once, unanswered; a connection that sends nothing is closed at the idle
    timeout."""

    async def main() -> None:
        cmpp = settings(None, limits=limits(idle_s=1.0, total=10, per_address=1))
        async with in_process_relay(cmpp, valkey_server.url) as (_, port):
            first = await CmppClient.open(port)
            second = await CmppClient.open(port)
            assert await second.closed(5)
            assert second.received == []
            started = time.monotonic()
            assert await first.closed(10)
            assert time.monotonic() - started >= 0.5
            await first.close()
            await second.close()

    asyncio.run(main())


@pytest.mark.parametrize(("client_version", "ismg_version"), [(V30, V30), (V20, V30), (V30, V20)])
def test_status_report_reaches_the_submitting_sp(
    valkey_server: RedisProcess, ismg: FakeIsmg, client_version: int, ismg_version: int
) -> None:
    """A status report the ISMG sends on a forwarded submit reaches the SP's connection
    with filterd's Msg_Id, in the SP's own version's layout."""

    async def main() -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        cmpp = settings(ismg, version=ismg_version)
        async with in_process_relay(cmpp, valkey_server.url) as (_, port):
            client = await CmppClient.open(port)
            assert (await client.connect(version=client_version)).status == 0
            answer = await client.submit(JANE, registered_delivery=1)
            assert answer.result == 0
            result = await asyncio.to_thread(ismg.send_report, ismg.msg_ids[-1], JANE)
            assert result == 0
            deliver = await client.read()
            assert isinstance(deliver, Deliver)
            report = decode_report(deliver.msg_content, client_version)
            assert (report.msg_id, report.stat, report.dest_terminal_id) == (
                answer.msg_id,
                "DELIVRD",
                JANE,
            )
            await client.close()

    asyncio.run(main())


def test_opt_out_reply_is_recorded_and_passed_to_the_sp(
    valkey_server: RedisProcess, ismg: FakeIsmg
) -> None:
    """A consumer's TD to the service number (with an extension) is answered 0 once the
    refusal is recorded, passed to the sender's SP connection, and the next submit to
    that consumer gets Result 64."""

    async def main() -> None:
        await record(valkey_server.url, JANE, Kind.CONSENT)
        async with in_process_relay(settings(ismg), valkey_server.url) as (_, port):
            client = await CmppClient.open(port)
            assert (await client.connect()).status == 0
            result = await asyncio.to_thread(ismg.send_mo, "86" + JANE, NUMBER + "01", b"TD")
            assert result == 0
            mo = await client.read()
            assert isinstance(mo, Deliver)
            assert (mo.registered_delivery, mo.msg_content) == (0, b"TD")
            assert (await client.submit(JANE)).result == 64
            await client.close()

    asyncio.run(main())


def test_shutdown_terminates_clients(valkey_server: RedisProcess) -> None:
    """Stopping the relay sends each logged-in client CMPP_TERMINATE and closes it."""

    async def main() -> None:
        async with in_process_relay(settings(None), valkey_server.url) as (relay, port):
            client = await CmppClient.open(port)
            assert (await client.connect()).status == 0
            await relay.close_all()
            assert isinstance(await client.read(), Terminate)
            await client.close()

    asyncio.run(main())


def _config(home: Path, registry_url: str, ismg_port: int) -> Path:
    """A config with only [registry] and [cmpp] (linked to the fake ISMG on `ismg_port`)."""
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[cmpp]
listen = "127.0.0.1:0"

[cmpp.upstream]
host = "127.0.0.1"
port = {ismg_port}
sp_id = "901234"
shared_secret = "secret"
version = "2.0"

[[cmpp.accounts]]
sp_id = "{SP_ID}"
shared_secret = "{SP_SECRET}"
sender = "acme"
stream = "commercial"

[[cmpp.numbers]]
address = "{NUMBER}"
sender = "acme"
""")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def serving(
    registry: RedisProcess, ismg: FakeIsmg
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`filterd serve` with [cmpp] linked to `ismg` (logged in, 2.0); the process and the
    CMPP port. Killed at the end if still running."""
    home = Path(tempfile.mkdtemp(prefix="cmpp", dir="/tmp"))
    path = _config(home, registry.url, ismg.port)
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )
    try:
        log = LogReader(process)
        while (entry := log.wait_for("listening")).get("front_end") != "cmpp":
            pass
        ismg.wait_logged_in()
        yield process, int(str(entry["port"]))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()
        shutil.rmtree(home, ignore_errors=True)


def test_filterd_serve_relays_cmpp(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """`filterd serve` with [cmpp]: it logs in to the ISMG (2.0 here), listens, relays a
    3.0 client's permitted submit to the ISMG and refuses one to a consumer without
    consent; on SIGTERM the client gets CMPP_TERMINATE and serve exits 0."""
    with serving(valkey_server, ismg) as (process, port):
        assert ismg.versions() == [V20]

        async def client_side() -> None:
            await record(valkey_server.url, JANE, Kind.CONSENT)
            client = await CmppClient.open(port)
            assert (await client.connect()).status == 0
            assert (await client.submit(JANE)).result == 0
            assert (await client.submit("13800138009")).result == 65
            process.send_signal(signal.SIGTERM)
            assert isinstance(await client.read(), Terminate)
            await client.close()

        asyncio.run(client_side())
        assert process.wait(30) == 0
        assert [s.dest_terminal_ids for s in ismg.submits] == [(JANE,)]


def _exchange(peer: socket.socket, message: bytes) -> Any:
    """Send a message cmppy built; cmppy's reading of the answer."""
    peer.sendall(message)
    head = _receive(peer, 4)
    return parse_response(head + _receive(peer, int.from_bytes(head, "big") - 4))


def _receive(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = peer.recv(size - len(data))
        assert chunk, "filterd closed the connection"
        data += chunk
    return data


def test_cmppy_client_through_filterd_serve(valkey_server: RedisProcess, ismg: FakeIsmg) -> None:
    """cmppy (an independent CMPP 3.0 client) logs in to `filterd serve` with the account's
    secret (a wrong one gets Status 3), and its UCS2 submits get Result 0 for a consumer
    with consent (forwarded to the ISMG) and 65 for one without."""
    asyncio.run(record(valkey_server.url, JANE, Kind.CONSENT))
    with serving(valkey_server, ismg) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as peer:
            assert _exchange(peer, ConnectReq(SP_ID, "guess").message).status == 3
        with socket.create_connection(("127.0.0.1", port), timeout=30) as peer:
            login = _exchange(peer, ConnectReq(SP_ID, SP_SECRET).message)
            assert (login.status, login.version) == (0, 0x30)
            sent = SubmitReq(
                SP_ID, "【Acme】春季特卖", src_id=NUMBER, dest_terminal_id=["86" + JANE]
            )
            assert _exchange(peer, sent.message).result == 0
            other = SubmitReq(SP_ID, "特卖", src_id=NUMBER, dest_terminal_id=["8613800138009"])
            assert _exchange(peer, other.message).result == 65
    [forwarded] = ismg.submits
    assert forwarded.dest_terminal_ids == ("86" + JANE,)
    assert forwarded.msg_content.decode("utf-16-be") == "【Acme】春季特卖"


def test_reload_takes_new_accounts(valkey_server: RedisProcess) -> None:
    """After reload() a new [[cmpp.accounts]] entry logs in; a session logged in before
    with an account the new config drops keeps it."""

    async def main() -> None:
        async with in_process_relay(settings(None), valkey_server.url) as (relay, port):
            early = await CmppClient.open(port)
            assert (await early.connect()).status == 0
            newcomer = CmppAccount("900003", "new-one", "acme", MessageClass.COMMERCIAL)
            kw = KeywordSettings()
            relay.reload(
                dataclasses.replace(relay.settings, accounts=(newcomer,)),
                Keywords.from_lists(kw.opt_out, kw.opt_in, kw.help),
            )
            late = await CmppClient.open(port)
            assert (await late.connect("900003", "new-one")).status == 0
            early.send(ActiveTest(5))
            assert await early.read() == ActiveTestResp(5)
            gone = await CmppClient.open(port)
            assert (await gone.connect()).status == 2
            for client in (early, late, gone):
                await client.close()

    asyncio.run(main())
