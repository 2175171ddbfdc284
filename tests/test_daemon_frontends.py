"""Front ends in `filterd serve` (filterd/daemon/frontends.py): a listener that
cannot bind is named by its key, every one of them, and serve exits 1."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

from tests.daemon_helpers import (
    FILTERD,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    environment,
    serving,
)
from tests.helpers import LogReader, RedisProcess, free_port


def test_listener_port_in_use_exits_1_naming_the_key(
    valkey_server: RedisProcess, short_dir: Path
) -> None:
    """A listen address already in use: filterd logs the key and the reason, exits 1."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = short_dir / "filterd.toml"
        config.write_text(
            f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
            f'[policy]\nlisten = "127.0.0.1:{port}"\n'
        )
        result = subprocess.run(
            [FILTERD, "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"policy.listen 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_second_serve_names_every_busy_listener_http_too(
    valkey_server: RedisProcess, short_dir: Path
) -> None:
    """A second `filterd serve` on the listen addresses of a running one exits 1 and logs
    each busy listener by its key: smtp.listen, smpp.listen, policy.listen and
    http.listen (whose site is set up before it binds); no traceback. The first one
    keeps serving and stops with 0."""
    (short_dir / "secret").write_text("cd" * 32 + "\n")
    (short_dir / "secret").chmod(0o600)

    def write_config(name: str, ports: dict[str, int]) -> Path:
        """A private config `name`: SMTP, SMPP, policy and HTTP listening on `ports`."""
        config = short_dir / name
        config.write_text(
            f'[registry]\nurl = "{valkey_server.url}"\nsecret_file = "secret"\n'
            f'[smtp]\nlisten = "127.0.0.1:{ports["smtp"]}"\nupstream = "127.0.0.1:{upstream}"\n'
            '[[smtp.accounts]]\nusername = "mta"\npassword = "pw"\nsender = "acme"\n'
            'stream = "commercial"\n'
            f'[smpp]\nlisten = "127.0.0.1:{ports["smpp"]}"\n'
            f'[policy]\nlisten = "127.0.0.1:{ports["policy"]}"\n'
            f'[http]\nlisten = "127.0.0.1:{ports["http"]}"\n'
            'public_url = "https://unsub.acme.test"\n'
        )
        config.chmod(0o600)
        return config

    upstream = free_port()
    any_port = dict.fromkeys(("smtp", "smpp", "policy", "http"), 0)
    with serving(write_config("first.toml", any_port)) as first:
        log = LogReader(first)
        listening = [log.wait_for("listening", START_TIMEOUT_S) for _ in range(4)]
        ports = {str(e["front_end"]): int(e["port"]) for e in listening}  # type: ignore[call-overload]
        second = subprocess.run(
            [FILTERD, "serve", "--config", str(write_config("second.toml", ports))],
            capture_output=True, text=True, timeout=60, check=False, env=environment(),
        )  # fmt: skip
        first.send_signal(signal.SIGTERM)
        assert first.wait(STOP_TIMEOUT_S) == 0
    assert second.returncode == 1, second.stdout + second.stderr
    failed = [json.loads(line) for line in second.stdout.splitlines()]
    errors = [e["error"] for e in failed if e["event"] == "front_end_failed"]
    for front_end, port in sorted(ports.items()):
        assert any(error.startswith(f"{front_end}.listen 127.0.0.1:{port}: ") for error in errors)
    assert len(errors) == 4
    assert "Traceback" not in second.stdout + second.stderr
