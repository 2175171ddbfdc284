"""filterd.logs: structlog set-up.

Not on a TTY, configure() writes one JSON object per line with the event,
the level, a timestamp and every bound key; aiosmtpd's "mail.log" logger, which
logs recipients at INFO, is held at WARNING.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from filterd import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put structlog's and the stdlib's logging configuration back after each test."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_level = root.level
    mail = logging.getLogger("mail.log")
    saved_mail_level = mail.level
    yield
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in saved_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved_level)
    mail.setLevel(saved_mail_level)
    structlog.configure(**saved_structlog)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line written to `stream`, each parsed as one JSON object."""
    lines = stream.getvalue().splitlines()
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(obj, dict) for obj in objects)
    return objects


def test_json_line_with_event_and_bound_keys() -> None:
    """A log call on a non-TTY stream is one JSON line with event, level, component and keys."""
    stream = io.StringIO()
    logs.configure(stream)
    log = logs.get_logger("smtp").bind(session="s1")
    log.info("decision", sender="acme", recipient="j***@example.com", decision="drop")

    (entry,) = json_lines(stream)
    assert entry["event"] == "decision"
    assert entry["level"] == "info"
    assert entry["component"] == "smtp"
    assert entry["session"] == "s1"
    assert entry["sender"] == "acme"
    assert entry["recipient"] == "j***@example.com"
    assert entry["decision"] == "drop"
    assert entry["timestamp"].endswith("Z")


def test_one_object_per_line() -> None:
    """Several calls give exactly as many lines, each a JSON object, in order."""
    stream = io.StringIO()
    logs.configure(stream)
    log = logs.get_logger("daemon")
    log.info("started", config="/etc/filterd/filterd.toml")
    log.warning("registry_unreachable", error="multi\nline")
    log.error("stopped")

    entries = json_lines(stream)
    assert [e["event"] for e in entries] == ["started", "registry_unreachable", "stopped"]
    assert [e["level"] for e in entries] == ["info", "warning", "error"]
    assert entries[1]["error"] == "multi\nline"


def test_non_ascii_is_written_as_is() -> None:
    """Chinese keywords are written as UTF-8 text, not \\u escapes."""
    stream = io.StringIO()
    logs.configure(stream)
    logs.get_logger("smpp").info("opt_out", keyword="退订")
    assert "退订" in stream.getvalue()
    (entry,) = json_lines(stream)
    assert entry["keyword"] == "退订"


def test_undecodable_input_in_a_value_is_escaped_not_raised() -> None:
    """A value holding undecodable bytes (surrogate escapes, as decoded client input
    carries them) still gives one JSON line, with the rest of the line intact; the
    bad character is a \\u escape."""
    stream = io.StringIO()
    logs.configure(stream)
    bad = b"4F2\xff31".decode("utf-8", "surrogateescape")
    logs.get_logger("policy").info("decision", message_id=bad, keyword="退订")
    (entry,) = json_lines(stream)
    assert entry["message_id"] == bad
    assert entry["keyword"] == "退订"
    assert "\\udcff" in stream.getvalue()


def test_contextvars_are_merged() -> None:
    """Keys bound with structlog.contextvars appear on every line."""
    stream = io.StringIO()
    logs.configure(stream)
    structlog.contextvars.bind_contextvars(message_id="m-1")
    try:
        logs.get_logger("smtp").info("relayed")
    finally:
        structlog.contextvars.clear_contextvars()
    (entry,) = json_lines(stream)
    assert entry["message_id"] == "m-1"


def test_level_filters_structlog() -> None:
    """With level WARNING an info call writes nothing and a warning is written."""
    stream = io.StringIO()
    logs.configure(stream, level="warning")
    log = logs.get_logger("daemon")
    log.info("chatty")
    log.debug("chattier")
    log.warning("kept")
    assert [e["event"] for e in json_lines(stream)] == ["kept"]


def test_mail_log_held_at_warning() -> None:
    """aiosmtpd's "mail.log" INFO records (recipients, AUTH lines) are not written."""
    stream = io.StringIO()
    logs.configure(stream, level="DEBUG")
    mail = logging.getLogger("mail.log")
    assert mail.getEffectiveLevel() == logging.WARNING
    mail.info("RCPT TO:<someone@example.com>")
    mail.debug("AUTH PLAIN dXNlcgB1c2VyAHBhc3M=")
    assert "someone@example.com" not in stream.getvalue()
    assert "dXNlcgB1c2VyAHBhc3M" not in stream.getvalue()


