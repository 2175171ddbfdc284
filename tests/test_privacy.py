"""SPEC §5 from the outside: after traffic through every front end (SMTP, policy,
SMPP, HTTP) and every kind of filterctl command, no raw address or phone number
appears in filterd's logs (at DEBUG), in filterctl's stderr, or anywhere in the
registry's keys and values."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import smpplib.client
import smpplib.exceptions

from filterd.storage.embedded import EmbeddedServer
from tests.conftest import ServerPool, flush
from tests.helpers import SinkServer
from tests.smsc import FakeSmsc

BIN = Path(sys.executable).parent
SECRET = "5e" * 32
NUMBER = "10690001"
EMAILS = ("alice.private@example.com", "bob.hidden@example.org", "carol.secret@example.net")
PHONES = ("13912345678", "13987654321", "13811112222")
RAW = [*EMAILS, *PHONES, *(f"86{p}" for p in PHONES)]
"""Strings that must appear nowhere (a phone in national and international digits)."""


def _config(home: Path, registry_url: str, sink_port: int, smsc_port: int) -> Path:
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[smtp]
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink_port}"
hostname = "filterd.test"

[[smtp.accounts]]
username = "newsletter"
password = "pw-news"
sender = "acme"
stream = "commercial"

[smpp]
listen = "127.0.0.1:0"

[smpp.upstream]
host = "127.0.0.1"
port = {smsc_port}
system_id = "filterd"
password = "secret1"

[[smpp.accounts]]
system_id = "promo"
password = "chg-me-1"
sender = "acme"
stream = "commercial"

[[smpp.numbers]]
address = "{NUMBER}"
sender = "acme"

[policy]
listen = "127.0.0.1:0"

[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:1"
""")
    return path


