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

import anthropic
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


CHAT = "/v1/chat/completions"


def line(custom_id: str, model: str, url: str = CHAT) -> bytes:
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
async def test_original_curl_payload_through_a_claude_default_model(pipeline: Pipeline) -> None:
    """The original curl itself, verbatim, to an ingest whose default model is a Claude model
    (``BATCHPIPE_DEFAULT_MODEL``): both answers come from Anthropic, in Anthropic's shape."""
    url = pipeline.add_ingest("ingest-claude", {"BATCHPIPE_DEFAULT_MODEL": "claude-sonnet-4-5"})
    await asyncio.to_thread(pipeline.start, "ingest-claude")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{url}/requests", json=SEED_PAYLOAD, headers={"accept": "application/json"}
        )
    assert response.status_code == 202, response.text
    ids = set(response.json()["ids"])
    results = await ResultsFollower(pipeline.settings).read_until(ids, timeout=90)
    assert results.keys() >= ids, pipeline.logs()
    for cid in ids:
        result = results[cid]
        assert (result.status, result.provider, result.model) == (
            "succeeded",
            "anthropic",
            "claude-sonnet-4-5",
        )
        assert result.response is not None and result.response.body is not None
        assert result.response.body["type"] == "message"
        assert result.response.body["role"] == "assistant"


@pytest.mark.timeout(120)
async def test_native_messages_lines_produced_to_kafka_and_posted(pipeline: Pipeline) -> None:
    """Anthropic's own ``/v1/messages`` lines, produced straight to the requests topic and
    POSTed, with a system prompt and no max_tokens (the setting's default is added): results
    in Anthropic's shape with the user's ids, one with an id Anthropic would not take. A native
    line for an OpenAI model is refused at the door (422) and nothing is sent."""
    tag = uuid.uuid4().hex[:8]
    produced = [f"native:{tag}.1", f"native-{tag}-2"]
    body = {
        "model": "claude-3-5-haiku-latest",
        "system": "Answer in one word.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}],
    }
    await produce_plain(
        pipeline.settings,
        [
            (cid, orjson.dumps({"custom_id": cid, "url": "/v1/messages", "body": body}))
            for cid in produced
        ],
    )
    posted_line = {"custom_id": f"native-{tag}-3", "url": "/v1/messages", "body": body}
    openai_line = {"url": "/v1/messages", "body": body | {"model": "gpt-4o-mini"}}
    async with httpx.AsyncClient() as client:
        posted = await client.post(f"{pipeline.ingest_url}/requests", json=posted_line)
        refused = await client.post(f"{pipeline.ingest_url}/requests", json=openai_line)
    assert posted.status_code == 202, posted.text
    assert refused.status_code == 422, refused.text
    assert "openai batches do not serve /v1/messages" in refused.text
    ids = {*produced, f"native-{tag}-3"}
    results = await ResultsFollower(pipeline.settings).read_until(ids, timeout=90)
    assert results.keys() >= ids, pipeline.logs()
    for cid in ids:
        result = results[cid]
        assert (result.status, result.provider) == ("succeeded", "anthropic"), result
        assert result.custom_id == cid
        assert result.response is not None and result.response.body is not None
        assert result.response.body["type"] == "message"
        assert result.usage is not None and result.usage.input_tokens > 0


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
    """OpenAI models, Azure deployments (routed by ``azure-*``) and Claude models (the built-in
    ``claude-*`` route; chat lines translated and native ``/v1/messages`` lines) in one stream:
    one result per custom_id, tagged with its provider; one model per batch, each batch within
    its provider's limits."""
    models = [
        "gpt-4o-mini",
        "azure-gpt-4o-mini",
        "claude-3-5-haiku-latest",
        "gpt-4o",
        "azure-gpt-4o",
        "claude-sonnet-4-5",
    ]
    items: list[tuple[str, bytes]] = []
    expected: dict[str, str] = {}
    for i in range(10_000):
        cid = f"mix-{i:05d}-{uuid.uuid4().hex[:6]}"
        if i % 5 == 0:
            model = "azure-embeddings" if i % 10 == 0 else "text-embedding-3-small"
            items.append((cid, line(cid, model, "/v1/embeddings")))
        else:
            model = models[i % len(models)]
            native = model.startswith("claude-") and i % 3 == 0
            items.append((cid, line(cid, model, "/v1/messages" if native else CHAT)))
        expected[cid] = (
            "azure"
            if model.startswith("azure-")
            else "anthropic"
            if model.startswith("claude-")
            else "openai"
        )
    ids = {cid for cid, _ in items}
    providers = ("openai", "azure", "anthropic")
    limits = {"openai": 50_000, "azure": 100_000, "anthropic": 100_000}
    before = {p: {b[0] for b in await provider_batches(pipeline, p)} for p in providers}
    await produce_plain(pipeline.settings, items)
    reader = ResultsFollower(pipeline.settings)
    results = await reader.read_until(ids, timeout=240, settle=3.0)
    missing = ids - results.keys()
    assert not missing, f"{len(missing)} without a result\n{pipeline.logs()}"
    assert not {cid: n for cid, n in reader.duplicates.items() if cid in ids}
    assert {results[cid].status for cid in ids} == {"succeeded"}
    assert {cid: results[cid].provider for cid in ids} == expected
    assert Counter(expected.values()) == {"openai": 3667, "azure": 3667, "anthropic": 2666}
    produced = Counter(orjson.loads(value)["body"]["model"] for _cid, value in items)

    # One model per batch: every result of a batch names the same model, and per model the
    # batches' request counts add up to what was produced for it.
    model_of: dict[str, set[str]] = {}
    for cid in ids:
        batch_id = results[cid].batch_id
        assert batch_id is not None
        model_of.setdefault(batch_id, set()).add(results[cid].model)
    assert all(len(found) == 1 for found in model_of.values()), model_of
    by_model: Counter[str] = Counter()
    for provider in providers:
        batches = [
            b for b in await provider_batches(pipeline, provider) if b[0] not in before[provider]
        ]
        assert batches, provider
        for batch_id, total in batches:
            assert total <= min(
                pipeline.settings.batch_max_requests or limits[provider], limits[provider]
            )
            (model,) = model_of[batch_id]
            by_model[model] += total
    assert by_model == produced
    assert sum(by_model.values()) == 10_000
    stats = pipeline.emulator_stats()
    assert stats["duplicate_custom_ids"] == 0


async def provider_batches(pipeline: Pipeline, provider: str) -> list[tuple[str, int]]:
    """(id, request count) of every batch the emulator holds for ``provider``, through that
    provider's own SDK."""
    if provider != "anthropic":
        return [
            (b.id, b.request_counts.total if b.request_counts else 0)
            for b in await list_batches(pipeline, provider)
        ]
    client = anthropic.AsyncAnthropic(base_url=pipeline.emulator_url, api_key="sk-emulator")
    try:
        found = []
        async for batch in client.messages.batches.list(limit=100):
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            found.append((batch.id, total))
        return found
    finally:
        await client.close()


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