def test_mail_log_warning_is_written() -> None:
    """A WARNING from "mail.log" still reaches the stream."""
    stream = io.StringIO()
    logs.configure(stream)
    logging.getLogger("mail.log").warning("client sent junk")
    assert "client sent junk" in stream.getvalue()


def test_stdlib_records_are_json_lines() -> None:
    """A stdlib WARNING (aiosmtpd, asyncio) is written as a JSON line like structlog's."""
    stream = io.StringIO()
    logs.configure(stream)
    logs.get_logger("daemon").info("started")
    logging.getLogger("mail.log").warning("client sent junk")
    entries = json_lines(stream)
    assert len(entries) == 2
    assert entries[1]["level"] == "warning"


def test_stdlib_record_with_an_exception_has_its_traceback_as_text() -> None:
    """A library's log call with exc_info (asyncio's "Task exception was never retrieved",
    aiohttp's handler errors) is one JSON line whose `exception` key holds the traceback
    text, ending in the exception; its `error`/`status` record attributes become keys."""
    stream = io.StringIO()
    logs.configure(stream)
    try:
        int("boom")
    except ValueError:
        logging.getLogger("asyncio").error("Task exception", exc_info=True, extra={"status": 7})
    (entry,) = json_lines(stream)
    assert entry["level"] == "error"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert (
        entry["exception"]
        .rstrip()
        .endswith("ValueError: invalid literal for int() with base 10: 'boom'")
    )
    assert entry["status"] == 7
    assert "exc_info" not in entry


def test_timestamp_is_iso_utc_with_microseconds() -> None:
    """The timestamp is ISO 8601 UTC with microseconds and a Z, like structlog's
    TimeStamper(fmt="iso", utc=True), and falls between the times read around the call."""
    stream = io.StringIO()
    logs.configure(stream)
    before = datetime.datetime.now(datetime.UTC)
    logs.get_logger("smtp").info("first")
    logs.get_logger("smtp").info("second")
    after = datetime.datetime.now(datetime.UTC)
    stamps = [entry["timestamp"] for entry in json_lines(stream)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps)
    parsed = [datetime.datetime.fromisoformat(s) for s in stamps]
    assert before - datetime.timedelta(microseconds=1) <= parsed[0] <= parsed[1] <= after


def _fail() -> None:
    raise ValueError("boom")


def test_json_line_is_what_the_processor_chain_writes() -> None:
    """The JSON lines are written by one function instead of structlog's processor
    chain; they hold the same keys in the same order with the same values as the
    configured chain renders (bound keys, call keys, event, context variables,
    level, timestamp, a formatted exception), for every level method."""
    stream = io.StringIO()
    logs.configure(stream, level="DEBUG")
    processors = structlog.get_config()["processors"]
    structlog.contextvars.bind_contextvars(pid=7, role="main")
    log = logs.get_logger("smtp").bind(session="s1")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("debug", {"n": 1}),
        ("info", {"recipient": "j***@example.com", "reason": None, "ids": [1, 2]}),
        ("warning", {"error": "é"}),
        ("warn", {}),
        ("error", {"code": 451}),
        ("critical", {}),
    ]
    try:
        for method, keys in calls:
            getattr(log, method)("happened", **keys)
        try:
            _fail()
        except ValueError:
            log.exception("failed", code=1)
        expected = []
        for method, keys in [*calls, ("exception", {"code": 1, "exc_info": True})]:
            event: Any = {"component": "smtp", "session": "s1", **keys, "event": "happened"}
            if method == "exception":
                event["event"] = "failed"
                try:
                    _fail()
                except ValueError:
                    for processor in processors:
                        event = processor(None, method, event)
            else:
                for processor in processors:
                    event = processor(None, method, event)
            expected.append(json.loads(event))
    finally:
        structlog.contextvars.clear_contextvars()
    written = json_lines(stream)
    assert len(written) == len(expected)
    for got, want in zip(written, expected, strict=True):
        assert list(got) == list(want)
        got.pop("timestamp"), want.pop("timestamp")
        if "exception" in want:  # the traceback's line numbers differ
            assert got.pop("exception").splitlines()[-1] == want.pop("exception").splitlines()[-1]
        assert got == want


