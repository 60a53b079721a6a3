"""Prometheus metrics of the dispatcher, in its own ``CollectorRegistry``."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.consumed = Counter(
            "dispatcher_requests_consumed", "Requests read from the requests topic.", registry=r
        )
        self.skipped = Counter(
            "dispatcher_requests_skipped",
            "Replayed requests skipped because the ledger shows them in a batch.",
            registry=r,
        )
        self.duplicates = Counter(
            "dispatcher_duplicates_dropped",
            "Requests dropped: custom_id already in the open window.",
            registry=r,
        )
        self.dead_letters = Counter(
            "dispatcher_dead_letters",
            "Invalid requests sent to dead-letters.",
            ["reason"],
            registry=r,
        )
        self.batches = Counter(
            "dispatcher_batches_submitted", "Batches created and published.", ["cut"], registry=r
        )
        self.reconciled = Counter(
            "dispatcher_ledger_reconciled",
            "Unfinished ledger entries resolved after a restart or rebalance.",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "dispatcher_openai_retries", "Failed OpenAI calls retried.", ["step"], registry=r
        )
        self.lines = Histogram(
            "dispatcher_batch_lines",
            "Lines per batch.",
            buckets=(1, 10, 100, 1000, 5000, 10_000, 25_000, 50_000),
            registry=r,
        )
        self.bytes = Histogram(
            "dispatcher_batch_bytes",
            "JSONL bytes per batch.",
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 5e7, 1e8, 2e8),
            registry=r,
        )
        self.window_age = Histogram(
            "dispatcher_window_age_seconds",
            "Age of a window (since its first request) when cut.",
            buckets=(0.1, 1, 5, 30, 60, 300, 900, 1800, 3600, 7200),
            registry=r,
        )
        self.latency = Histogram(
            "dispatcher_submission_seconds",
            "From cut to published batch record (write, upload, create, publish).",
            buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.buffered = Gauge(
            "dispatcher_buffered_requests", "Requests in open windows.", registry=r
        )
        self.token_waits = Counter(
            "dispatcher_token_budget_waits",
            "Windows that had to wait for the enqueued-token budget.",
            registry=r,
        )
        self.token_waiting = Gauge(
            "dispatcher_token_budget_waiting",
            "Windows waiting for the enqueued-token budget now.",
            registry=r,
        )
        self.in_flight = Gauge(
            "dispatcher_dispatches_in_flight",
            "Windows being submitted now (upload, create, publish).",
            registry=r,
        )
        self.blocked = Gauge(
            "dispatcher_backpressure",
            "1 while consumption waits for a submission (OpenAI slow or unreachable).",
            registry=r,
        )
