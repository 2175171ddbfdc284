"""Long fuzz runs (Hypothesis) of filterd's parsers; prints inputs/s and failures.

Run from the repository root:

    .venv/bin/python bench/fuzz.py                  # 100,000 inputs per target (~10 min)
    .venv/bin/python bench/fuzz.py --quick          # 5,000 inputs per target
    .venv/bin/python bench/fuzz.py --inputs 300000 --targets pdu,normalize

Targets and the invariant each input must keep (anything else is a failure):

- `pdu`: `filterd.smpp.decode.decode()` of any bytes (random, or a plausible header with a
  random body) returns a PDU that re-encodes to the same value, or raises
  `SmppProtocolError` whose reply encodes; `parse_receipt()` of the body returns a
  Receipt or None.
- `csv`: `filterd.csvimport.read_rows()` over random CSV text yields only GoodRow/BadRow
  with rising line numbers inside the text; good rows carry a valid time and bounded
  evidence.
- `normalize`: `filterd.normalize.normalize()` of any string returns a well-formed Address
  that normalises to itself, or raises `InvalidAddress` naming the value.
- `smtp`: random and hostile command lines (tests/faults/smtpfuzz.py) over TCP to a real
  `filterd serve` SMTP listener (own Valkey and aiosmtpd sink, loopback only): every line
  gets one well-formed reply, no handler exception; filterd is alive at the end. An input
  is one command line (a session sends several).

Each target runs in chunks of Hypothesis examples (generate phase only, no example
database, random seeds) until the inputs are reached. Failures are counted, not raised,
so a run reports all of them; the first few of each kind are printed. The baseline
column is the same strategy drawn with an empty test body (Hypothesis' own cost), over a
tenth of the inputs, in the same run. Exit status 1 if any target had a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common
import hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.faults.*

from filterd.csvimport import BadRow, GoodRow, ImportSpec, read_rows
from filterd.errors import InvalidAddress
from filterd.model import Channel, Kind
from filterd.normalize import normalize
from filterd.smpp.decode import SmppProtocolError, decode
from filterd.smpp.encode import encode
from filterd.smpp.pdu import PDU_CLASSES
from filterd.smpp.receipt import parse_receipt

CHUNK = 2_000
EXAMPLES_SHOWN = 3
E164 = re.compile(r"^\+[1-9][0-9]{5,16}$")  # phonenumbers: DE numbers reach 17 digits
U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)


@dataclasses.dataclass
class Outcome:
    """What one target's run found."""

    inputs: int = 0
    failures: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def fail(self, kind: str, example: object) -> None:
        """Count a failure of `kind` and keep its first examples."""
        self.failures[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_SHOWN:
            shown.append(repr(example)[:300])


def run_chunks(strategy: st.SearchStrategy[Any], body: Callable[[Any], int], inputs: int) -> None:
    """Draw from `strategy` in chunks until `body` has counted `inputs` inputs."""
    done = 0
    count = [0]
    while done < inputs:
        count[0] = 0

        @settings(
            max_examples=min(CHUNK, inputs - done),
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def chunk(value: Any) -> None:
            count[0] += body(value)

        chunk()
        if count[0] == 0:
            break
        done += count[0]


# ---- pdu ------------------------------------------------------------------------------------

KNOWN_IDS = sorted(cls.command_id for cls in PDU_CLASSES)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A plausible header (usually a right command_length) and a random body."""
    body = draw(st.binary(max_size=300))
    length = draw(st.one_of(st.just(16 + len(body)), U32))
    command_id = draw(st.one_of(st.sampled_from(KNOWN_IDS), U32))
    return struct.pack(">IIII", length, command_id, draw(U32), draw(U32)) + body


PDU_INPUTS = st.one_of(st.binary(max_size=400), frames())


def pdu_target(outcome: Outcome) -> Callable[[bytes], int]:
    """The decoder invariant."""

    def body(data: bytes) -> int:
        outcome.inputs += 1
        try:
            pdu = decode(data)
            if decode(encode(pdu)) != pdu:
                outcome.fail("re-encoding differs", data)
        except SmppProtocolError as exc:
            try:
                reply = exc.reply()
                if reply is not None:
                    encode(reply)
            except Exception as inner:
                outcome.fail(f"reply() raised {type(inner).__name__}", data)
        except Exception as exc:
            outcome.fail(f"decode raised {type(exc).__name__}: {str(exc)[:60]}", data)
        try:
            receipt = parse_receipt(data[16:])
            del receipt
        except Exception as exc:
            outcome.fail(f"parse_receipt raised {type(exc).__name__}", data)
        return 1

    return body


# ---- csv ------------------------------------------------------------------------------------

NOW_MS = int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)
SPEC = ImportSpec(
    kind=Kind.CONSENT, sender="acme", channel=None, all_channels=False, source="import:f.csv",
    default_region="CN", ttl_s=30 * 86400, now_ms=NOW_MS,
    consumer_id=lambda address: address.canonical.encode(),
)  # fmt: skip
CELLS = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "+8613800138000", "13800138000", "+1 202 555 0143", "user@example.com",
        " User@Bücher.Example ", "2024-01-01T00:00:00Z", "2024-01-01T08:00:00+08:00",
        "20250102", "1700000000", "1700000000.5", "-1", "9" * 30, "inf", "nan", "2024-13-01",
        "", " ", '"', '""', "a\x00b", "x" * 5000, "line\nbreak",
    ]),
)  # fmt: skip
CSV_INPUTS = st.tuples(
    st.lists(st.one_of(st.lists(CELLS, max_size=6).map(",".join), st.text(max_size=60)),
             max_size=6),
    st.sampled_from(list(Kind)),
    st.booleans(),
)  # fmt: skip


def csv_target(outcome: Outcome) -> Callable[[tuple[list[str], Kind, bool]], int]:
    """The row-reader invariant; an input is one row (a line of the generated text)."""

    def body(value: tuple[list[str], Kind, bool]) -> int:
        lines, kind, all_channels = value
        text = "\n".join(lines) + "\n"
        spec = dataclasses.replace(SPEC, kind=kind, all_channels=all_channels)
        outcome.inputs += max(1, len(lines))
        try:
            results = list(read_rows(io.StringIO(text, newline=""), spec))
        except Exception as exc:
            outcome.fail(f"read_rows raised {type(exc).__name__}: {str(exc)[:60]}", value)
            return max(1, len(lines))
        numbers = [r.line for r in results]
        if numbers != sorted(numbers) or any(
            not 1 <= n <= text.count("\n") + text.count("\r") for n in numbers
        ):
            outcome.fail("line numbers out of order or range", value)
        for result in results:
            if isinstance(result, GoodRow):
                row = result.row
                if not 0 <= row.at_ms <= NOW_MS + 86_400_000:
                    outcome.fail("good row with a time out of range", value)
                if row.evidence is not None and (
                    "\x00" in row.evidence or len(row.evidence.encode()) > 4096
                ):
                    outcome.fail("good row with bad evidence", value)
            elif not (isinstance(result, BadRow) and result.reason):
                outcome.fail("result neither GoodRow nor BadRow with a reason", value)
        return max(1, len(lines))

    return body


# ---- normalize -----------------------------------------------------------------------------

ALPHABET = st.sampled_from(list("+0123456789 ().-@abzAZé.中-ａ０١\x00\t_[]<>\"'\\"))
NORMALIZE_INPUTS = st.tuples(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet=ALPHABET, max_size=40),
        st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=70), st.text(max_size=260)),
        st.from_regex(r"\+?[0-9 ()\-]{4,20}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9ü.-]{1,30}", fullmatch=True),
    ),
    st.sampled_from([None, "CN", "US", "GB", "DE"]),
)


def normalize_target(outcome: Outcome) -> Callable[[tuple[str, str | None]], int]:
    """The normalisation invariant."""

    def body(value: tuple[str, str | None]) -> int:
        raw, region = value
        outcome.inputs += 1
        try:
            address = normalize(raw, region)
        except InvalidAddress as exc:
            if exc.value != raw:
                outcome.fail("InvalidAddress does not name the value", value)
            return 1
        except Exception as exc:
            outcome.fail(f"normalize raised {type(exc).__name__}: {str(exc)[:60]}", value)
            return 1
        canonical = address.canonical
        if address.channel is Channel.SMS and not E164.match(canonical):
            outcome.fail("phone not in E.164", value)
        if address.channel is Channel.EMAIL and (
            canonical != canonical.lower() or len(canonical.encode()) > 254
        ):
            outcome.fail("email not canonical", value)
        try:
            if normalize(canonical, region) != address:
                outcome.fail("not idempotent", value)
        except Exception as exc:
            outcome.fail(f"canonical form rejected: {type(exc).__name__}", value)
        return 1

    return body


# ---- smtp ------------------------------------------------------------------------------------


class SmtpTarget:
    """A real filterd SMTP relay (own Valkey, own sink) and the session driver."""

    def __init__(self) -> None:
        from filterd.model import Kind as FactKind  # noqa: PLC0415
        from tests.faults.conftest import (  # noqa: PLC0415
            BOB,
            JANE,
            Daemon,
            Reaper,
            record_fact,
            registry_server,
            write_config,
        )
        from tests.helpers import SinkServer  # noqa: PLC0415

        self.reaper = Reaper()
        self.home = Path(tempfile.mkdtemp(prefix="fuzz", dir="/tmp"))
        server = registry_server("valkey", self.home / "valkey", self.reaper)
        record_fact(server.url, JANE, FactKind.CONSENT)
        record_fact(server.url, BOB, FactKind.REFUSAL)
        self.sink = SinkServer().start()
        self.reaper.finalizers.append(self.sink.shutdown)
        config = write_config(self.home, server.url, smtp_upstream=self.sink.port)
        self.daemon = Daemon(config, self.reaper, ("smtp",)).start()
        self.port = self.daemon.ports["smtp"]
        self.codes: Counter[int] = Counter()
        self.known: Counter[str] = Counter()
        self.sessions = 0

    def body(self, outcome: Outcome) -> Callable[[Any], int]:
        """Play one script; an input is one command line."""
        from tests.faults import smtpfuzz  # noqa: PLC0415

        def play(script: smtpfuzz.Script) -> int:
            lines = len(script.commands) + 2 * script.transaction
            outcome.inputs += lines
            self.sessions += 1
            if sum(outcome.failures.values()) >= 50:
                return lines  # filterd is probably down: stop hammering, report
            try:
                session = smtpfuzz.run(self.port, script)
            except smtpfuzz.BadReply as exc:
                text = str(exc)
                error = re.search(r"500 Error: \((\w+)\)", text)
                kind = f"handler crash ({error.group(1)})" if error else re.sub(r"b'.*", "", text)
                outcome.fail(kind, script)
                return lines
            self.codes.update(session.codes)
            self.known.update(session.known_crashes)
            return lines

        return play

    def close(self, outcome: Outcome) -> None:
        """Check filterd survived; stop everything."""
        try:
            if not self.daemon.alive():
                outcome.fail("filterd died", None)
            elif self.daemon.stop() != 0:
                outcome.fail("filterd did not stop cleanly", None)
            outcome.notes.append(
                f"smtp: {self.sessions} sessions; reply codes {dict(sorted(self.codes.items()))}; "
                f"relayed {len(self.sink.handler.messages)}; known bugs hit {dict(self.known)}"
            )
        finally:
            self.reaper.reap()
            shutil.rmtree(self.home, ignore_errors=True)


# ---- main ------------------------------------------------------------------------------------


def measure(
    strategy: st.SearchStrategy[Any],
    make_body: Callable[[Outcome], Callable[[Any], int]],
    inputs: int,
    weight: Callable[[Any], int],
) -> tuple[Outcome, float, float]:
    """(outcome, inputs/s, baseline inputs/s of the strategy alone)."""
    outcome = Outcome()
    started = time.perf_counter()
    run_chunks(strategy, make_body(outcome), inputs)
    rate = outcome.inputs / (time.perf_counter() - started)
    drawn = [0]

    def empty(value: Any) -> int:
        drawn[0] += weight(value)
        return weight(value)

    started = time.perf_counter()
    run_chunks(strategy, empty, max(inputs // 10, 100))
    baseline = drawn[0] / (time.perf_counter() - started)
    return outcome, rate, baseline


def main(argv: list[str] | None = None) -> int:
    """Run the chosen targets and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--quick", action="store_true", help="5,000 inputs per target")
    parser.add_argument("--targets", default="pdu,csv,normalize,smtp")
    args = parser.parse_args(argv)
    inputs = 5_000 if args.quick else args.inputs
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    rows = []
    notes: list[str] = []
    failed = False
    for target in targets:
        print(f"fuzzing {target}: {inputs:,} inputs ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        if target == "pdu":
            result = measure(PDU_INPUTS, pdu_target, inputs, lambda _: 1)
        elif target == "csv":
            result = measure(CSV_INPUTS, csv_target, inputs, lambda v: max(1, len(v[0])))
        elif target == "normalize":
            result = measure(NORMALIZE_INPUTS, normalize_target, inputs, lambda _: 1)
        elif target == "smtp":
            from tests.faults import smtpfuzz  # noqa: PLC0415

            smtp = SmtpTarget()
            try:
                result = measure(
                    smtpfuzz.SCRIPTS, smtp.body, inputs,
                    lambda s: len(s.commands) + 2 * s.transaction,
                )  # fmt: skip
            finally:
                with contextlib.suppress(UnboundLocalError):
                    smtp.close(result[0])
        else:
            parser.error(f"unknown target {target!r}")
        outcome, rate, baseline = result
        seconds = time.perf_counter() - started
        failures = sum(outcome.failures.values())
        failed |= failures > 0
        rows.append((target, outcome.inputs, seconds, rate, baseline, failures))
        notes += outcome.notes
        for kind, count in outcome.failures.most_common():
            notes.append(f"{target}: {count} × {kind}")
            notes += [f"    e.g. {example}" for example in outcome.examples[kind]]
    print(
        "| target | inputs | seconds | inputs/s | baseline: strategy alone, inputs/s | failures |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for target, count, seconds, rate, baseline, failures in rows:
        print(
            f"| {target} | {count:,} | {seconds:.1f} | {rate:,.0f} | {baseline:,.0f} | {failures} |"
        )
    print()
    print(f"command: {_common.full_command()}")
    print(_common.brief_machine(f"Hypothesis {hypothesis.__version__}"))
    for note in notes:
        print(f"- {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
