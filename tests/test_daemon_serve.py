"""`filterd serve` (filterd/daemon/serve.py), run as a real subprocess: with only a
[registry] section it starts its embedded registry server, logs JSON lines (a
"started" event), and on SIGTERM exits 0 and stops the server it started; it runs
the policy service, the HTTP front end and the decision API when configured."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from filterd.storage.embedded import answers_ping
from tests.daemon_helpers import (
    FILTERD,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LineReader,
    environment,
    serve,
    serving,
    wait_pid_gone,
)
from tests.helpers import LogReader, RedisProcess


def test_serve_starts_logs_json_and_stops_on_sigterm(serve_config: Path) -> None:
    """serve logs JSON lines and "started"; on SIGTERM it exits 0 and stops its server.

    The embedded server answers on data_dir/registry.sock while serve runs; after
    the exit its process is gone and the socket no longer answers.
    """
    data_dir = serve_config.parent / "data"
    sock = data_dir / "registry.sock"
    server_pid: int | None = None
    with subprocess.Popen(
        [str(FILTERD), "serve", "--config", str(serve_config)],
        cwd=serve_config.parent,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None
            reader = LineReader(proc.stdout)
            started = reader.until_event("started", START_TIMEOUT_S)
            assert started["level"] == "info"
            assert started["component"] == "daemon"
            assert started["registry"] == "embedded"
            assert started["config"] == str(serve_config)

            assert answers_ping(sock), "the embedded registry server does not answer"
            server_pid = int((data_dir / "registry.pid").read_text().strip())
            secret = serve_config.parent / "secret" / "key"
            assert secret.stat().st_mode & 0o777 == 0o600

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
            rest = reader.rest(timeout=5.0)
            stderr = proc.stderr.read().decode() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            if server_pid is not None and not wait_pid_gone(server_pid, 0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server_pid, signal.SIGTERM)

    entries = [json.loads(line) for line in reader.lines]  # every stdout line is JSON
    assert all(isinstance(entry, dict) for entry in entries)
    assert [entry["event"] for entry in entries].count("started") == 1
    assert [json.loads(line)["event"] for line in rest][-2:] == ["stopping", "stopped"]
    assert "Traceback" not in stderr
    assert wait_pid_gone(server_pid, STOP_TIMEOUT_S), "the embedded server still runs"
    assert not answers_ping(sock), "the embedded registry socket still answers"


def test_serve_runs_the_policy_service(valkey_server: RedisProcess, short_dir: Path) -> None:
    """`filterd serve` with [policy] and accounts-only [smtp] answers Postfix policy requests
    from the registry, and stops cleanly."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    config = short_dir / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
        '[policy]\nlisten = "127.0.0.1:0"\n'
        '[[smtp.accounts]]\nusername = "mta"\nsender = "acme"\nstream = "commercial"\n'
    )
    process = serve(config)
    try:
        port = int(LogReader(process).wait_for("listening")["port"])  # type: ignore[call-overload]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=mta\n"
                b"recipient=jane@example.com\nclient_address=10.0.0.1\n\n"
            )
            reply = sock.makefile("rb").readline()
        assert reply == b"action=550 5.7.1 <jane@example.com>: no consent or request on record\n"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert process.stdout is not None
        process.stdout.close()


def test_serve_runs_the_http_front_end(valkey_server: RedisProcess, short_dir: Path) -> None:
    """`filterd serve` with [http] listens (port from the OS), answers /healthz 200 with a
    JSON body, records a one-click refusal for a URL filterctl made, serves /metrics, and
    on SIGTERM drains the HTTP front end and exits 0."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    config = short_dir / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test"\n'
        '[[smtp.accounts]]\nusername = "mta"\nsender = "acme"\nstream = "commercial"\n'
    )
    made = subprocess.run(
        [FILTERD.parent / "filterctl", "--config", str(config), "unsubscribe-url",
         "jane@example.com", "--sender", "acme"],
        capture_output=True, text=True, timeout=60, check=False, env=environment(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = urllib.parse.urlsplit(made.stdout.strip()).path
    with serving(config) as process:
        log = LogReader(process)
        listening = log.wait_for("listening")
        assert listening["front_end"] == "http"
        base = f"http://127.0.0.1:{listening['port']}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:  # noqa: S310
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok", "registry": "ok"}
        one_click = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
            base + path, data=b"List-Unsubscribe=One-Click", method="POST"
        )
        with urllib.request.urlopen(one_click, timeout=30) as response:  # noqa: S310
            assert response.status == 200
        fact = log.wait_for("fact")
        assert (fact["origin"], fact["sender"], fact["result"]) == ("one-click", "acme", "stored")
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:  # noqa: S310
            assert b'filterd_optouts_total{origin="one-click"} 1.0' in response.read()
        process.send_signal(signal.SIGTERM)
        assert log.wait_for("drained")["front_end"] == "http"
        assert process.wait(STOP_TIMEOUT_S) == 0
    status = subprocess.run(
        [FILTERD.parent / "filterctl", "--config", str(config), "--json", "status",
         "jane@example.com"],
        capture_output=True, text=True, timeout=60, check=False, env=environment(),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    [entry] = json.loads(status.stdout)
    assert (entry["fact"], entry["sender"], entry["source"]) == ("refusal", "acme", "one-click")


def test_serve_runs_the_decision_api(valkey_server: RedisProcess, short_dir: Path) -> None:
    """`filterd serve` with [api] listens, takes a refusal from a key with the write scope
    (201, audited with origin api and the key's name), answers a check with it, refuses
    an unknown key with 401, and on SIGTERM drains the API and exits 0; neither the
    address nor the key reaches its log."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    key = "K" * 40
    (short_dir / "crm.key").write_text(key + "\n")
    (short_dir / "crm.key").chmod(0o600)
    config = short_dir / "filterd.toml"
    config.write_text(
        f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
        '[[api.keys]]\nname = "crm"\nkey_file = "crm.key"\nsenders = ["acme"]\n'
        'scopes = ["check", "read", "write"]\n'
    )

    def call(base: str, path: str, body: object, bearer: str) -> tuple[int, object]:
        request = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
            base + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with serving(config) as process:
        log = LogReader(process)
        listening = log.wait_for("listening")
        assert listening["front_end"] == "api"
        base = f"http://127.0.0.1:{listening['port']}"
        refusal = {"address": "jane@example.com", "kind": "refusal", "sender": "acme"}
        status, answer = call(base, "/v1/facts", refusal, key)
        assert status == 201, answer
        fact = log.wait_for("fact")
        assert (fact["origin"], fact["sender"], fact["result"]) == ("api", "acme", "stored")
        check = {"sender": "acme", "addresses": ["jane@example.com"]}
        status, answer = call(base, "/v1/check", check, key)
        assert status == 200
        assert answer == {
            "results": [{"address": "jane@example.com", "decision": "drop", "reason": "refused"}]
        }
        assert call(base, "/v1/check", check, "x" * 40)[0] == 401
        process.send_signal(signal.SIGTERM)
        assert log.wait_for("drained")["front_end"] == "api"
        assert process.wait(STOP_TIMEOUT_S) == 0
        assert process.stdout is not None
        text = b"\n".join([*log.seen, log.pending, process.stdout.read()])
    assert b"jane@example.com" not in text
    assert key.encode() not in text
    audit = subprocess.run(
        [FILTERD.parent / "filterctl", "--config", str(config), "--json", "audit"],
        capture_output=True, text=True, timeout=60, check=False, env=environment(),
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    [entry] = json.loads(audit.stdout)
    assert (entry["origin"], entry["detail"], entry["event"]) == ("api", "key=crm", "refusal")
