"""filterd.metrics_dir: workers' counts handed to the main process through files.

Real files in a temporary directory: what a worker writes the main process reads
back whole; an unchanged snapshot is not rewritten; a file that is not JSON is
skipped (and logged once); the directory is private and removed at the end.
"""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path

from filterd import logs
from filterd.metrics import Metrics
from filterd.metrics_dir import MetricsDir


def test_created_directory_is_private_and_removed() -> None:
    """create() makes a 0700 directory; remove() deletes it with its files (twice is fine)."""
    directory = MetricsDir.create()
    try:
        assert stat.S_IMODE(directory.path.stat().st_mode) == 0o700
        directory.write("123", Metrics().snapshot())
    finally:
        directory.remove()
    assert not directory.path.exists()
    directory.remove()


def test_written_snapshots_are_read_back(tmp_path: Path) -> None:
    """Each writer's snapshot is one `<name>.json`; read() returns them all, as written,
    and leaves no temporary file behind."""
    directory = MetricsDir(tmp_path)
    first, second = Metrics(), Metrics()
    first.decision("smtp", "deliver", None)
    second.optout("smpp")
    directory.write("101", first.snapshot())
    directory.write("102", second.snapshot())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["101.json", "102.json"]
    assert directory.read() == [first.snapshot(), second.snapshot()]
    total = Metrics()
    total.include(directory.read)
    text = total.render().decode()
    assert 'filterd_decisions_total{decision="deliver",front_end="smtp",reason="none"} 1.0' in text
    assert 'filterd_optouts_total{origin="smpp"} 1.0' in text


def test_later_snapshot_replaces_the_earlier_one(tmp_path: Path) -> None:
    """A writer's new counts replace its file; an unchanged snapshot leaves the file as it
    was (not rewritten)."""
    directory = MetricsDir(tmp_path)
    metrics = Metrics()
    metrics.optout("cli")
    directory.write("7", metrics.snapshot())
    before = (tmp_path / "7.json").stat()
    directory.write("7", metrics.snapshot())
    assert (tmp_path / "7.json").stat().st_ino == before.st_ino
    metrics.optout("cli")
    directory.write("7", metrics.snapshot())
    [snapshot] = directory.read()
    assert snapshot["counters"]["filterd_optouts"] == [["cli", 2]]


def test_unreadable_file_is_skipped_and_logged_once(tmp_path: Path) -> None:
    """A file that is not JSON (or not an object) is left out; the others are read; the
    bad file is logged once, not at every scrape."""
    directory = MetricsDir(tmp_path)
    (tmp_path / "9.json").write_text("{not json")
    (tmp_path / "10.json").write_text("[1, 2]")
    good = Metrics()
    good.optout("cli")
    directory.write("11", good.snapshot())
    stream = io.StringIO()
    logs.configure(stream)
    try:
        assert directory.read() == [good.snapshot()]
        assert directory.read() == [good.snapshot()]
    finally:
        logs.configure(sys.stderr, "WARNING")
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    bad = [line for line in logged if line["event"] == "metrics_snapshot_unreadable"]
    assert [line["file"] for line in bad] == ["9.json"]


def test_missing_directory_reads_as_empty(tmp_path: Path) -> None:
    """read() of a directory that is gone returns no snapshots (a scrape still works)."""
    assert MetricsDir(tmp_path / "gone").read() == []
