"""status.py: the /status document and the Prometheus metrics."""

from __future__ import annotations

import time

from batchpipe.services.poller.poll import Tracked
from batchpipe.services.poller.results import Emission
from batchpipe.services.poller.status import RATE_WINDOW_SECONDS, PollerMetrics, status_snapshot

from .helpers import record


def test_status_snapshot_and_metrics() -> None:
    tracked = {
        "batch_1": Tracked(
            record=record("batch_1", request_count=3),
            partition=0,
            offset=5,
            status="in_progress",
            request_counts={"total": 3, "completed": 1, "failed": 0},
        ),
        "batch_2": Tracked(record=record("batch_2", request_count=7), partition=1, offset=0),
    }
    metrics = PollerMetrics(lambda: list(tracked.values()))
    metrics.count_chunk(
        "gpt-4o-mini",
        [
            Emission("result", "x", b"{}", [], "succeeded", 5, 7),
            Emission("retry", "y", b"{}", [], "retry"),
        ],
    )
    doc = status_snapshot(tracked, metrics, now=1_700_000_060)
    assert doc["totals"] == {
        "in_flight": 2,
        "requests_in_flight": 10,
        "by_status": {"in_progress": 1, "unknown": 1},
        "results_published": 1,
        "results_by_status": {"succeeded": 1},
        "results_per_second": 0.1,
        "retries_published": 1,
        "dead_letters_by_reason": {},
    }
    first = doc["batches"][0]
    assert first["model"] == "gpt-4o-mini" and first["age_seconds"] == 60.0
    assert first["request_counts"] == {"total": 3, "completed": 1, "failed": 0}
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'poller_batches_in_flight{status="in_progress"} 1.0' in text
    assert 'poller_tokens_total{kind="output",model="gpt-4o-mini"} 7.0' in text
    assert "poller_retries_total 1.0" in text


def test_results_per_second_window_and_dead_letters() -> None:
    metrics = PollerMetrics(list)
    for _ in range(3):
        metrics.count_chunk("m", [Emission("result", "x", b"{}", [], "failed")] * 10)
    assert metrics.results_per_second() == 3.0  # 30 results over the 10 s window
    assert metrics.results_per_second(now=time.monotonic() + RATE_WINDOW_SECONDS + 1) == 0.0
    metrics.count_dead_letters("unreadable_batch_record", 2)
    metrics.count_dead_letters("unreadable_batch_record", 0)
    doc = status_snapshot({}, metrics)
    assert doc["totals"]["dead_letters_by_reason"] == {"unreadable_batch_record": 2}
    assert doc["totals"]["results_by_status"] == {"failed": 30}
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'poller_dead_letters_total{reason="unreadable_batch_record"} 2.0' in text
