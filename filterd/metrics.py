"""Prometheus metrics: what `GET /metrics` shows (the one owner of prometheus_client).

Each Metrics object has a registry of its own, so two services in one process
(tests, the CLI) never share counters. Label values come from fixed sets
(front end, decision, reason, origin, upstream error kind): no address and no
free text ever becomes a label.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters and histograms of one filterd process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self._decisions = Counter(
            "filterd_decisions",
            "Recipient decisions by front end, decision and reason.",
            ["front_end", "decision", "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "filterd_registry_seconds",
            "Registry round trips by operation (lookup, record).",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self._children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def decision(self, front_end: str, decision: str, reason: str | None) -> None:
        """Count one recipient decision."""
        key = (front_end, decision, reason or "")
        child = self._children.get(key)
        if child is None:
            child = self._decisions.labels(front_end, decision, reason or "none")
            self._children[key] = child
        child.inc()

    def registry_latency(self, operation: str, seconds: float) -> None:
        """Observe one registry round trip."""
        child = self._latency_children.get(operation)
        if child is None:
            child = self._latency_children[operation] = self._latency.labels(operation)
        child.observe(seconds)

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
