"""`filterd serve` with the CMPP relay for tests: its config over a registry and a fake
ISMG (tests/cmpp_ismg.py), started until every process listens and is logged in at the
ISMG, stopped with SIGTERM at the end (exit code checked)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cmpp_ismg import FakeIsmg
from tests.cmpp_relay_helpers import NUMBER, SECRET, SP_ID, SP_SECRET
from tests.helpers import LogReader, RedisProcess
from tests.smpp_relay_helpers import FILTERD, free_port, stop


def config(home: Path, registry_url: str, ismg: FakeIsmg, listen: str = "127.0.0.1:0",
           workers: int = 1, *, extra: str = "") -> Path:  # fmt: skip
    """A config with [cmpp] (`extra` lines in it) linked to `ismg`: the commercial
    account SP_ID of sender acme and the number NUMBER."""
    (home / "secret").write_text(SECRET + "\n")
    (home / "secret").chmod(0o600)
    path = home / "filterd.toml"
    path.write_text(f"""
[registry]
url = "{registry_url}"
secret_file = "secret"
default_region = "CN"

[cmpp]
listen = "{listen}"
workers = {workers}
{extra}

[cmpp.upstream]
host = "127.0.0.1"
port = {ismg.port}
sp_id = "{ismg.sp_id}"
shared_secret = "{ismg.secret}"
version = "3.0"

[[cmpp.accounts]]
sp_id = "{SP_ID}"
shared_secret = "{SP_SECRET}"
sender = "acme"
stream = "commercial"

[[cmpp.numbers]]
address = "{NUMBER}"
sender = "acme"
""")
    return path


@dataclass
class Served:
    """A running `filterd serve` [cmpp] and its ISMG."""

    process: subprocess.Popen[bytes]
    port: int
    ismg: FakeIsmg
    log: LogReader
    home: Path


@contextlib.contextmanager
def serving(registry: RedisProcess, workers: int = 1, extra: str = "") -> Iterator[Served]:
    """`filterd serve` with cmpp.workers = `workers` over `registry` (flushed by the
    caller) and a fresh fake ISMG; every process logged in there before it is yielded."""
    home = Path(tempfile.mkdtemp(prefix="cmpp", dir="/tmp"))
    ismg = FakeIsmg().start()
    listen = "127.0.0.1:0" if workers == 1 else f"127.0.0.1:{free_port()}"
    path = config(home, registry.url, ismg, listen, workers, extra=extra)
    process = subprocess.Popen(
        [FILTERD, "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        env={**os.environ, "FILTERD_LOG_LEVEL": "INFO"},
    )  # fmt: skip
    try:
        log = LogReader(process)
        ports = []
        while len(ports) < workers:  # every process listens on the same port
            entry = log.wait_for("listening")
            if entry.get("front_end") == "cmpp":
                ports.append(int(entry["port"]))  # type: ignore[call-overload]
        ismg.wait_logged_in(links=workers)
        yield Served(process, ports[0], ismg, log, home)
    finally:
        stop(process)
        assert process.stdout is not None
        process.stdout.close()
        ismg.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    assert process.returncode == 0
