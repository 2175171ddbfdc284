"""The SMTP relay's listener (filterd/smtp/listener.py), end to end against
`filterd serve` as a real process: STARTTLS configured, AUTH only after it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from filterd.model import Kind
from tests.conftest import ServerPool, flush
from tests.helpers import SinkServer
from tests.smtp_helpers import (
    MESSAGE,
    Relay,
    start_filterd,
    stop_filterd,
    write_config,
)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the STARTTLS listener (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=filterd.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_starttls_required_before_auth(server_pool: ServerPool) -> None:
    """With TLS configured: no AUTH offered before STARTTLS, MAIL refused before it;
    after STARTTLS, AUTH works and mail flows. A failed handshake is the client's
    doing: logged at info as smtp_tls_failed, not as an internal error."""
    registry_server = server_pool.get("valkey")
    flush(registry_server)
    home = Path(tempfile.mkdtemp(prefix="tls", dir="/tmp"))
    sink = SinkServer().start()
    cert, key = make_certificate(home)
    config = write_config(
        home, registry_server.url, sink.port, f'tls_cert = "{cert}"\ntls_key = "{key}"'
    )
    process, reader, port = start_filterd(config)
    relay = Relay(process, reader, port, sink, registry_server, home)
    try:
        relay.record("jane@example.com", Kind.CONSENT)
        client = relay.smtp()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        assert client.mail("shop@acme.test")[0] == 530
        client.rset()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        client.ehlo("tool.test")
        assert client.has_extn("auth")
        client.login("newsletter", "pw-news")
        assert client.sendmail("shop@acme.test", ["jane@example.com"], MESSAGE) == {}
        client.quit()
        assert len(sink.handler.messages) == 1
        # a client that answers STARTTLS's 220 with bytes that are no TLS handshake
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"EHLO tool.test\r\nSTARTTLS\r\n")
            seen = b""
            while seen.count(b"220 ") < 2:  # the greeting, then STARTTLS's "go ahead"
                chunk = raw.recv(1024)
                assert chunk
                seen += chunk
            raw.sendall(b"this is not a TLS ClientHello\r\n" * 4)
            with contextlib.suppress(ConnectionError):
                while raw.recv(1024):
                    pass
        failed = reader.wait_for("smtp_tls_failed")  # not smtp_internal_error at error
        assert failed["level"] == "info"
    finally:
        assert stop_filterd(process) == 0
        sink.shutdown()
        shutil.rmtree(home, ignore_errors=True)
