"""What the poller is doing: ``GET /status`` JSON and its Prometheus metrics.

``status_snapshot`` lists each in-flight batch (provider, model, request counts, the
provider's status, age) and
totals; ``PollerMetrics`` holds the per-service registry: batches by status (a gauge of the
followed batches plus a counter of finished ones), results by status, retries, input/output
tokens by model (from each result's ``usage``), results the sizing rule changed (by code:
``result_too_large``, ``retry_too_large``), ``batches.retrieve`` calls by outcome and the
time from a batch finishing at its provider to its last result being committed, and the dead
letters this poller wrote, by reason (``unreadable_batch_record``: a ``batches`` record that
does not decode). ``totals`` also gives results by status and results per second over the
last ``RATE_WINDOW_SECONDS`` (from the committed chunks this process counted).
"""

from __future__ import annotations

import time
from collections import Counter as TallyCounter
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from batchpipe.services.poller.poll import Tracked
from batchpipe.services.poller.results import Emission

RATE_WINDOW_SECONDS = 10.0


class _FollowedBatches(Collector):
    def __init__(self, tracked: Callable[[], Iterable[Tracked]]) -> None:
        self._tracked = tracked

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "poller_batches_in_flight",
            "Batches being followed, by their provider's last known status.",
            labels=["status"],
        )
        tally = TallyCounter(t.status for t in self._tracked())
        for status, count in sorted(tally.items()):
            gauge.add_metric([status], count)
        yield gauge


class PollerMetrics:
    """The poller's Prometheus metrics, in its own registry."""

    def __init__(self, tracked: Callable[[], Iterable[Tracked]]) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.registry.register(_FollowedBatches(tracked))
        self.batches_finished = Counter(
            "poller_batches_finished",
            "Batches whose results were all published, by final status.",
            ["status"],
            registry=reg,
        )
        self.results = Counter(
            "poller_results", "Results published, by status.", ["status"], registry=reg
        )
        self.retries = Counter(
            "poller_retries", "Requests re-published to the requests topic.", registry=reg
        )
        self.tokens = Counter(
            "poller_tokens",
            "Tokens reported in results' usage, by model and kind (input/output).",
            ["model", "kind"],
            registry=reg,
        )
        self.too_large = Counter(
            "poller_results_too_large",
            "Results published changed by the sizing rule because a message would not fit "
            "its topic, by code (result_too_large: body left out; retry_too_large: "
            "terminal instead of retried).",
            ["code"],
            registry=reg,
        )
        self.retrieves = Counter(
            "poller_retrieves", "Batch retrieve calls, by outcome.", ["outcome"], registry=reg
        )
        self.publish_lag = Histogram(
            "poller_results_lag_seconds",
            "Time from a batch finishing at its provider to its last result committed.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
            registry=reg,
        )
        self.dead_letters = Counter(
            "poller_dead_letters",
            "Dead letters this poller wrote, by reason code.",
            ["reason"],
            registry=reg,
        )
        self.published_total = 0
        self.retried_total = 0
        self.results_by_status: TallyCounter[str] = TallyCounter()
        self.dead_letters_by_reason: TallyCounter[str] = TallyCounter()
        # (monotonic time, results) of each counted chunk within the rate window
        self._recent: deque[tuple[float, int]] = deque()

    def count_dead_letters(self, reason: str, count: int) -> None:
        """Count ``count`` dead letters of ``reason`` once they are committed."""
        if count:
            self.dead_letters.labels(reason).inc(count)
            self.dead_letters_by_reason[reason] += count

    def results_per_second(self, now: float | None = None) -> float:
        """Results published per second over the last ``RATE_WINDOW_SECONDS``."""
        now = time.monotonic() if now is None else now
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_SECONDS:
            self._recent.popleft()
        return round(sum(n for _, n in self._recent) / RATE_WINDOW_SECONDS, 2)

    def count_chunk(self, model: str, chunk: Iterable[Emission]) -> None:
        statuses: TallyCounter[str] = TallyCounter()
        tokens_in = tokens_out = 0
        for emission in chunk:
            statuses[emission.status] += 1
            if emission.oversized is not None:
                self.too_large.labels(emission.oversized).inc()
            tokens_in += emission.input_tokens
            tokens_out += emission.output_tokens
        retries = statuses.pop("retry", 0)
        if retries:
            self.retries.inc(retries)
            self.retried_total += retries
        published = 0
        for status, count in statuses.items():
            self.results.labels(status).inc(count)
            self.results_by_status[status] += count
            published += count
        if published:
            self.published_total += published
            self._recent.append((time.monotonic(), published))
            self.results_per_second()  # prunes the window
        if tokens_in:
            self.tokens.labels(model, "input").inc(tokens_in)
        if tokens_out:
            self.tokens.labels(model, "output").inc(tokens_out)


def status_snapshot(
    tracked: Mapping[str, Tracked], metrics: PollerMetrics, now: float | None = None
) -> dict[str, Any]:
    """The ``GET /status`` document."""
    now = time.time() if now is None else now
    batches = []
    by_status: TallyCounter[str] = TallyCounter()
    requests = 0
    for batch_id, t in sorted(tracked.items(), key=lambda item: item[1].record.submitted_at):
        by_status[t.status] += 1
        requests += t.record.request_count
        batches.append(
            {
                "batch_id": batch_id,
                "provider": t.record.provider,
                "model": t.record.model,
                "endpoint": t.record.endpoint,
                "status": t.status,
                "publishing": t.publishing,
                "request_count": t.record.request_count,
                "request_counts": t.request_counts,
                "age_seconds": round(max(0.0, now - t.record.submitted_at), 1),
                "submitted_at": t.record.submitted_at,
                "partition": t.partition,
                "offset": t.offset,
                "retrieves": t.retrieves,
                "errors": t.errors,
            }
        )
    return {
        "batches": batches,
        "totals": {
            "in_flight": len(batches),
            "requests_in_flight": requests,
            "by_status": dict(sorted(by_status.items())),
            "results_published": metrics.published_total,
            "results_by_status": dict(sorted(metrics.results_by_status.items())),
            "results_per_second": metrics.results_per_second(),
            "retries_published": metrics.retried_total,
            "dead_letters_by_reason": dict(sorted(metrics.dead_letters_by_reason.items())),
        },
    }
