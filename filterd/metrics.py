"""Prometheus metrics: what `GET /metrics` shows (the one owner of prometheus_client).

Each Metrics object has a registry of its own, so two services in one process
(tests, the CLI) never share counters. Label values come from fixed sets
(front end, decision, reason, origin, upstream error kind): no address and no
free text ever becomes a label.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_BOUNDS = [*(repr(bound) for bound in _LATENCY_BUCKETS), "+Inf"]
"""The `le` labels, as prometheus_client writes them."""
CONTENT_TYPE = CONTENT_TYPE_LATEST


_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "filterd_decisions": (
        "Recipient decisions by front end, decision and reason.",
        ("front_end", "decision", "reason"),
    ),
    "filterd_optouts": (
        "Refusals recorded one by one, by origin (cli, smpp, one-click, mailto).",
        ("origin",),
    ),
    "filterd_upstream_errors": (
        "Failures handing messages on, by front end and kind.",
        ("front_end", "kind"),
    ),
    "filterd_registry_errors": (
        "Registry operations that failed (registry unavailable).",
        ("operation",),
    ),
}
"""Every counter family: help text and label names."""
_HISTOGRAM = "filterd_registry_seconds"

Snapshot = dict[str, Any]
"""The counts of one process as JSON-able data (`Metrics.snapshot`)."""


class _Counts(Collector):
    """Every filterd counter and histogram, kept as plain numbers and turned into
    Prometheus families when scraped (a prometheus_client child's inc()/observe()
    takes a lock and costs several times more, once per recipient), plus the
    snapshots of other processes (workers) added in at scrape time."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in _COUNTERS}
        self.latency: dict[str, tuple[list[int], list[float]]] = {}
        """Per operation: count per bucket (the last one +Inf), and [sum]."""
        self.peers: Callable[[], Iterable[Snapshot]] | None = None

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name check)."""
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        """The families with their current samples."""
        return self._families(empty=False)

    def snapshot(self) -> Snapshot:
        """This process's counts as JSON-able data."""
        return {
            "counters": {
                name: [[*key, count] for key, count in list(counts.items())]
                for name, counts in self.counters.items()
            },
            "latency": {
                operation: [list(counts), total[0]]
                for operation, (counts, total) in list(self.latency.items())
            },
        }

    def _totals(self) -> tuple[dict[str, dict[tuple[str, ...], int]], dict[str, Any]]:
        counters = {name: dict(counts) for name, counts in self.counters.items()}
        latency = {op: (list(c), [t[0]]) for op, (c, t) in list(self.latency.items())}
        for peer in self.peers() if self.peers is not None else ():
            with contextlib.suppress(ValueError):  # not a snapshot: left out whole
                add_snapshot(counters, latency, peer)
        return counters, latency

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        counters, latency = self._totals() if not empty else ({}, {})
        for name, (text, labels) in _COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=list(labels))
            for key, count in counters.get(name, {}).items():
                family.add_metric(list(key), count)
            yield family
        histogram = HistogramMetricFamily(
            _HISTOGRAM, "Registry round trips by operation (lookup, record).", labels=["operation"]
        )
        for operation, (counts, total) in latency.items():
            cumulative = zip(_BOUNDS, accumulate(counts), strict=True)
            histogram.add_metric([operation], list(cumulative), total[0])
        yield histogram


def add_snapshot(
    counters: dict[str, dict[tuple[str, ...], int]],
    latency: dict[str, tuple[list[int], list[float]]],
    snapshot: object,
) -> None:
    """Add one process's snapshot into the totals; ValueError (nothing added) if it is
    not the shape `Metrics.snapshot` writes."""
    try:
        adding, buckets = _read_snapshot(snapshot)
    except (TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"not a metrics snapshot: {exc!r}") from exc
    for name, key, count in adding:
        into = counters.setdefault(name, {})
        into[key] = into.get(key, 0) + count
    for operation, counts, total in buckets:
        mine, mine_total = latency.setdefault(operation, ([0] * len(_BOUNDS), [0.0]))
        for index, count in enumerate(counts):
            mine[index] += count
        mine_total[0] += total


def _read_snapshot(
    snapshot: Any,
) -> tuple[list[tuple[str, tuple[str, ...], int]], list[tuple[str, list[int], float]]]:
    """The counter rows and histograms of a snapshot, checked (ValueError, TypeError,
    AttributeError or KeyError when it is not one)."""
    adding: list[tuple[str, tuple[str, ...], int]] = []
    for name, rows in dict(snapshot["counters"]).items():
        if name not in _COUNTERS:
            raise ValueError(f"unknown counter {name!r}")
        for row in rows:
            *key, count = row
            if len(key) != len(_COUNTERS[name][1]) or not all(isinstance(k, str) for k in key):
                raise ValueError(f"bad labels in {name}: {key!r}")
            if type(count) is not int or count < 0:
                raise ValueError(f"bad count in {name}: {count!r}")
            adding.append((name, tuple(key), count))
    buckets: list[tuple[str, list[int], float]] = []
    for operation, (counts, total) in dict(snapshot["latency"]).items():
        good = len(counts) == len(_BOUNDS) and all(type(c) is int and c >= 0 for c in counts)
        if not good or type(total) not in (int, float) or not isinstance(operation, str):
            raise ValueError(f"bad histogram for {operation!r}")
        buckets.append((operation, list(counts), float(total)))
    return adding, buckets


class Metrics:
    """Counters and histograms of one filterd process (and, in the main process of a
    `workers > 1` set-up, those its workers report: see `include`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self._counts = _Counts()
        self.registry.register(self._counts)

    def decision(self, front_end: str, decision: str, reason: str | None) -> None:
        """Count one recipient decision."""
        self._count("filterd_decisions", (front_end, decision, reason or "none"))

    def registry_latency(self, operation: str, seconds: float) -> None:
        """Observe one registry round trip."""
        found = self._counts.latency.get(operation)
        if found is None:
            found = self._counts.latency[operation] = ([0] * len(_BOUNDS), [0.0])
        found[0][bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        found[1][0] += seconds

    def registry_error(self, operation: str) -> None:
        """Count one failed registry operation."""
        self._count("filterd_registry_errors", (operation,))

    def optout(self, origin: str) -> None:
        """Count one refusal recorded by `origin`."""
        self._count("filterd_optouts", (origin,))

    def upstream_error(self, front_end: str, kind: str) -> None:
        """Count one failure to hand a message on (kind: connect, refused, timeout ...)."""
        self._count("filterd_upstream_errors", (front_end, kind))

    def _count(self, name: str, key: tuple[str, ...]) -> None:
        counts = self._counts.counters[name]
        counts[key] = counts.get(key, 0) + 1

    def snapshot(self) -> Snapshot:
        """This process's counts as JSON-able data (what a worker reports)."""
        return self._counts.snapshot()

    def include(self, peers: Callable[[], Iterable[Snapshot]]) -> None:
        """Add the snapshots `peers()` returns (other processes') into every scrape."""
        self._counts.peers = peers

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
