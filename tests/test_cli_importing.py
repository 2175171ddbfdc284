"""filterctl import (filterd/cli/importing.py): good rows imported, bad rows reported
by file line number (exit 2), evidence rules, refusals for all senders, several
processes keeping line numbers, quoted files read by one process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import (
    ctl,
)


def test_import_reports_bad_rows_and_imports_good_ones(home: Path) -> None:
    """Bad rows are reported as `line N: reason` (header counted), good rows are imported,
    exit 2; one audit entry for the file."""
    csv_file = home / "list.csv"
    csv_file.write_text(
        "address,created_at,source,evidence\n"
        "+8613800138000,2025-01-01T00:00:00Z,web,form A\n"
        "12345\n"
        "jane@example.com\n"
        "+8613800138001,not-a-date\n"
        "13800138002\n"
    )
    result = ctl(home, "import", str(csv_file), "--action", "consent", "--sender", "acme", "--json")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith("line 3: ")
    assert "'12345'" in errors[0]
    assert errors[1].startswith("line 5: ")
    assert "not-a-date" in errors[1]
    assert len(errors) == 2
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["stored"], summary["bad"]) == (5, 3, 2)
    for address in ("+8613800138000", "jane@example.com", "13800138002"):
        assert ctl(home, "check", address, "--sender", "acme").returncode == 0
    assert ctl(home, "check", "+8613800138001", "--sender", "acme").returncode == 1
    audit = json.loads(ctl(home, "audit", "--json").stdout)
    assert [e["event"] for e in audit] == ["import"]
    assert "stored=3" in audit[0]["detail"]


def test_import_consent_over_refusal_needs_evidence(home: Path) -> None:
    """An import never clears a refusal silently: such rows without evidence are bad rows."""
    ctl(home, "refuse", "+8613800138000", "--all-senders")
    csv_file = home / "list.csv"
    csv_file.write_text("+8613800138000\n+8613800138001\n+8613800138000,,crm,ticket 7\n")
    result = ctl(home, "import", str(csv_file), "--action", "consent", "--sender", "acme")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "line 1: refusal on record; a consent needs evidence"
    ]
    assert ctl(home, "check", "+8613800138000", "--sender", "acme").returncode == 0


def test_import_refusals_all_senders(home: Path) -> None:
    """An import of refusals for all senders and channels drops every sender, calls
    included; exit 0."""
    csv_file = home / "stop.csv"
    csv_file.write_text("+8613800138000\njane@example.com\n")
    result = ctl(home, "import", str(csv_file), "--action", "refuse", "--all-senders",
                 "--channel", "all")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for address in ("+8613800138000", "jane@example.com"):
        check = ctl(home, "check", address, "--sender", "anyone")
        assert (check.returncode, check.stdout) == (1, "drop refused\n")
    call = ctl(home, "check", "+8613800138000", "--sender", "anyone", "--channel", "voice")
    assert (call.returncode, call.stdout) == (1, "drop refused\n")


def test_parallel_import_keeps_line_numbers(home: Path) -> None:
    """With --jobs 2 the file is imported by two processes: every good row lands, bad rows
    in both halves are reported with their file line numbers, in order."""
    lines = ["address"] + [f"+86138{i:08d}" for i in range(2000)]
    lines[7] = "bad-one"
    lines[1500] = "bad-two"
    (home / "big.csv").write_text("\n".join(lines) + "\n")
    result = ctl(home, "import", str(home / "big.csv"), "--action", "refuse", "--sender", "acme",
                 "--jobs", "2", "--json")  # fmt: skip
    assert result.returncode == 2
    summary = json.loads(result.stdout)
    assert (summary["processes"], summary["rows"], summary["stored"], summary["bad"]) == (
        2, 2000, 1998, 2,
    )  # fmt: skip
    assert [line.split(":")[0] for line in result.stderr.strip().splitlines()] == [
        "line 8", "line 1501",
    ]  # fmt: skip
    assert ctl(home, "check", "+8613800001999", "--sender", "acme").returncode == 1
    audit = json.loads(ctl(home, "audit", "--json").stdout)
    assert [e["event"] for e in audit] == ["import"]


def test_quoted_file_is_read_by_one_process(home: Path) -> None:
    """A file with quoted fields (which may span lines) is never cut: one process."""
    (home / "q.csv").write_text('+8613800138000,,web,"form\nsecond line"\n+8613800138001\n')
    result = ctl(home, "import", str(home / "q.csv"), "--action", "refuse", "--sender", "acme",
                 "--jobs", "4", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["processes"] == 1


def test_import_voice_refusals(home: Path) -> None:
    """An import with --channel voice records voice refusals for the phone rows (an
    email row is a bad row naming voice): calls drop, SMS of the same numbers do not;
    the file's audit entry names the channel."""
    for number in ("+8613800138000", "+8613800138001"):
        for channel in ("sms", "voice"):
            ctl(home, "consent", number, "--sender", "acme", "--channel", channel)
    csv_file = home / "do-not-call.csv"
    csv_file.write_text("address\n+8613800138000\njane@example.com\n138 0013 8001,,call centre\n")
    result = ctl(home, "import", str(csv_file), "--action", "refuse", "--sender", "acme",
                 "--channel", "voice", "--json")  # fmt: skip
    assert result.returncode == 2
    [error] = result.stderr.strip().splitlines()
    assert error.startswith("line 3: ")
    assert "'jane@example.com'" in error
    assert "voice" in error
    assert json.loads(result.stdout)["stored"] == 2
    for number in ("+8613800138000", "13800138001"):
        call = ctl(home, "check", number, "--sender", "acme", "--channel", "voice")
        assert (call.returncode, call.stdout) == (1, "drop refused\n")
        assert ctl(home, "check", number, "--sender", "acme").returncode == 0
    audit = json.loads(ctl(home, "audit", "--json", "--limit", "1").stdout)
    assert (audit[0]["event"], audit[0]["channel"]) == ("import", "voice")
