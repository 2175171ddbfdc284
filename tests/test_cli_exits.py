"""filterctl's exit codes (filterd/cli/exits.py): distinct, and every one explained in
the text every --help ends with."""

from __future__ import annotations

from filterd.cli import exits


def test_exit_codes_are_distinct_and_all_explained() -> None:
    """0, 1, 2, 3, 130 and 141 are distinct and each starts a line of EXIT_CODES."""
    codes = [
        exits.EXIT_OK,
        exits.EXIT_DROP,
        exits.EXIT_USAGE,
        exits.EXIT_UNAVAILABLE,
        exits.EXIT_INTERRUPTED,
        exits.EXIT_PIPE,
    ]
    assert codes == [0, 1, 2, 3, 130, 141]
    explained = {line.split()[0] for line in exits.EXIT_CODES.splitlines()[1:] if line[:3].strip()}
    assert {str(code) for code in codes} <= explained