def _ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """filterctl at DEBUG; its output (stdout is the result, stderr the logs)."""
    return subprocess.run(
        [str(BIN / "filterctl"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FILTERD_LOG_LEVEL": "DEBUG"},
    )


def _ports(log: Path, process: subprocess.Popen[bytes]) -> dict[str, int]:
    """The port of each front end, from the JSON log, once filterd says it started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in log.read_text().splitlines() if line]
        if any(r.get("event") == "started" for r in records):
            return {r["front_end"]: r["port"] for r in records if r.get("event") == "listening"}
        if process.poll() is not None:
            break
        time.sleep(0.05)  # polling a file: there is no event to await
    raise AssertionError("filterd did not start")


@pytest.fixture
def world(server_pool: ServerPool) -> Iterator[tuple[Path, dict[str, int], FakeSmsc, str]]:
    """filterd with every front end at DEBUG, logging to a file; the registry server."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="priv", dir="/tmp"))
    sink = SinkServer().start()
    smsc = FakeSmsc().start()
    config = _config(home, registry_server.url, sink.port, smsc.port)
    log = home / "filterd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "filterd"), "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FILTERD_LOG_LEVEL": "DEBUG"},
        )
    try:
        yield config, _ports(log, process), smsc, str(registry_server.socket_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        sink.shutdown()
        smsc.shutdown()


def _policy_request(port: int, recipient: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=newsletter\n"
            + f"recipient={recipient}\nclient_address=127.0.0.1\n\n".encode()
        )
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def _registry_dump(socket_path: str) -> bytes:
    """Every key name and every value in the registry, as one blob of bytes."""
    client = redis.Redis(unix_socket_path=socket_path)
    blob = []
    try:
        for key in client.scan_iter(count=1000):
            blob.append(key)
            value = client.dump(key)
            blob.append(value or b"")
            if client.type(key) == b"stream":
                for _, fields in client.xrange(key):
                    blob.extend(k + b"=" + v for k, v in fields.items())
            elif client.type(key) == b"hash":
                for field, content in client.hgetall(key).items():
                    blob.extend((field, content))
    finally:
        client.close()
    return b"\n".join(blob)


def test_no_raw_address_in_logs_or_registry(
    world: tuple[Path, dict[str, int], FakeSmsc, str],
) -> None:
    """Consent, refusal, check, status, audit, SMTP relay with a drop, a policy
    request, an SMPP submit and an opt-out reply, and a one-click unsubscribe:
    none of the addresses or numbers used shows up in logs or in Redis."""
    config, ports, smsc, registry_socket = world
    log = config.parent / "filterd.log"
    outputs = []
    outputs.append(_ctl(config, "consent", EMAILS[0], "--sender", "acme").stderr)
    outputs.append(_ctl(config, "refuse", PHONES[0], "--all-senders").stderr)
    outputs.append(_ctl(config, "check", EMAILS[1], "--sender", "acme").stderr)
    outputs.append(_ctl(config, "status", PHONES[0]).stderr)
    outputs.append(_ctl(config, "audit", "--to", PHONES[0]).stderr)
    bad = _ctl(config, "consent", "not-an-address", "--sender", "acme")
    assert bad.returncode == 2

    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as client:
        client.login("newsletter", "pw-news")
        refused = client.sendmail(
            "news@acme.example", [EMAILS[0], EMAILS[1]], b"Subject: hi\r\n\r\nhello\r\n"
        )
        assert list(refused) == [EMAILS[1]]  # no consent: dropped; the consented one relayed

    assert b"action=550" in _policy_request(ports["policy"], EMAILS[1])

    smpp = smpplib.client.Client(
        "127.0.0.1", ports["smpp"], timeout=30, allow_unknown_opt_params=True
    )
    smpp.connect()
    try:
        smpp.bind_transceiver(system_id="promo", password="chg-me-1")  # noqa: S106
        statuses: list[int] = []
        smpp.set_message_sent_handler(lambda pdu: statuses.append(pdu.status))
        smpp.send_message(
            source_addr_ton=0, source_addr=NUMBER, dest_addr_ton=1, dest_addr_npi=1,
            destination_addr=f"86{PHONES[0]}", short_message=b"sale",
        )  # fmt: skip
        with contextlib.suppress(smpplib.exceptions.PDUError):
            while not statuses:
                smpp.read_once()
        smsc.send_mo(f"86{PHONES[1]}", NUMBER, b"TD")
    finally:
        with contextlib.suppress(smpplib.exceptions.PDUError, OSError):
            smpp.unbind()
        smpp.disconnect()

    url = _ctl(config, "unsubscribe-url", EMAILS[2], "--sender", "acme").stdout.strip()
    token_path = url.split("/unsubscribe/", 1)[1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports['http']}/unsubscribe/{token_path}",
        data=b"List-Unsubscribe=One-Click",
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200
    outputs.append(_ctl(config, "status", EMAILS[2], "--json").stderr)
    refused_mo = json.loads(_ctl(config, "status", PHONES[1], "--json").stdout)
    assert refused_mo, "the opt-out reply was recorded"  # the traffic really happened

    text = log.read_text() + "\n".join(outputs)
    assert '"event": "decision"' in text or '"event":"decision"' in text
    for raw in RAW:
        assert raw not in text, raw
    stored = _registry_dump(registry_socket)
    for raw in RAW:
        assert raw.encode() not in stored, raw


THIRD_PARTY_RAW = ("frank.other@example.org", "frank.other", "8613611112222", "13611112222",
                   "136 1111 2222")  # fmt: skip
"""A third party's email and number, as written in evidence, source and a file name."""


def _files_under(directory: Path) -> bytes:
    """The bytes of every regular file under `directory` (the AOF, the server's log ...)."""
    return b"\n".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_third_party_addresses_in_free_text_are_masked_in_redis_and_aof() -> None:
    """SPEC §11: evidence and source given to filterctl (consent, refuse, import) that name
    another person's email and phone number are stored masked: neither the raw email nor
    the number (international, national, spaced) is in any Redis key or value, in the
    embedded server's AOF files on disk, or in filterctl's logs; the masked forms are."""
    home = Path(tempfile.mkdtemp(prefix="priv", dir="/tmp"))
    (home / "filterd.toml").write_text(
        '[registry]\nurl = "embedded"\ndata_dir = "var"\nsecret_file = "var/secret"\n'
        'default_region = "CN"\n'
    )
    config = home / "filterd.toml"
    server = EmbeddedServer(home / "var")
    server.acquire()  # held open so that the keys can be read after filterctl leaves
    try:
        evidence = "referred by frank.other@example.org, +8613611112222 or 136 1111 2222"
        results = [
            _ctl(config, "refuse", PHONES[0], "--sender", "acme", "--evidence", evidence,
                 "--source", "crm of frank.other@example.org"),
            _ctl(config, "consent", EMAILS[0], "--sender", "acme", "--evidence", evidence),
        ]  # fmt: skip
        rows = home / "frank.other@example.org.csv"
        rows.write_text(
            f"{PHONES[1]},,,called by 13611112222\n{EMAILS[1]},,frank.other@example.org,\n"
        )
        results.append(_ctl(config, "import", str(rows), "--action", "refuse", "--sender", "acme"))
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        stored = _registry_dump(str(server.socket_path))
        on_disk = _files_under(home / "var")
    finally:
        server.release()
        shutil.rmtree(home, ignore_errors=True)
    logs = "\n".join(r.stderr + r.stdout for r in results)
    assert b"f***@example.org" in stored  # the facts, the sources and the audit are there
    assert b"f***@example.org, +86136****2222 or 13611****22" in on_disk
    assert b"import:f***@example.org.csv" in on_disk
    for raw in THIRD_PARTY_RAW:
        assert raw.encode() not in stored, raw
        assert raw.encode() not in on_disk, raw
        assert raw not in logs, raw
