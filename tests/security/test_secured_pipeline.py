"""End to end on a secured broker: TLS, SCRAM-SHA-512 and ACLs, each service its own principal.

The pipeline's processes run as ``ingest``, ``dispatcher`` and ``poller`` with only the rights
``shared.acls`` gives them; the results are read as ``reader``. Every request must end with
exactly one terminal result, retries included (the poller resubmits to ``requests``), and no
password may appear in any log or metric.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from batchpipe.shared.kafka import make_producer
from batchpipe.shared.settings import Settings
from tests.e2e.harness import Pipeline, ResultsFollower
from tests.security.conftest import Secured

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SERVICES = ("ingest", "dispatcher", "poller")


@pytest.fixture(scope="module")
def pipeline(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    running = Pipeline(
        secured.settings.model_copy(update={"batch_max_requests": 300, "max_attempts": 4}),
        tmp_path_factory.mktemp("secured-e2e"),
        emulator_args=[
            *("--processing-seconds", "1", "--seed", "5"),
            *("--line-failure-rate", "0.05", "--line-failure-status", "500"),
        ],
        service_env={name: secured.env(name) for name in SERVICES},
    )
    try:
        running.start()
    except Exception:
        running.stop()
        raise
    yield running
    codes = running.stop()
    assert all(code in (0, -15, 143, None) for code in codes.values()), (codes, running.logs())


def chat(custom_id: str) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


async def produce(settings: Settings, items: list[tuple[str, bytes]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.requests_topic, v, key=k.encode()) for k, v in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.mark.timeout(240)
async def test_every_request_ends_once_on_the_secured_broker(
    secured: Secured, pipeline: Pipeline
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{pipeline.ingest_url}/requests",
            json={"data": [[{"role": "user", "content": "How can I learn Python?"}]] * 20},
        )
    assert response.status_code == 202, response.text
    ids = set(response.json()["ids"])
    direct = [(f"sec-{i:04d}-{uuid.uuid4().hex[:6]}", b"") for i in range(600)]
    items = [(cid, chat(cid)) for cid, _ in direct]
    await produce(secured.as_user("ingest"), items)  # a user's producer: ingest's rights
    ids |= {cid for cid, _ in items}
    reader = ResultsFollower(secured.as_user("reader"))
    results = await reader.read_until(ids, timeout=180, settle=3.0)
    missing = ids - results.keys()
    assert not missing, f"{len(missing)} without a result\n{pipeline.logs()}"
    assert not reader.duplicates
    assert any(r.attempts > 1 for r in results.values()), "line failures must cause retries"
    assert pipeline.emulator_stats()["double_billed_custom_ids"] == 0


def test_no_password_in_any_log_or_metric(secured: Secured, pipeline: Pipeline) -> None:
    metrics = [
        httpx.get(f"http://127.0.0.1:{pipeline.settings.poller_http_port}/metrics").text,
        httpx.get(f"http://127.0.0.1:{pipeline.settings.dispatcher_web_port}/metrics").text,
        httpx.get(f"{pipeline.ingest_url}/metrics").text,
    ]
    logs = [path.read_text(errors="replace") for path in Path(pipeline.workdir).glob("*.log")]
    broker_logs = [p.read_text(errors="replace") for p in secured.cluster.data_dir.glob("*.log")]
    assert all(metrics) and logs and broker_logs
    for password in secured.security.passwords.values():
        for text in metrics + logs + broker_logs:
            assert password not in text
