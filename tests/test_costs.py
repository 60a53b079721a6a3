"""shared/costs.py: prices, model matching, token totals and the priced report (no Kafka)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchpipe.shared.costs import (
    UNATTRIBUTED,
    Price,
    PriceFileError,
    Totals,
    load_prices,
    parse_prices,
    prices_of,
    report,
    shipped_prices,
)
from batchpipe.shared.settings import SettingsError
from tests.conftest import make_test_settings

TABLE: dict[str, Any] = {
    "as_of": "2099-01-01",
    "sources": ["test"],
    "models": {
        "m-a": {
            "aliases": ["m-a-2099-01-01"],
            "sync": {"input": 2.0, "cached_input": 1.0, "output": 8.0},
            "batch": {"input": 1.0, "cached_input": None, "output": 4.0},
        },
        "m-b": {
            "sync": {"input": 0.5, "output": 0},
            "batch": {"input": 0.25, "cached_input": 0.1, "output": 0},
        },
    },
}


def test_price_cost_counts_cached_input_apart() -> None:
    price = Price(Decimal("2"), Decimal("0.5"), Decimal("8"))
    # 1M input of which 400k cached, 250k output
    assert price.cost(1_000_000, 400_000, 250_000) == Decimal("1.2") + Decimal("0.2") + 2
    no_discount = Price(Decimal("2"), None, Decimal("8"))
    assert no_discount.cost(1_000_000, 400_000, 0) == Decimal("2")  # cached as input
    assert price.cost(10, 50, 0) == price.cost(10, 10, 0)  # cached never above input


def test_lookup_is_exact_or_a_listed_alias_never_a_stripped_suffix() -> None:
    table = parse_prices(TABLE)
    a = table.lookup("m-a")
    assert a is not None and table.lookup("m-a-2099-01-01") is a
    assert table.lookup("m-a-2099-02-02") is None  # an unlisted snapshot: no price
    assert table.lookup("M-A") is None and table.lookup("unknown") is None


def test_the_shipped_table_has_a_date_sources_and_sound_snapshots() -> None:
    table = shipped_prices()
    assert table.as_of and table.sources
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None and table.lookup("gpt-4o-mini-2024-07-18") is mini
    old, new = table.lookup("gpt-4o-2024-05-13"), table.lookup("gpt-4o")
    assert old is not None and new is not None and old.sync.input != new.sync.input
    for entry in table.models.values():  # batch never above sync
        assert entry.batch.input <= entry.sync.input
        assert entry.batch.output <= entry.sync.output


def test_an_override_file_replaces_and_adds_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(
        orjson.dumps(TABLE | {"models": {**TABLE["models"], "gpt-4o-mini": TABLE["models"]["m-b"]}})
    )
    table = load_prices(path)
    assert table.as_of == "2099-01-01" and table.overrides == str(path)
    assert table.lookup("m-a") is not None and table.lookup("gpt-4.1") is not None
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None and mini.batch.input == Decimal("0.25")
    # the overriding entry lists no aliases: it keeps the shipped entry's
    assert table.lookup("gpt-4o-mini-2024-07-18") is mini


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[]", b'{"models": {"x": {"sync": {"input": -1}, "batch": {}}}}'],
)
def test_a_bad_price_file_is_refused_naming_the_variable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(PriceFileError):
        load_prices(path)
    settings = make_test_settings("127.0.0.1:1").model_copy(update={"prices_file": path})
    with pytest.raises(SettingsError, match="BATCHPIPE_PRICES_FILE"):
        prices_of(settings)
    with pytest.raises(PriceFileError):
        load_prices(tmp_path / "missing.json")


def _result(model: str, key: str | None, endpoint: str | None, **usage: int) -> dict[str, object]:
    return {
        "custom_id": "x",
        "status": "succeeded",
        "model": model,
        "api_key": key,
        "endpoint": endpoint,
        "usage": usage or None,
    }


def test_report_prices_rows_and_rolls_up_per_key_endpoint_and_model() -> None:
    totals = Totals()
    chat = "/v1/chat/completions"
    assert totals.add_result(
        _result(
            "m-a",
            "team-a",
            chat,
            input_tokens=1_000_000,
            cached_tokens=200_000,
            output_tokens=500_000,
            total_tokens=1_500_000,
        )
    )
    assert totals.add_result(_result("m-a", "team-a", chat, input_tokens=0, output_tokens=0))
    assert totals.add_result(
        _result("m-b", None, "/v1/embeddings", input_tokens=2_000_000, cached_tokens=1_000_000)
    )
    assert totals.add_result(
        _result("mystery", "team-b", chat, input_tokens=7, output_tokens=3, reasoning_tokens=2)
    )
    assert totals.add_result({"model": "m-a", "status": "failed", "usage": None})  # no usage, old
    assert not totals.add_result({"custom_id": "no model"})
    doc = report(totals, parse_prices(TABLE))
    rows = {(r["api_key"], r["endpoint"], r["model"]): r for r in doc["rows"]}
    a = rows[("team-a", chat, "m-a")]
    assert a["results"] == 2 and a["input_tokens"] == 1_000_000 and a["cached_tokens"] == 200_000
    # batch: 1M input at 1.0 (no cached discount) + 0.5M output at 4.0 = 3.0
    # sync: 0.8M at 2.0 + 0.2M at 1.0 + 0.5M at 8.0 = 1.6 + 0.2 + 4.0 = 5.8
    assert (a["cost_usd"], a["sync_cost_usd"], a["saving_usd"]) == (3.0, 5.8, 2.8)
    b = rows[(UNATTRIBUTED, "/v1/embeddings", "m-b")]
    # batch: 1M at 0.25 + 1M cached at 0.1 = 0.35; sync: 2M at 0.5 (no cached price) = 1.0
    assert (b["cost_usd"], b["sync_cost_usd"], b["saving_usd"]) == (0.35, 1.0, 0.65)
    mystery = rows[("team-b", chat, "mystery")]
    assert not mystery["priced"] and mystery["cost_usd"] is None and mystery["input_tokens"] == 7
    assert mystery["reasoning_tokens"] == 2
    assert rows[(UNATTRIBUTED, "unknown", "m-a")]["results"] == 1
    assert doc["unpriced_models"] == ["mystery"]
    by_key = {r["api_key"]: r for r in doc["by_api_key"]}
    assert by_key["team-b"]["cost_usd"] == 0.0 and by_key["team-b"]["unpriced_results"] == 1
    assert by_key["team-a"]["cost_usd"] == 3.0
    by_endpoint = {r["endpoint"]: r for r in doc["by_endpoint"]}
    assert by_endpoint[chat]["results"] == 3 and by_endpoint[chat]["unpriced_tokens"] == 10
    by_model = {r["model"]: r for r in doc["by_model"]}
    assert by_model["m-a"]["results"] == 3 and by_model["m-a"]["sync_cost_usd"] == 5.8
    total = doc["total"]
    assert total["results"] == 5 and total["cost_usd"] == 3.35
    assert total["sync_cost_usd"] == 6.8 and total["saving_usd"] == 3.45
    assert doc["prices"]["as_of"] == "2099-01-01"


def test_totals_do_not_depend_on_the_order_of_results() -> None:
    results = [
        _result(
            "m-a", "k", "/v1/responses", input_tokens=i * 37, cached_tokens=i, output_tokens=i * 11
        )
        for i in range(200)
    ]
    forward, backward = Totals(), Totals()
    for r in results:
        forward.add_result(r)
    for r in reversed(results):
        backward.add_result(r)
    table = parse_prices(TABLE)
    assert report(forward, table) == report(backward, table)
