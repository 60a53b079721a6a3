"""The poller (app.py) on the real broker + emulator, through the official SDK: every way a
batch can end gives one terminal result (or one retry) per request, read back with a
read_committed consumer; retries up to MAX_ATTEMPTS (the test plays the dispatcher)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from batchpipe.shared.contracts import attempt_from_headers
from batchpipe.shared.providers.openai import make_openai
from tests.support import read_until

from .harness import (
    committed_consumer,
    create_batch,
    lines_for,
    poller_settings,
    publish_batches,
    results_of,
    running_poller,
    wait_ended,
)

pytestmark = pytest.mark.timeout(150)


async def test_every_lifecycle_ending(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any
) -> None:
    settings = await poller_settings(kafka_bootstrap, emulator)
    client = make_openai(settings)
    records = {}
    inputs: dict[str, dict[str, Any]] = {}

    async def make(name: str, lines: list[Any], faults: dict[str, Any], **kw: Any) -> str:
        emulator.set_faults(**faults)
        record = await create_batch(client, lines, **kw)
        if name == "cancelled":
            await client.batches.cancel(record.batch_id)
        status = await wait_ended(client, record.batch_id)
        emulator.set_faults(
            line_failure_rate=0.0,
            token_limit_failure_rate=0.0,
            force_expire=0.0,
            processing_seconds=0.5,
        )
        records[name] = record
        for line in lines:
            if isinstance(line, dict):
                inputs[line["custom_id"]] = line
        return status

    assert await make("completed", lines_for("ok", 5), {}) == "completed"
    assert (
        await make(
            "partial",
            lines_for("part", 30),
            {"line_failure_rate": 0.5, "line_failure_status": [400, 500]},
        )
        == "completed"
    )
    assert (
        await make(
            "allfail",
            lines_for("allfail", 4),
            {"line_failure_rate": 1.0, "line_failure_status": [400]},
        )
        == "completed"
    )
    bad = orjson.dumps({**lines_for("val", 1)[0], "custom_id": "val-bad", "url": "/v1/embeddings"})
    assert await make("validation", [*lines_for("val", 3), bad], {}) == "failed"
    assert await make("tokens", lines_for("tok", 3), {"token_limit_failure_rate": 1.0}) == "failed"
    expired_lines = lines_for("exp", 20)
    last_chance = {line["custom_id"]: 2 for line in expired_lines[:10]}
    assert (
        await make("expired", expired_lines, {"force_expire": 1.0}, attempts=last_chance)
        == "expired"
    )
    assert await make("cancelled", lines_for("can", 6), {"processing_seconds": 5.0}) == "cancelled"

    allfail = await client.batches.retrieve(records["allfail"].batch_id)
    assert allfail.output_file_id is None and allfail.error_file_id is not None

    total = sum(r.request_count for r in records.values())
    producer = await producer_factory()
    await publish_batches(producer, settings, list(records.values()))
    consumer = await committed_consumer(settings, settings.results_topic, settings.requests_topic)
    async with running_poller(settings) as poller:
        got = await read_until(consumer, lambda rs: len(rs) >= total, timeout=20, settle=1.5)
        transport = httpx.ASGITransport(app=poller.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as http:
            status = (await http.get("/status")).json()
            metrics = (await http.get("/metrics")).text
    await consumer.stop()
    await client.close()

    results = {r.custom_id: r for r in results_of(got, settings.results_topic)}
    retries = [r for r in got if r.topic == settings.requests_topic]
    ids = [r.key.decode() for r in got]
    assert len(ids) == total == len(set(ids)), Counter(ids).most_common(3)  # exactly one each

    # completed: usage, model, attempts, timestamps
    for i in range(5):
        ok = results[f"ok-{i}"]
        assert ok.status == "succeeded" and ok.attempts == 1 and ok.model == "gpt-4o-mini"
        assert ok.usage and ok.usage.total_tokens > 0 and ok.provider == "openai"
        assert ok.batch_id == records["completed"].batch_id
        assert (
            ok.submitted_at == records["completed"].submitted_at
            and ok.completed_at >= ok.submitted_at
        )
    # partial failures: 400 → failed, 500 → retried with the original line and attempt 1
    part_statuses = Counter(results[c].status for c in results if c.startswith("part-"))
    part_retries = [r for r in retries if r.key.startswith(b"part-")]
    assert part_statuses["succeeded"] > 0 and part_statuses["failed"] > 0 and part_retries
    assert sum(part_statuses.values()) + len(part_retries) == 30
    for r in part_retries:
        assert attempt_from_headers(r.headers) == 1
        assert orjson.loads(r.value) == inputs[r.key.decode()]
    # all failed, no output file
    assert {results[f"allfail-{i}"].status for i in range(4)} == {"failed"}
    assert (
        results["allfail-0"].response is not None
        and results["allfail-0"].response.status_code == 400
    )
    # failed validation: the bad line fails with OpenAI's error, the innocent ones are retried
    assert results["val-bad"].status == "failed" and results["val-bad"].error is not None
    assert {r.key for r in retries if r.key.startswith(b"val-")} == {b"val-0", b"val-1", b"val-2"}
    # token_limit_exceeded: every line retried
    assert {r.key for r in retries if r.key.startswith(b"tok-")} == {b"tok-0", b"tok-1", b"tok-2"}
    # expired: finished lines succeeded; unfinished ones retried, or expired at MAX_ATTEMPTS
    for line in expired_lines:
        cid = line["custom_id"]
        if cid in results:
            assert results[cid].status in ("succeeded", "expired")
            if results[cid].status == "expired":
                assert cid in last_chance and results[cid].attempts == 3
        else:
            assert cid not in last_chance
    assert any(r.status == "expired" for r in results.values())
    assert any(r.key.startswith(b"exp-") for r in retries)
    # cancelled before it ran: every line cancelled
    assert {results[f"can-{i}"].status for i in range(6)} == {"cancelled"}

    # status and metrics
    assert status["totals"]["in_flight"] == 0
    assert status["totals"]["results_published"] == len(results)
    assert 'poller_results_total{status="succeeded"}' in metrics
    assert (
        "poller_retries_total" in metrics
        and 'poller_tokens_total{kind="input",model="gpt-4o-mini"}' in metrics
    )


@pytest.mark.timeout(120)
async def test_retries_carry_header_and_body_until_max_attempts(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any
) -> None:
    settings = await poller_settings(kafka_bootstrap, emulator, max_attempts=3)
    client = make_openai(settings)
    emulator.set_faults(line_failure_rate=1.0, line_failure_status=[500, 429])
    originals = {line["custom_id"]: line for line in lines_for("r", 5)}
    producer = await producer_factory()
    requests = await committed_consumer(settings, settings.requests_topic)
    results = await committed_consumer(settings, settings.results_topic)
    async with running_poller(settings):
        batch = await create_batch(client, list(originals.values()))
        await publish_batches(producer, settings, [batch])
        for attempt in (1, 2):
            retried = await read_until(requests, lambda rs: len(rs) >= 5, timeout=30, settle=0.5)
            assert len(retried) == 5
            assert {attempt_from_headers(r.headers) for r in retried} == {attempt}
            assert {r.key.decode(): orjson.loads(r.value) for r in retried} == originals
            # Play the dispatcher: submit the retried lines again with their attempt numbers.
            batch = await create_batch(
                client,
                [r.value for r in retried],
                attempts={r.key.decode(): attempt for r in retried},
            )
            await publish_batches(producer, settings, [batch])
        final = results_of(
            await read_until(results, lambda rs: len(rs) >= 5, timeout=30, settle=1.0),
            settings.results_topic,
        )
    assert sorted(r.custom_id for r in final) == sorted(originals)
    assert {(r.status, r.attempts) for r in final} == {("failed", 3)}
    assert all(r.error is not None and r.response is not None for r in final)
    assert await read_until(requests, lambda rs: True, settle=0.5) == []  # no 4th attempt
    for consumer in (requests, results):
        await consumer.stop()
    await client.close()
