"""structlog set-up: JSON lines when not on a TTY, readable console output on one.

Only masked addresses are ever passed to a logger (normalize.mask). aiosmtpd's
own logger ("mail.log") logs recipients and AUTH lines at INFO, so it is held
at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog


def configure(stream: TextIO | None = None, level: str = "INFO", *, cache: bool = False) -> None:
    """Send structured logs to `stream` (the daemon: stdout; filterctl: stderr).

    `cache` binds each logger on first use (faster; for a process that configures
    logging once, like the daemon).
    """
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    wrapper: type[Any] = structlog.make_filtering_bound_logger(numeric)
    if out.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
        wrapper = _json_lines_class(wrapper)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    structlog.configure(
        # the JSON wrapper runs these same steps itself, in one function
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=wrapper,
        # one write() per line: lines of several worker processes sharing stdout never mix
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    # Records of libraries' stdlib loggers go through the same renderer.
    handler = logging.StreamHandler(out)
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
            return self._logger.msg(_dumps(line))

    return JsonLines


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


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to a component name."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component=name)
    return logger


def bind(**values: object) -> None:
    """Add key/values to every later log line of this process (or task)."""
    structlog.contextvars.bind_contextvars(**values)
