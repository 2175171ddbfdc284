"""structlog set-up: JSON lines when not on a TTY, readable console output on one.

Only masked addresses are ever passed to a logger (normalize.mask). aiosmtpd's
own logger ("mail.log") logs recipients and AUTH lines at INFO, so it is held
at WARNING.

Every line is written whole in one write() (`Lines`), so the lines of several
worker processes sharing stdout never mix. The daemon (`batched`) gathers the
INFO and DEBUG lines of one event-loop turn into one write() at the end of the
turn (a busy policy service logs a decision line per recipient: one write()
each cost a tenth of a decision's CPU).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""The level names FILTERD_LOG_LEVEL takes (any case)."""


def unknown_level(name: str) -> str | None:
    """Why `name` is no log level (the message an entry point prints), or None if it is one."""
    if name.upper() in logging.getLevelNamesMapping():
        return None
    return f"FILTERD_LOG_LEVEL: {name!r} is not one of {', '.join(LEVELS)}"


def configure(
    stream: TextIO | None = None, level: str = "INFO", *, cache: bool = False, batched: bool = False
) -> None:
    """Send structured logs to `stream` (the daemon: stdout; filterctl: stderr).

    `cache` binds each logger on first use (faster; for a process that configures
    logging once, like the daemon). `batched` (the daemon; not on a TTY): the INFO
    and DEBUG lines of one event-loop turn are written together at its end (see
    `Lines`); without it every line is written when logged.
    """
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    wrapper: type[Any] = structlog.make_filtering_bound_logger(numeric)
    tty = out.isatty()
    if tty:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        wrapper = _json_lines_class(wrapper)
    lines = _use(Lines(out, batched=batched and not tty))
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    structlog.configure(
        # the JSON wrapper runs these same steps itself, in one function
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=wrapper,
        logger_factory=lambda *_: lines,
        cache_logger_on_first_use=cache,
    )
    # Records of libraries' stdlib loggers go through the same renderer and writer.
    handler = _Handler(lines)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=_FOREIGN_EXTRAS),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,  # a traceback as text, not a tuple
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("mail.log").setLevel(logging.WARNING)


_FOREIGN_EXTRAS = ("error", "status")
"""Record attributes of libraries' log lines that are written as keys (set by filters
such as filterd.web's for aiohttp)."""


class _Clock:
    """ISO 8601 UTC timestamps with microseconds, as structlog's TimeStamper(fmt="iso",
    utc=True) writes them, with the date and time of day formatted once per second
    (a third of the cost of a decision line was the timestamp)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        event["timestamp"] = f"{self.prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


_timestamp = _Clock()


def _json_lines_class(filtering: type[Any]) -> type[Any]:
    """`filtering` (structlog's level-filtering bound logger) writing JSON lines with
    the processor chain of `configure` done in one function: bound keys, call keys,
    `event`, context variables, `level`, `timestamp`, a formatted exception. The
    same line as structlog's chain writes, for a third of the CPU (it is written
    once per recipient decision)."""

    class JsonLines(filtering):  # type: ignore[misc]
        """See _json_lines_class."""

        def _proxy_to_logger(
            self, method_name: str, event: str | None = None, **event_kw: Any
        ) -> Any:
            line = self._context.copy()
            line.update(event_kw)
            line["event"] = event
            structlog.contextvars.merge_contextvars(None, method_name, line)
            line["level"] = _LEVELS.get(method_name, method_name)
            _timestamp(None, method_name, line)
            if "exc_info" in line:
                structlog.processors.format_exc_info(None, method_name, line)
            if method_name in _LATER:
                return self._logger.msg(_dumps(line))
            return self._logger.now(_dumps(line))

    return JsonLines


_LATER = frozenset(("debug", "info", "msg"))
"""Level methods whose lines a batched writer may keep to the end of the loop turn."""


_LEVELS = {"warn": "warning", "exception": "error"}
"""Method names that structlog's add_log_level writes under another level name."""


