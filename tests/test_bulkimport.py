"""Cutting an import file into byte ranges for parallel workers."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from filterd.bulkimport import ImportJob, Outcome, ranges
from filterd.model import Kind
from filterd.settings import Settings


@given(st.lists(st.text(alphabet="0123456789+,", max_size=20), max_size=200), st.integers(1, 8))
def test_ranges_cover_the_file_at_line_ends(tmp_path_factory: object, rows: list[str],
                                            parts: int) -> None:  # fmt: skip
    """Ranges are contiguous, cover every byte, start at line starts, and carry the right
    first line numbers."""
    directory = Path(tmp_path_factory.mktemp("r"))  # type: ignore[attr-defined]
    path = directory / "f.csv"
    data = "".join(row + "\n" for row in rows).encode()
    path.write_bytes(data)
    cuts = ranges(path, parts)
    assert cuts[0][0] == 0
    assert cuts[-1][1] == len(data)
    for (_, end, _), (start, _, _) in itertools.pairwise(cuts):
        assert end == start
    for start, _, first_line in cuts:
        assert start == 0 or data[start - 1 : start] == b"\n"
        assert first_line == data.count(b"\n", 0, start) + 1


def test_quotes_keep_one_range(tmp_path: Path) -> None:
    """A double quote anywhere: one range (a quoted field may span lines)."""
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,"b\nc"\n' * 100)
    assert ranges(path, 4) == [(0, path.stat().st_size, 1)]


def test_outcomes_add_up() -> None:
    """Outcomes of parts add their counts and keep every bad row."""
    total = Outcome()
    part = Outcome()
    part.counts["rows"] = 3
    part.bad.append((2, "bad"))
    total.add(part)
    total.add(part)
    assert total.counts["rows"] == 6
    assert total.bad == [(2, "bad"), (2, "bad")]


def test_import_job_source_is_masked() -> None:
    """An import's source (its file name or --source, stored with every row and in the
    file's audit entry) has email addresses and phone numbers masked."""
    job = ImportJob(
        settings=Settings(Path("filterd.toml")),
        path=Path("frank.other@example.org.csv"),
        kind=Kind.REFUSAL,
        sender="acme",
        channel=None,
        all_channels=False,
        source="import:frank.other@example.org 13611112222.csv",
        ttl_s=None,
        now_ms=0,
    )
    assert job.source == "import:f***@example.org 13611****22.csv"
