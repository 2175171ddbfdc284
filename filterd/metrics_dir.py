"""Worker counts in the main process's `/metrics` (`smtp.workers` / `smpp.workers` > 1).

The main process makes a private directory (`MetricsDir.create`) and names it to
each worker it starts; a worker writes a snapshot of its counts there as
`<pid>.json` once a second and when it stops (written to a temporary name, then
renamed: a reader never sees half a file). The main process reads every file at
scrape time and adds it to its own counts (`Metrics.include`). A worker that
died leaves its last file, so the totals never go down while `filterd serve`
runs; its replacement writes a file of its own. The directory goes when the
main process stops. Snapshots hold counts and fixed label values only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from filterd.logs import get_logger
from filterd.metrics import Snapshot

log = get_logger("metrics")

REPORT_INTERVAL_S = 1.0
"""How often a worker writes its snapshot (the most a scrape lags behind it)."""


class MetricsDir:
    """The directory of worker snapshots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[str, str] = {}
        self._bad: set[str] = set()

    @classmethod
    def create(cls) -> MetricsDir:
        """A new private (0700) directory under the temporary directory."""
        return cls(Path(tempfile.mkdtemp(prefix="filterd-metrics-")))

    def write(self, name: str, snapshot: Snapshot) -> None:
        """Store `snapshot` as `<name>.json` (skipped when it did not change)."""
        text = json.dumps(snapshot, separators=(",", ":"))
        if self._last.get(name) == text:
            return
        target = self.path / f"{name}.json"
        temporary = self.path / f".{name}.json.tmp"
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
        self._last[name] = text

    def read(self) -> list[Snapshot]:
        """Every snapshot in the directory; a file that is not JSON is skipped (logged once)."""
        snapshots: list[Snapshot] = []
        try:
            files = sorted(self.path.glob("*.json"))
        except OSError:
            return snapshots
        for file in files:
            try:
                loaded = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                if file.name not in self._bad:
                    self._bad.add(file.name)
                    log.warning("metrics_snapshot_unreadable", file=file.name, error=str(exc))
                continue
            if isinstance(loaded, dict):
                snapshots.append(loaded)
        return snapshots

    def remove(self) -> None:
        """Delete the directory and everything in it."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.path)