def _dumps(event: object, **_: object) -> str:
    """JSON for one log line (orjson: a decision line costs about half as much). A value
    orjson refuses (a str with undecodable input in it, as surrogate escapes) is written
    with \\u escapes instead: a log call never raises."""
    try:
        return orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, default=str)


class Lines:
    """Writes log lines to a text stream, each whole in one write() (lines of several
    processes sharing the stream never mix).

    Batched, `msg` keeps the line while an event loop runs in this thread and writes
    the lines kept at the end of the loop turn, in one write() (flushed by a callback
    the turn schedules): at once when they would pass `PIPE_BUF` bytes (the most one
    write() to a pipe is guaranteed to keep together), and whenever `now` writes (a
    WARNING or worse, a library's record: those never wait, and the kept lines go
    first, in order). Outside an event loop, unbatched, and at exit (`flush`),
    everything is written at once.
    """

    PIPE_BUF = 4096

    def __init__(self, stream: TextIO, *, batched: bool) -> None:
        self._stream = stream
        self._batched = batched
        self._kept: list[str] = []
        self._size = 0
        self._due: asyncio.AbstractEventLoop | None = None
        """The loop on which a flush is scheduled."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop that ran in `_loop_thread` when a line was last kept: while it runs,
        it is that thread's running loop."""
        self._loop_thread = 0
        self._lock = threading.Lock()

    def msg(self, line: str) -> None:
        """Write `line` (batched: by the end of this loop turn)."""
        loop = self._loop
        if loop is None or self._loop_thread != threading.get_ident() or not loop.is_running():
            # not the loop this thread ran last: ask (a system call, in Python 3.11)
            loop = asyncio._get_running_loop() if self._batched else None
            if loop is None:
                self.now(line)
                return
            self._loop, self._loop_thread = loop, threading.get_ident()
        size = (len(line) if line.isascii() else len(line.encode())) + 1
        with self._lock:
            if self._size + size > self.PIPE_BUF and self._kept:
                self._write_kept()
            self._kept.append(line)
            self._size += size
            if self._due is not loop:
                self._due = loop
                loop.call_soon(self.flush)

    def now(self, line: str) -> None:
        """Write the lines kept, then `line`, at once."""
        with self._lock:
            self._kept.append(line)
            self._write_kept()

    def flush(self) -> None:
        """Write the lines kept (the end of a loop turn, exit)."""
        with self._lock:
            self._due = None
            if self._kept:
                self._write_kept()

    # structlog's console chain (on a TTY) calls the method of the line's level
    debug = info = log = msg
    warning = warn = error = err = critical = fatal = exception = failure = now

    def _write_kept(self) -> None:
        kept, self._kept, self._size = self._kept, [], 0
        kept.append("")
        self._stream.write("\n".join(kept))
        self._stream.flush()


_current: Lines | None = None


def _use(lines: Lines) -> Lines:
    """Make `lines` the process's writer: the one before is flushed, this one will be
    at exit."""
    global _current  # noqa: PLW0603 - the one writer of the process
    if _current is not None:
        _current.flush()
    else:
        atexit.register(_flush_at_exit)
    _current = lines
    return lines


def _flush_at_exit() -> None:
    if _current is not None:
        _current.flush()


class _Handler(logging.Handler):
    """Libraries' stdlib records, formatted, written at once through `Lines`."""

    def __init__(self, lines: Lines) -> None:
        super().__init__()
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's line."""
        try:
            self._lines.now(self.format(record))
        except Exception:  # as logging.StreamHandler: reported, never raised
            self.handleError(record)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to a component name."""
    return cast("structlog.stdlib.BoundLogger", _Logger(name))


class _Logger:
    """A component's logger: structlog's lazy proxy, whose methods are kept on first use
    once the configuration caches loggers (the daemon): a log call then skips the
    proxy's look-up (most of a microsecond, once per decision line)."""

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(component=name)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._proxy, name)
        if structlog.get_config()["cache_logger_on_first_use"]:
            setattr(self, name, value)
        return value


def bind(**values: object) -> None:
    """Add key/values to every later log line of this process (or task)."""
    structlog.contextvars.bind_contextvars(**values)
