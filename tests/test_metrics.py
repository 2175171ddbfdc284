"""filterd.metrics: the counters and histograms `GET /metrics` exposes.

Each Metrics object keeps its own registry (two never share counts); the text
exposition parses as Prometheus text; label values are the fixed names the
callers pass (a missing reason shows as "none"); another process's snapshot
given through include() adds in at scrape time, or not at all when malformed.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from filterd.metrics import CONTENT_TYPE, Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of sample `name` with exactly `labels` in the rendered text, or None."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def test_decisions_counted_by_front_end_decision_and_reason() -> None:
    """Each decision increments the counter of its (front end, decision, reason); no reason
    is shown as "none"."""
    metrics = Metrics()
    metrics.decision("smtp", "drop", "refused")
    metrics.decision("smtp", "drop", "refused")
    metrics.decision("smpp", "deliver", None)
    name = "filterd_decisions_total"
    assert sample(metrics, name, front_end="smtp", decision="drop", reason="refused") == 2
    assert sample(metrics, name, front_end="smpp", decision="deliver", reason="none") == 1
    assert sample(metrics, name, front_end="smtp", decision="deliver", reason="none") is None


def test_registry_latency_histogram() -> None:
    """Registry round trips are observed per operation: count, sum and buckets move."""
    metrics = Metrics()
    metrics.registry_latency("lookup", 0.0003)
    metrics.registry_latency("lookup", 0.2)
    metrics.registry_latency("record", 0.001)
    name = "filterd_registry_seconds"
    assert sample(metrics, f"{name}_count", operation="lookup") == 2
    assert sample(metrics, f"{name}_sum", operation="lookup") == pytest.approx(0.2003)
    assert sample(metrics, f"{name}_bucket", operation="lookup", le="0.0005") == 1
    assert sample(metrics, f"{name}_bucket", operation="lookup", le="+Inf") == 2
    assert sample(metrics, f"{name}_count", operation="record") == 1


def test_optouts_upstream_and_registry_errors() -> None:
    """Opt-outs by origin, upstream errors by front end and kind, registry errors by
    operation are each counted."""
    metrics = Metrics()
    metrics.optout("one-click")
    metrics.optout("one-click")
    metrics.optout("smpp")
    metrics.upstream_error("smtp", "connect")
    metrics.registry_error("lookup")
    assert sample(metrics, "filterd_optouts_total", origin="one-click") == 2
    assert sample(metrics, "filterd_optouts_total", origin="smpp") == 1
    assert sample(metrics, "filterd_upstream_errors_total", front_end="smtp", kind="connect") == 1
    assert sample(metrics, "filterd_registry_errors_total", operation="lookup") == 1


def test_two_metrics_objects_do_not_share_counts() -> None:
    """Counts in one Metrics object do not show in another (each has its own registry)."""
    first, second = Metrics(), Metrics()
    first.optout("cli")
    assert sample(first, "filterd_optouts_total", origin="cli") == 1
    assert sample(second, "filterd_optouts_total", origin="cli") is None


def test_render_is_prometheus_text_with_help_and_process_metrics() -> None:
    """render() is the text exposition (HELP/TYPE lines, process metrics included);
    CONTENT_TYPE is the Prometheus text type."""
    metrics = Metrics()
    metrics.decision("policy", "defer", "registry_unavailable")
    text = metrics.render().decode()
    assert "# HELP filterd_decisions_total Recipient decisions" in text
    assert "# TYPE filterd_decisions_total counter" in text
    assert "# TYPE filterd_registry_seconds histogram" in text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"filterd_decisions", "filterd_registry_seconds", "process_cpu_seconds"} <= names
    assert CONTENT_TYPE.startswith("text/plain")


def test_histogram_buckets_count_values_up_to_and_including_their_bound() -> None:
    """A round trip of exactly a bucket's bound is counted in that bucket (`le`), one just
    above it in the next; values beyond the last bound only in +Inf; buckets are
    cumulative, as a prometheus_client Histogram exposes them."""
    metrics = Metrics()
    for seconds in (0.001, 0.0010001, 2.5, 7.0):
        metrics.registry_latency("lookup", seconds)
    name = "filterd_registry_seconds_bucket"
    assert sample(metrics, name, operation="lookup", le="0.0005") == 0
    assert sample(metrics, name, operation="lookup", le="0.001") == 1
    assert sample(metrics, name, operation="lookup", le="0.002") == 2
    assert sample(metrics, name, operation="lookup", le="2.5") == 3
    assert sample(metrics, name, operation="lookup", le="+Inf") == 4


def test_snapshot_of_one_process_adds_into_another_at_scrape() -> None:
    """A snapshot (JSON-able) of one process's counts, given to another through
    include(), is added to that one's counters and histograms at every scrape; the
    other's own counts are not changed by it."""
    worker, main = Metrics(), Metrics()
    worker.decision("smtp", "drop", "refused")
    worker.decision("smtp", "drop", "refused")
    worker.optout("smpp")
    worker.upstream_error("smtp", "rcpt_4xx")
    worker.registry_error("lookup")
    worker.registry_latency("lookup", 0.0003)
    main.decision("smtp", "drop", "refused")
    main.registry_latency("lookup", 0.2)
    snapshot = json.loads(json.dumps(worker.snapshot()))
    main.include(lambda: [snapshot])
    name = "filterd_decisions_total"
    assert sample(main, name, front_end="smtp", decision="drop", reason="refused") == 3
    assert sample(main, "filterd_optouts_total", origin="smpp") == 1
    assert sample(main, "filterd_upstream_errors_total", front_end="smtp", kind="rcpt_4xx") == 1
    assert sample(main, "filterd_registry_errors_total", operation="lookup") == 1
    assert sample(main, "filterd_registry_seconds_count", operation="lookup") == 2
    assert sample(main, "filterd_registry_seconds_sum", operation="lookup") == pytest.approx(0.2003)
    assert sample(main, "filterd_registry_seconds_bucket", operation="lookup", le="0.0005") == 1
    assert sample(main, name, front_end="smtp", decision="drop", reason="refused") == 3
    assert main.snapshot()["counters"]["filterd_decisions"] == [["smtp", "drop", "refused", 1]]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"counters": {"filterd_nope": []}, "latency": {}},
        {"counters": {"filterd_optouts": [["cli", "x", 1]]}, "latency": {}},
        {"counters": {"filterd_optouts": [["cli", -1]]}, "latency": {}},
        {"counters": {"filterd_optouts": [["cli", 1.5]]}, "latency": {}},
        {"counters": {"filterd_optouts": [[1, 1]]}, "latency": {}},
        {"counters": {"filterd_optouts": [["cli", 2]]}, "latency": {"lookup": [[1, 2], 0.1]}},
        {"counters": {"filterd_optouts": [["cli", 2]]}, "latency": {"lookup": [[0] * 14, "x"]}},
        {"counters": {"filterd_optouts": [["cli", 2]]}},
        {"counters": 7, "latency": {}},
    ],
)
def test_snapshot_of_the_wrong_shape_is_left_out_whole(bad: object) -> None:
    """A peer snapshot that is not what snapshot() writes (unknown counter, wrong label
    count or type, negative or fractional count, short histogram, missing part) adds
    nothing at all, not even its valid rows; the scrape still works and good peers count."""
    main, worker = Metrics(), Metrics()
    worker.optout("cli")
    main.include(lambda: [bad, worker.snapshot()])
    assert sample(main, "filterd_optouts_total", origin="cli") == 1
    assert sample(main, "filterd_registry_seconds_count", operation="lookup") is None
