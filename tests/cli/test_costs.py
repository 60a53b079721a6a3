"""``batchpipe costs`` against the real broker: the totals of the committed results on the
results topic (an aborted transaction counts nothing), priced with an override file."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from batchpipe.services.cli import app
from batchpipe.shared.contracts import ResultMessage, ResultResponse, ResultUsage, encode, key_bytes
from batchpipe.shared.kafka import ensure_topics, make_producer
from batchpipe.shared.settings import Settings
from tests.cli.test_submit import env_for
from tests.conftest import make_test_settings

PRICES = {
    "as_of": "2099-12-31",
    "sources": ["test table"],
    "models": {
        "priced-model": {
            "sync": {"input": 2.0, "cached_input": 1.0, "output": 10.0},
            "batch": {"input": 1.0, "cached_input": 0.5, "output": 5.0},
        }
    },
}


def result(
    custom_id: str,
    model: str,
    api_key: str | None,
    tokens: tuple[int, int, int] | None,
    endpoint: str = "/v1/chat/completions",
) -> ResultMessage:
    now = int(time.time())
    usage = None
    if tokens is not None:
        given, cached, taken = tokens
        usage = ResultUsage(
            input_tokens=given,
            output_tokens=taken,
            total_tokens=given + taken,
            cached_tokens=cached,
        )
    return ResultMessage(
        custom_id=custom_id,
        status="succeeded" if usage else "failed",
        batch_id="batch_1",
        response=ResultResponse(status_code=200, body={}) if usage else None,
        attempts=1,
        model=model,
        usage=usage,
        submitted_at=now - 5,
        completed_at=now,
        endpoint=endpoint,
        api_key=api_key,
    )


async def seed(settings: Settings) -> None:
    await ensure_topics(settings)
    producer = make_producer(settings, transactional_id=f"costs-{uuid.uuid4().hex}")
    await producer.start()
    topic = settings.results_topic
    try:
        async with producer.transaction():
            for msg in (
                result("a1", "priced-model", "team-a", (600_000, 200_000, 100_000)),
                result("a2", "priced-model", "team-a", (400_000, 0, 100_000)),
                result("u1", "priced-model", None, (1_000_000, 0, 0), "/v1/responses"),
                result("b1", "unknown-model", "team-b", (7, 0, 3)),
                result("b2", "priced-model", "team-b", None),  # failed: no usage
            ):
                await producer.send(topic, encode(msg), key=key_bytes(msg.custom_id))
            await producer.send(topic, b"not a result", key=b"junk")
        await producer.begin_transaction()
        await producer.send(
            topic,
            encode(result("gone", "priced-model", "team-a", (10**9, 0, 10**9))),
            key=b"gone",
        )
        await producer.abort_transaction()
    finally:
        await producer.stop()


def test_costs_json_gives_the_totals_of_committed_results(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_test_settings(kafka_bootstrap)
    asyncio.run(seed(settings))
    env_for(settings, monkeypatch)
    prices = tmp_path / "prices.json"
    prices.write_bytes(orjson.dumps(PRICES))
    monkeypatch.setenv("BATCHPIPE_PRICES_FILE", str(prices))

    out = CliRunner().invoke(app, ["costs", "--json"])
    assert out.exit_code == 0, out.output
    doc = orjson.loads(out.stdout)
    assert doc["messages_read"] == 6 and doc["messages_skipped"] == 1
    assert doc["prices"]["as_of"] == "2099-12-31" and doc["prices"]["overrides"] == str(prices)
    by_key = {r["api_key"]: r for r in doc["by_api_key"]}
    team_a = by_key["team-a"]
    assert team_a["results"] == 2 and team_a["input_tokens"] == 1_000_000
    assert team_a["cached_tokens"] == 200_000 and team_a["output_tokens"] == 200_000
    # batch: 0.8M at 1.0 + 0.2M at 0.5 + 0.2M at 5.0 = 1.9; sync: 1.6 + 0.2 + 2.0 = 3.8
    assert (team_a["cost_usd"], team_a["sync_cost_usd"], team_a["saving_usd"]) == (1.9, 3.8, 1.9)
    assert by_key["unattributed"]["cost_usd"] == 1.0
    team_b = by_key["team-b"]
    assert team_b["results"] == 2 and team_b["cost_usd"] == 0.0
    assert team_b["unpriced_results"] == 1 and team_b["unpriced_tokens"] == 10
    assert doc["unpriced_models"] == ["unknown-model"]
    by_endpoint = {r["endpoint"]: r for r in doc["by_endpoint"]}
    assert by_endpoint["/v1/responses"]["results"] == 1
    assert by_endpoint["/v1/chat/completions"]["results"] == 4
    by_model = {r["model"]: r for r in doc["by_model"]}
    assert by_model["priced-model"]["results"] == 4 and by_model["unknown-model"]["results"] == 1
    total = doc["total"]
    assert total["results"] == 5 and total["cost_usd"] == 2.9
    assert total["sync_cost_usd"] == 5.8 and total["saving_usd"] == 2.9
    row = next(r for r in doc["rows"] if r["model"] == "unknown-model")
    assert row["priced"] is False and row["cost_usd"] is None

    table = CliRunner().invoke(app, ["costs", "--by", "api_key"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "team-a" in table.stdout and "unattributed" in table.stdout
    assert "1.9000" in table.stdout and "no price for unknown-model" in table.stdout
    rows = CliRunner().invoke(app, ["costs"], env={"COLUMNS": "200"})
    assert rows.exit_code == 0 and "no price" in rows.stdout


def test_a_bad_prices_file_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    monkeypatch.setenv("BATCHPIPE_PRICES_FILE", str(bad))
    out = CliRunner().invoke(app, ["costs"])
    assert out.exit_code == 2 and "BATCHPIPE_PRICES_FILE" in out.output
