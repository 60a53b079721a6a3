"""End to end: the emulator and the three services as processes on the real broker.

What a user does on day one (the original curl payload), producing straight to Kafka, a mixed
10,000-request load, and emulator faults — each request must end with exactly one terminal result
seen by a read_committed consumer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION
from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import Settings
from tests.conftest import make_test_settings
from tests.e2e.harness import Pipeline, ResultsFollower

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# The product's original sample, verbatim (../shared/reference/original-sample.md).
SEED_PAYLOAD = {
    "data": [
        [{"role": "user", "content": "How can I learn Python?"}],
        [{"role": "user", "content": "Who is the first president of the United States?"}],
    ]
}

DEMO = {
    "batch_max_wait_seconds": 2.0,
    "poll_interval_seconds": 0.5,
    "poll_max_rps": 50.0,
}


def start_pipeline(
    kafka_bootstrap: str, workdir: Path, *, emulator_args: list[str], **overrides: object
) -> Pipeline:
    settings: Settings = make_test_settings(kafka_bootstrap, **(DEMO | overrides))
    asyncio.run(ensure_topics(settings))
    pipeline = Pipeline(settings, workdir, emulator_args=emulator_args)
    try:
        pipeline.start()
    except Exception:
        pipeline.stop()
        raise
    return pipeline


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    running = start_pipeline(
        kafka_bootstrap,
        tmp_path_factory.mktemp("e2e"),
        emulator_args=["--processing-seconds", "1", "--seed", "7"],
        batch_max_requests=1500,
        provider_routes="azure-*=azure",
    )
    yield running
    codes = running.stop()
    assert all(code in (0, -15, 143, None) for code in codes.values()), (codes, running.logs())


def line(custom_id: str, model: str, url: str = "/v1/chat/completions") -> bytes:
    body: dict[str, object]
    if url == "/v1/embeddings":
        body = {"model": model, "input": f"text {custom_id}"}
    else:
        body = {"model": model, "messages": [{"role": "user", "content": f"hi {custom_id}"}]}
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


async def produce_plain(settings: Settings, items: list[tuple[str, bytes]]) -> None:
    """Produce like a user would: a plain aiokafka producer, no batchpipe helpers."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=10
    )
    await producer.start()
    try:
        futures = [
            await producer.send(settings.requests_topic, value, key=cid.encode())
            for cid, value in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.mark.timeout(120)
async def test_original_curl_payload_yields_two_succeeded_results(pipeline: Pipeline) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{pipeline.ingest_url}/requests",
            json=SEED_PAYLOAD,
            headers={"accept": "application/json"},
        )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "success" and body["accepted"] == 2
    ids = set(body["ids"])
    results = await ResultsFollower(pipeline.settings).read_until(ids, timeout=90)
    mine = {cid: results[cid] for cid in ids if cid in results}
    assert mine.keys() == ids, pipeline.logs()
    assert {r.status for r in mine.values()} == {"succeeded"}
    for result in mine.values():
        assert result.response is not None and result.response.status_code == 200
        assert result.model


