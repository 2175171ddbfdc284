"""/metrics with workers (filterd/daemon/shared_metrics.py): the main process adds
in the counts its workers write, and they never drop when a worker dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.daemon_helpers import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    environment,
    refused_rcpts,
    serving,
    smtp_decisions,
    smtp_workers_config,
)
from tests.helpers import LogReader, RedisProcess, free_port, wait_until


def test_workers_decisions_show_in_the_main_processs_metrics(
    valkey_server: RedisProcess, short_dir: Path
) -> None:
    """With smtp.workers = 2 the main process's /metrics counts the decisions of both
    processes (a worker reports within a second); after kill -9 of the worker the totals
    do not drop and its replacement adds on; after SIGTERM the main process's private
    metrics directory is gone."""
    temp = short_dir / "tmp"
    temp.mkdir()
    smtp_port = free_port()
    config = smtp_workers_config(
        short_dir, valkey_server.url, smtp_port,
        '[http]\nlisten = "127.0.0.1:0"\npublic_url = "https://unsub.acme.test"\n',
    )  # fmt: skip
    with serving(config, {**environment(), "TMPDIR": str(temp)}) as process:
        log = LogReader(process)
        listening = [log.wait_for("listening", START_TIMEOUT_S) for _ in range(3)]
        [http] = [e for e in listening if e["front_end"] == "http"]
        [worker] = [e for e in listening if e["role"] == "smtp-worker"]
        base = f"http://127.0.0.1:{http['port']}"
        refused_rcpts(smtp_port, 16)
        roles = {str(log.wait_for("decision")["role"]) for _ in range(16)}
        assert roles == {"main", "smtp-worker"}, "the kernel gave every connection to one"
        wait_until("16 decisions in /metrics", lambda: smtp_decisions(base) == 16, 10)
        os.kill(int(worker["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        log.wait_for("worker_restarted", 30)
        assert smtp_decisions(base) == 16
        log.wait_for("listening", START_TIMEOUT_S)
        refused_rcpts(smtp_port, 8)
        wait_until("24 decisions in /metrics", lambda: smtp_decisions(base) == 24, 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_TIMEOUT_S) == 0
    assert list(temp.iterdir()) == []