class _Writes(io.StringIO):
    """A stream that remembers each write() it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def _next_turn() -> None:
    """Let the event loop finish the current turn (and run what it scheduled)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_batched_lines_of_one_loop_turn_are_one_write() -> None:
    """Batched, the INFO lines of one loop turn are written together at its end, in one
    write(), in order; nothing is written before the turn ends."""

    async def scenario() -> None:
        stream = _Writes()
        logs.configure(stream, batched=True)
        log = logs.get_logger("policy")
        for n in range(3):
            log.info("decision", n=n)
        assert stream.writes == []
        await _next_turn()
        assert len(stream.writes) == 1
        assert [e["n"] for e in json_lines(stream)] == [0, 1, 2]

    asyncio.run(scenario())


def test_batched_warning_is_written_at_once_after_the_kept_lines() -> None:
    """A WARNING is written when logged, with the lines the turn kept before it first."""

    async def scenario() -> None:
        stream = _Writes()
        logs.configure(stream, batched=True)
        log = logs.get_logger("policy")
        log.info("decision", n=1)
        log.warning("registry_unavailable")
        assert [e["event"] for e in json_lines(stream)] == ["decision", "registry_unavailable"]
        logging.getLogger("asyncio").error("boom")
        assert json_lines(stream)[-1]["event"] == "boom"
        await _next_turn()
        assert len(json_lines(stream)) == 3

    asyncio.run(scenario())


def test_batched_writes_stay_within_pipe_buf() -> None:
    """Kept lines are written before they would pass PIPE_BUF bytes in one write (so
    that lines of processes sharing a pipe never mix); every line whole, in order."""

    async def scenario() -> None:
        stream = _Writes()
        logs.configure(stream, batched=True)
        log = logs.get_logger("policy")
        for n in range(60):
            log.info("decision", n=n, pad="é" * 60)
        await _next_turn()
        assert len(stream.writes) > 1
        assert all(len(w.encode()) <= logs.Lines.PIPE_BUF for w in stream.writes)
        assert all(w.endswith("\n") for w in stream.writes)
        assert [e["n"] for e in json_lines(stream)] == list(range(60))

    asyncio.run(scenario())


def test_batched_outside_an_event_loop_writes_at_once() -> None:
    """With no event loop running, a batched writer writes each line when logged."""
    stream = _Writes()
    logs.configure(stream, batched=True)
    logs.get_logger("cli").info("started")
    assert len(json_lines(stream)) == 1


def test_flush_writes_what_is_kept() -> None:
    """flush() (at exit, on reconfiguring) writes the lines kept so far at once."""

    async def scenario() -> None:
        stream = _Writes()
        lines = logs.Lines(stream, batched=True)
        lines.msg('{"event":"a"}')
        assert stream.getvalue() == ""
        lines.flush()
        assert stream.getvalue() == '{"event":"a"}\n'
        await _next_turn()  # the scheduled flush finds nothing left
        assert len(stream.writes) == 1

    asyncio.run(scenario())


def test_reconfiguring_flushes_the_kept_lines() -> None:
    """Lines kept by a batched writer are written when logging is configured anew."""

    async def scenario() -> None:
        stream = _Writes()
        logs.configure(stream, batched=True)
        logs.get_logger("daemon").info("stopping")
        logs.configure(io.StringIO())
        assert [e["event"] for e in json_lines(stream)] == ["stopping"]

    asyncio.run(scenario())


def test_info_interpolates_positional_arguments() -> None:
    """An info call with positional arguments formats them into the event, as
    structlog's bound loggers do."""
    stream = io.StringIO()
    logs.configure(stream)
    logs.get_logger("daemon").info("listening on %s:%d", "127.0.0.1", 10040, kind="policy")
    (entry,) = json_lines(stream)
    assert entry["event"] == "listening on 127.0.0.1:10040"
    assert entry["kind"] == "policy"


def test_batched_after_the_loop_ended_writes_at_once() -> None:
    """Once the event loop that kept lines has ended, a line logged outside any loop is
    written at once (after the lines the loop kept)."""
    stream = _Writes()
    logs.configure(stream, batched=True)
    log = logs.get_logger("daemon")

    async def scenario() -> None:
        log.info("serving")

    asyncio.run(scenario())
    log.info("stopped")
    assert [e["event"] for e in json_lines(stream)] == ["serving", "stopped"]


def test_unknown_level_names_the_value() -> None:
    """Level names are taken in any case; anything else is named with the names taken."""
    assert logs.unknown_level("warning") is None
    assert logs.unknown_level("DEBUG") is None
    assert logs.unknown_level("verbose") == (
        "FILTERD_LOG_LEVEL: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR"
    )
