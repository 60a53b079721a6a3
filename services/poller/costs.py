"""What this poller's published results cost: Prometheus counters and the ``/status`` section.

``PollerCosts.count(record, chunk)`` is called with each chunk of a batch's emissions once
its transaction is committed (``publisher.py``'s ``on_chunk``), so it counts what this process
published, each result once: a chunk committed by an earlier incarnation (the publisher
resumes after it) is not counted again. The batch's ``BatchRecord`` gives the model, endpoint
and API key name of every result in it (a batch never mixes keys).

These totals are per process and since its start: with several pollers, sum the metrics
across instances (``sum by (api_key) (poller_cost_usd_total)``); Prometheus counters handle
restarts (``increase``). The totals over the whole history, for billing, are those of
``batchpipe costs`` (the results topic read back, where each result is exactly once).

Metrics, labelled ``api_key`` (a key's name, or ``unattributed``), ``endpoint`` and
``model``:

- ``poller_usage_tokens_total{kind=input|cached|output}``: tokens of the published results;
- ``poller_usage_results_total``: results published;
- ``poller_cost_usd_total{tier=batch|sync}``: their USD at the batch price and at the
  synchronous price (the saving is the difference), only for models with a price;
- ``poller_unpriced_results_total``: results of models the price table does not know.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from batchpipe.services.poller.results import Emission
from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.costs import UNATTRIBUTED, PriceTable, Totals, report

LABELS = ["api_key", "endpoint", "model"]


class PollerCosts:
    """Token and USD totals of the results this process published, in ``registry``."""

    def __init__(self, registry: CollectorRegistry, prices: PriceTable) -> None:
        self.prices = prices
        self.totals = Totals()
        self.since = time.time()
        self.tokens = Counter(
            "poller_usage_tokens",
            "Tokens of published results, by API key name, endpoint, model and kind.",
            [*LABELS, "kind"],
            registry=registry,
        )
        self.results = Counter(
            "poller_usage_results",
            "Results published, by API key name, endpoint and model.",
            LABELS,
            registry=registry,
        )
        self.usd = Counter(
            "poller_cost_usd",
            "USD of published results at the batch and at the synchronous price (priced "
            "models only), by API key name, endpoint, model and tier.",
            [*LABELS, "tier"],
            registry=registry,
        )
        self.unpriced = Counter(
            "poller_unpriced_results",
            "Results of models without a price, by API key name, endpoint and model.",
            LABELS,
            registry=registry,
        )

    def count(self, record: BatchRecord, chunk: Iterable[Emission]) -> None:
        """Count the results of one committed chunk of ``record``'s batch (retries skipped)."""
        results = input_tokens = cached_tokens = output_tokens = 0
        for emission in chunk:
            if emission.kind != "result":
                continue
            results += 1
            input_tokens += emission.input_tokens
            cached_tokens += emission.cached_tokens
            output_tokens += emission.output_tokens
        if not results:
            return
        self.totals.add(
            api_key=record.api_key,
            endpoint=record.endpoint,
            model=record.model,
            input_tokens=input_tokens,
            cached_tokens=cached_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            results=results,
        )
        labels = (record.api_key or UNATTRIBUTED, record.endpoint, record.model)
        self.results.labels(*labels).inc(results)
        for kind, count in (
            ("input", input_tokens),
            ("cached", cached_tokens),
            ("output", output_tokens),
        ):
            if count:
                self.tokens.labels(*labels, kind).inc(count)
        price = self.prices.lookup(record.model)
        if price is None:
            self.unpriced.labels(*labels).inc(results)
            return
        tokens = (input_tokens, cached_tokens, output_tokens)
        self.usd.labels(*labels, "batch").inc(float(price.batch.cost(*tokens)))
        self.usd.labels(*labels, "sync").inc(float(price.sync.cost(*tokens)))

    def snapshot(self) -> dict[str, Any]:
        """The ``costs`` section of ``GET /status``: this process's totals since ``since``."""
        doc = report(self.totals, self.prices)
        return {"since": round(self.since, 3), "scope": "this poller process", **doc}
