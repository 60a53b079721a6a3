"""services/poller/costs.py: the cost metrics and the ``/status`` section of published chunks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from batchpipe.services.poller.costs import PollerCosts
from batchpipe.services.poller.results import Emission
from batchpipe.shared.costs import shipped_prices

from .helpers import record


def _result(custom_id: str, tokens_in: int, tokens_out: int, cached: int = 0) -> Emission:
    return Emission("result", custom_id, b"{}", [], "succeeded", tokens_in, tokens_out, cached)


def test_metrics_and_snapshot_per_key_endpoint_and_model() -> None:
    registry = CollectorRegistry()
    costs = PollerCosts(registry, shipped_prices())
    team = record("b1").model_copy(update={"api_key": "team-a"})  # gpt-4o-mini, chat
    costs.count(
        team,
        [
            _result("a", 600_000, 100_000, cached=200_000),
            _result("b", 400_000, 100_000),
            Emission("retry", "c", b"{}", [], "retry"),
        ],
    )
    costs.count(record("b2").model_copy(update={"model": "my-deployment"}), [_result("d", 9, 1)])
    value = registry.get_sample_value
    team_a = {"api_key": "team-a", "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini"}
    assert value("poller_usage_results_total", team_a) == 2
    assert value("poller_usage_tokens_total", {**team_a, "kind": "input"}) == 1_000_000
    assert value("poller_usage_tokens_total", {**team_a, "kind": "cached"}) == 200_000
    assert value("poller_usage_tokens_total", {**team_a, "kind": "output"}) == 200_000
    # gpt-4o-mini batch: 1M input at 0.075 + 0.2M output at 0.30 = 0.135
    assert value("poller_cost_usd_total", {**team_a, "tier": "batch"}) == pytest.approx(0.135)
    # sync: 0.8M at 0.15 + 0.2M cached at 0.075 + 0.2M output at 0.60 = 0.255
    assert value("poller_cost_usd_total", {**team_a, "tier": "sync"}) == pytest.approx(0.255)
    unpriced = {**team_a, "api_key": "unattributed", "model": "my-deployment"}
    assert value("poller_unpriced_results_total", unpriced) == 1
    assert value("poller_usage_tokens_total", {**unpriced, "kind": "input"}) == 9
    assert value("poller_cost_usd_total", {**unpriced, "tier": "batch"}) is None
    assert "poller_cost_usd_total" in generate_latest(registry).decode()
    doc = costs.snapshot()
    assert doc["scope"] == "this poller process" and doc["prices"]["as_of"]
    assert doc["total"]["results"] == 3 and doc["total"]["cost_usd"] == 0.135
    assert doc["total"]["saving_usd"] == 0.12 and doc["unpriced_models"] == ["my-deployment"]
    assert {r["api_key"] for r in doc["by_api_key"]} == {"team-a", "unattributed"}
