"""Building a process's objects from Settings: secret, embedded registry, service."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from filterd.bootstrap import build
from filterd.config import parse
from filterd.model import Action, MessageClass
from filterd.normalize import normalize


def test_build_embedded_runtime_and_close() -> None:
    """build() creates the secret, starts the embedded server and a working service;
    close() stops the server it started."""
    home = Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
    try:
        settings = parse({"registry": {"data_dir": "var", "secret_file": "var/key"}},
                         home / "filterd.toml")  # fmt: skip
        runtime = build(settings)
        assert (home / "var" / "key").stat().st_mode & 0o777 == 0o600
        assert runtime.embedded is not None
        assert runtime.embedded.alive()

        async def use() -> Action:
            address = normalize("+8613800138000")
            decisions = await runtime.service.screen(
                "acme", MessageClass.COMMERCIAL, [address], origin="test"
            )
            await runtime.close()
            return decisions[0].action

        assert asyncio.run(use()) is Action.DROP
        assert not runtime.embedded.alive()
    finally:
        shutil.rmtree(home, ignore_errors=True)