@pytest.mark.timeout(120)
async def test_original_curl_payload_with_a_claude_model_yields_anthropic_results(
    pipeline: Pipeline,
) -> None:
    """The original sample's two questions, each naming a Claude model (routed to Anthropic
    by the built-in claude-* route): Anthropic-shaped succeeded results, the user's ids."""
    items = [
        {"messages": messages, "model": "claude-3-5-haiku-latest"}
        for messages in SEED_PAYLOAD["data"]
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{pipeline.ingest_url}/requests", json={"data": items})
        refused = await client.post(
            f"{pipeline.ingest_url}/requests",
            json={"data": [{"messages": SEED_PAYLOAD["data"][0], "model": "claude-x", "n": 2}]},
        )
    assert response.status_code == 202, response.text
    assert refused.status_code == 422 and "n=2" in refused.text.replace(" ", ""), refused.text
    ids = set(response.json()["ids"])
    results = await ResultsFollower(pipeline.settings).read_until(ids, timeout=90)
    assert results.keys() >= ids, pipeline.logs()
    for cid in ids:
        result = results[cid]
        assert (result.status, result.provider) == ("succeeded", "anthropic")
        assert result.model == "claude-3-5-haiku-latest"
        assert result.response is not None and result.response.body is not None
        assert result.response.body["type"] == "message"
        assert result.response.body["content"][0]["type"] == "text"
        assert result.usage is not None and result.usage.output_tokens > 0


@pytest.mark.timeout(120)
async def test_request_produced_straight_to_kafka_gets_its_result(pipeline: Pipeline) -> None:
    cid = f"direct-{uuid.uuid4().hex[:8]}"
    await produce_plain(pipeline.settings, [(cid, line(cid, "gpt-4o-mini"))])
    reader = ResultsFollower(pipeline.settings)
    results = await reader.read_until({cid}, timeout=90)
    assert results[cid].status == "succeeded", pipeline.logs()
    assert reader.seen[cid] == 1


@pytest.mark.timeout(300)
async def test_ten_thousand_mixed_requests_one_result_each(pipeline: Pipeline) -> None:
    """OpenAI models and Azure deployments (routed by ``azure-*``) in one stream: one result
    per custom_id, tagged with its provider; one model per batch, each batch within limits."""
    models = ["gpt-4o-mini", "azure-gpt-4o-mini", "gpt-4o", "azure-gpt-4o", "gpt-4.1-nano"]
    items: list[tuple[str, bytes]] = []
    expected: dict[str, str] = {}
    for i in range(10_000):
        cid = f"mix-{i:05d}-{uuid.uuid4().hex[:6]}"
        if i % 5 == 0:
            model = "azure-embeddings" if i % 10 == 0 else "text-embedding-3-small"
            items.append((cid, line(cid, model, "/v1/embeddings")))
        else:
            model = models[i % len(models)]
            items.append((cid, line(cid, model)))
        expected[cid] = "azure" if model.startswith("azure-") else "openai"
    ids = {cid for cid, _ in items}
    before = {b.id for b in await list_batches(pipeline) + await list_batches(pipeline, "azure")}
    await produce_plain(pipeline.settings, items)
    reader = ResultsFollower(pipeline.settings)
    results = await reader.read_until(ids, timeout=240, settle=3.0)
    missing = ids - results.keys()
    assert not missing, f"{len(missing)} without a result\n{pipeline.logs()}"
    assert not {cid: n for cid, n in reader.duplicates.items() if cid in ids}
    assert {results[cid].status for cid in ids} == {"succeeded"}
    assert {cid: results[cid].provider for cid in ids} == expected
    produced = Counter(orjson.loads(value)["body"]["model"] for _cid, value in items)

    by_model: dict[str, int] = {}
    for provider, limit in (("openai", 50_000), ("azure", 100_000)):
        batches = [b for b in await list_batches(pipeline, provider) if b.id not in before]
        assert batches, provider
        for batch in batches:
            assert batch.request_counts is not None
            assert batch.request_counts.total <= min(
                pipeline.settings.batch_max_requests or limit, limit
            )
            assert batch.model is not None
            assert batch.model.startswith("azure-") == (provider == "azure"), batch.model
            by_model[batch.model] = by_model.get(batch.model, 0) + batch.request_counts.total
    # One model per batch: totals per model match what was produced for that model.
    assert by_model == dict(produced)
    assert sum(by_model.values()) == 10_000
    stats = pipeline.emulator_stats()
    assert stats["duplicate_custom_ids"] == 0


async def wait_for_batches(pipeline: Pipeline, count: int, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if len(await list_batches(pipeline)) >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"fewer than {count} batches after {timeout}s\n{pipeline.logs()}")


async def list_batches(pipeline: Pipeline, provider: str = "openai") -> list[openai.types.Batch]:
    client = (
        openai.AsyncAzureOpenAI(
            azure_endpoint=pipeline.emulator_url,
            api_key="sk-emulator",
            api_version=AZURE_API_VERSION,
        )
        if provider == "azure"
        else openai.AsyncOpenAI(base_url=f"{pipeline.emulator_url}/v1", api_key="sk-emulator")
    )
    try:
        return [batch async for batch in client.batches.list(limit=100)]
    finally:
        await client.close()


@pytest.mark.timeout(300)
async def test_faults_every_request_still_ends_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    pipeline = await asyncio.to_thread(
        start_pipeline,
        kafka_bootstrap,
        tmp_path,
        emulator_args=[
            "--processing-seconds",
            "1",
            "--seed",
            "11",
            "--line-failure-rate",
            "0.05",
            "--line-failure-status",
            "500",
        ],
        batch_max_requests=200,
        max_attempts=4,
    )
    try:
        items = [(cid, line(cid, "gpt-4o-mini")) for cid in (f"flt-{i:04d}" for i in range(1000))]
        ids = {cid for cid, _ in items}
        # One batch expires: the first one (200 requests) is created while forced expiry is on.
        pipeline.set_faults(force_expire=1.0)
        await produce_plain(pipeline.settings, items[:200])
        await wait_for_batches(pipeline, 1)
        pipeline.set_faults(force_expire=0.0)
        await produce_plain(pipeline.settings, items[200:])
        reader = ResultsFollower(pipeline.settings)
        results = await reader.read_until(ids, timeout=240, settle=3.0)
        missing = ids - results.keys()
        assert not missing, f"{len(missing)} without a result\n{pipeline.logs()}"
        assert not reader.duplicates
        retried = [r for r in results.values() if r.attempts > 1]
        assert retried, "5% line failures and an expired batch must cause retries"
        assert all(r.status == "succeeded" for r in retried if r.attempts < 4)
        assert pipeline.emulator_stats()["double_billed_custom_ids"] == 0
        statuses = [b.status for b in await list_batches(pipeline)]
        assert statuses.count("expired") == 1, statuses
    finally:
        pipeline.stop()
