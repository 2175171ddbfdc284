"""Worker processes (filterd/daemon/workers.py): smtp.workers and smpp.workers side
by side, each worker on the shared port, restarted when it dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    serving,
    smtp_workers_config,
)
from tests.helpers import LogReader, RedisProcess, free_port


def test_smtp_and_smpp_workers_side_by_side(valkey_server: RedisProcess, short_dir: Path) -> None:
    """smtp.workers = 2 and smpp.workers = 2 at once: the main process serves both relays,
    one worker only SMTP and one only SMPP, each on the shared fixed port; SIGHUP reaches
    both workers (each logs "reloaded") and SIGTERM stops all three, exit 0."""
    smtp_port, smpp_port = free_port(), free_port()
    config = smtp_workers_config(
        short_dir, valkey_server.url, smtp_port,
        f'[smpp]\nlisten = "127.0.0.1:{smpp_port}"\nworkers = 2\n'
        '[[smpp.accounts]]\nsystem_id = "promo"\npassword = "pw"\nsender = "acme"\n'
        'stream = "commercial"\n',
    )  # fmt: skip
    with serving(config) as process:
        log = LogReader(process)
        listening = [log.wait_for("listening", START_TIMEOUT_S) for _ in range(4)]
        assert sorted((e["role"], e["front_end"], e["port"]) for e in listening) == [  # type: ignore[type-var]
            ("main", "smpp", smpp_port), ("main", "smtp", smtp_port),
            ("smpp-worker", "smpp", smpp_port), ("smtp-worker", "smtp", smtp_port),
        ]  # fmt: skip
        process.send_signal(signal.SIGHUP)
        reloaded = [log.wait_for("reloaded") for _ in range(3)]
        assert sorted(str(e["role"]) for e in reloaded) == ["main", "smpp-worker", "smtp-worker"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT_S) == 0
    for entry in listening:
        if entry["role"] != "main":
            with pytest.raises(ProcessLookupError):
                os.kill(int(entry["pid"]), 0)  # type: ignore[call-overload]
