"""Prometheus metrics: what `GET /metrics` shows (the one owner of prometheus_client).

Each Metrics object has a registry of its own, so two services in one process
(tests, the CLI) never share counters. Label values come from fixed sets
(front end, decision, reason, origin, upstream error kind): no address and no
free text ever becomes a label.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
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


class _PerRecipient(Collector):
    """The two metrics that change once per recipient (decisions, registry round
    trips), kept as plain numbers and turned into Prometheus families when
    scraped: a prometheus_client child's inc()/observe() takes a lock and costs
    several times more, once per recipient."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, tuple[list[int], list[float]]] = {}
        """Per operation: count per bucket (the last one +Inf), and [sum]."""

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name check)."""
        return self._families(empty=True)

    def collect(self) -> Iterator[Metric]:
        """The families with their current samples."""
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "filterd_decisions",
            "Recipient decisions by front end, decision and reason.",
            labels=["front_end", "decision", "reason"],
        )
        latency = HistogramMetricFamily(
            "filterd_registry_seconds",
            "Registry round trips by operation (lookup, record).",
            labels=["operation"],
        )
        if not empty:
            for key, count in list(self.decisions.items()):
                decisions.add_metric(list(key), count)
            for operation, (counts, total) in list(self.latency.items()):
                cumulative = zip(_BOUNDS, accumulate(counts), strict=True)
                latency.add_metric([operation], list(cumulative), total[0])
        yield decisions
        yield latency


class Metrics:
    """Counters and histograms of one filterd process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self._hot = _PerRecipient()
        self.registry.register(self._hot)
        self._optouts = Counter(
            "filterd_optouts",
            "Refusals recorded one by one, by origin (cli, smpp, one-click, mailto).",
            ["origin"],
            registry=self.registry,
        )
        self._upstream_errors = Counter(
            "filterd_upstream_errors",
            "Failures handing messages on, by front end and kind.",
            ["front_end", "kind"],
            registry=self.registry,
        )
        self._registry_errors = Counter(
            "filterd_registry_errors",
            "Registry operations that failed (registry unavailable).",
            ["operation"],
            registry=self.registry,
        )

    def decision(self, front_end: str, decision: str, reason: str | None) -> None:
        """Count one recipient decision."""
        key = (front_end, decision, reason or "none")
        counts = self._hot.decisions
        counts[key] = counts.get(key, 0) + 1

    def registry_latency(self, operation: str, seconds: float) -> None:
        """Observe one registry round trip."""
        found = self._hot.latency.get(operation)
        if found is None:
            found = self._hot.latency[operation] = ([0] * (len(_LATENCY_BUCKETS) + 1), [0.0])
        found[0][bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        found[1][0] += seconds

    def registry_error(self, operation: str) -> None:
        """Count one failed registry operation."""
        self._registry_errors.labels(operation).inc()

    def optout(self, origin: str) -> None:
        """Count one refusal recorded by `origin`."""
        self._optouts.labels(origin).inc()

    def upstream_error(self, front_end: str, kind: str) -> None:
        """Count one failure to hand a message on (kind: connect, refused, timeout ...)."""
        self._upstream_errors.labels(front_end, kind).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
