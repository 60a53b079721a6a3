"""POST /requests against the real broker: what is answered 202 is on the topic, what is
refused publishes nothing, auth, Kafka down → 503, ops routes and the OpenAPI docs."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from batchpipe.devtools.local_kafka import free_port
from batchpipe.services.ingest.app import OFFLOAD_BYTES, SEED_EXAMPLE
from batchpipe.services.ingest.body import STREAM_BYTES
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.settings import Settings
from tests.conftest import ConsumerFactory, make_test_settings
from tests.ingest.conftest import SEED_CURL_BODY, SEED_HEADERS, EndOffsets, running
from tests.support import drain

MSG = [{"role": "user", "content": "hi"}]
Ingest = tuple[FastAPI, httpx.AsyncClient]


async def test_seed_payload_lands_as_two_request_lines(
    ingest: Ingest, settings: Settings, consumer_factory: ConsumerFactory
) -> None:
    _, client = ingest
    response = await client.post("/requests", content=SEED_CURL_BODY, headers=SEED_HEADERS)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "success" and answer["accepted"] == 2
    ids = answer["ids"]

    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, 2, settle=0.5)
    assert len(records) == 2
    by_id = {r.key.decode(): decode(RequestLine, r.value) for r in records}
    assert set(by_id) == set(ids)
    contents = {line.body["messages"][0]["content"] for line in by_id.values()}
    assert contents == {
        "How can I learn Python?",
        "Who is the first president of the United States?",
    }
    for line in by_id.values():
        assert line.url == "/v1/chat/completions"
        assert line.body["model"] == settings.default_model
        assert line.body["max_tokens"] == 1000 and line.body["temperature"] == 0.2


async def test_every_shape_lands_with_its_custom_id(
    ingest: Ingest, settings: Settings, consumer_factory: ConsumerFactory
) -> None:
    _, client = ingest
    items: list[Any] = [
        {"custom_id": "obj-1", "messages": MSG, "model": "gpt-4o"},
        {"custom_id": "line-1", "url": "/v1/embeddings", "body": {"input": "x", "model": "e"}},
        MSG,
    ]
    response = await client.post("/requests", json={"data": items})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    assert ids[:2] == ["obj-1", "line-1"]
    single = await client.post("/requests", json={"custom_id": "alone", "messages": MSG})
    assert single.status_code == 202 and single.json()["ids"] == ["alone"]

    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, 4, settle=0.5)
    keys = sorted(r.key.decode() for r in records)
    assert keys == sorted([*ids, "alone"])
    lines = {r.key.decode(): decode(RequestLine, r.value) for r in records}
    assert lines["line-1"].url == "/v1/embeddings"
    assert lines["obj-1"].body == {"messages": MSG, "model": "gpt-4o"}


async def test_completions_and_moderations_lines_land_and_are_documented(
    ingest: Ingest, settings: Settings, consumer_factory: ConsumerFactory
) -> None:
    _, client = ingest
    items: list[Any] = [
        {"custom_id": "cmpl-1", "url": "/v1/completions", "body": {"prompt": "x", "n": 2}},
        {"custom_id": "mod-1", "url": "/v1/moderations", "body": {"input": ["a", "b"]}},
        MSG,
    ]
    response = await client.post("/requests", json={"data": items})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    refused = await client.post(
        "/requests", json={"url": "/v1/completions", "body": {"prompt": "x", "logprobs": 9}}
    )
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"index": 0, "reason": "body.logprobs must be <= 5, not 9"}]

    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, 3, settle=0.5)
    lines = {r.key.decode(): decode(RequestLine, r.value) for r in records}
    assert sorted(lines) == sorted(ids)
    assert lines["cmpl-1"].url == "/v1/completions"
    assert lines["cmpl-1"].body == {"prompt": "x", "n": 2, "model": settings.default_model}
    assert lines["mod-1"].url == "/v1/moderations"
    assert lines["mod-1"].body == {"input": ["a", "b"], "model": "omni-moderation-latest"}
    assert lines[ids[2]].url == "/v1/chat/completions"

    operation = (await client.get("/openapi.json")).json()["paths"]["/requests"]["post"]
    assert "`/v1/completions` (`prompt`)" in operation["description"]
    assert "`/v1/moderations` (`input`; model defaults to" in operation["description"]
    item = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    titles = [branch["title"] for branch in item["oneOf"]]
    assert "OpenAI batch line for /v1/completions" in titles
    assert "OpenAI batch line for /v1/moderations" in titles


async def test_a_big_post_is_prepared_off_the_loop_and_lands(
    ingest: Ingest, settings: Settings, topic_size: EndOffsets
) -> None:
    _, client = ingest
    item = [{"role": "user", "content": "x" * 300}]
    body = orjson.dumps({"data": [item] * 3000})
    assert len(body) > OFFLOAD_BYTES
    response = await client.post("/requests", content=body)
    assert response.status_code == 202, response.text[:300]
    assert response.json()["accepted"] == 3000 == len(set(response.json()["ids"]))
    bad = await client.post("/requests", json={"data": [item] * 2999 + [[]]})
    assert bad.status_code == 422 and [e["index"] for e in bad.json()["errors"]] == [2999]
    assert await topic_size(settings) == 3000


async def test_a_body_over_the_stream_size_is_read_item_by_item_with_the_same_rules(
    settings: Settings, topic_size: EndOffsets
) -> None:
    few = settings.model_copy(update={"ingest_max_items": 2500})
    async with running(few) as (_, client):
        item = [{"role": "user", "content": "y" * 500}]
        body = orjson.dumps({"data": [item] * 2500})
        assert len(body) > STREAM_BYTES

        async def chunks(raw: bytes) -> AsyncIterator[bytes]:  # no Content-Length: streamed
            for i in range(0, len(raw), 70_000):
                yield raw[i : i + 70_000]

        response = await client.post("/requests", content=body)
        assert response.status_code == 202, response.text[:300]
        assert response.json()["accepted"] == 2500 == len(set(response.json()["ids"]))
        chunked = await client.post("/requests", content=chunks(body))
        assert chunked.status_code == 202, chunked.text[:300]
        assert await topic_size(few) == 5000

        bad = orjson.dumps({"data": [item] * 2499 + [[{"role": "robot"}]]})
        refused = await client.post("/requests", content=bad)
        assert refused.status_code == 422
        assert [e["index"] for e in refused.json()["errors"]] == [2499]
        too_many = await client.post("/requests", content=orjson.dumps({"data": [item] * 2600}))
        assert too_many.status_code == 413 and "at most 2500" in too_many.json()["reason"]
        broken = await client.post("/requests", content=body[:-5])
        assert broken.status_code == 422 and "not valid JSON" in broken.json()["reason"]
        assert await topic_size(few) == 5000  # nothing of a refused POST


REFUSED: list[tuple[str, Any, int, str]] = [
    ("not a list of messages", {"data": [MSG, "hello"]}, 422, "expected a list of chat"),
    ("unknown role", {"data": [[{"role": "bot", "content": "x"}]]}, 422, "unknown role"),
    ("empty messages", {"data": [MSG, []]}, 422, "empty list of messages"),
    ("stream true", {"data": [{"messages": MSG, "stream": True}]}, 422, "stream: true"),
    ("url", {"data": [{"url": "/v1/edits", "body": {"messages": MSG}}]}, 422, "not allowed"),
    ("custom_id", {"data": [{"custom_id": "a/b", "messages": MSG}]}, 422, "bad custom_id"),
    (
        "duplicate",
        {"data": [{"custom_id": "d", "messages": MSG}, {"custom_id": "d", "messages": MSG}]},
        422,
        "duplicate custom_id",
    ),
    ("not json", b"{oops", 422, "not valid JSON"),
    (
        "too deep to serialise",
        b'{"data": [{"messages": [{"role": "user", "content": "x"}], "tools": [{"function": '
        b'{"parameters": ' + b"[" * 300 + b"]" * 300 + b"}}]}]}",
        422,
        "cannot be serialised",
    ),
    ("empty data", {"data": []}, 422, "'data' is empty"),
    ("too many items", {"data": [MSG] * 6}, 413, "at most 5 per POST"),
]


async def test_each_rule_gives_its_4xx_and_publishes_nothing(
    settings: Settings, topic_size: EndOffsets
) -> None:
    small = settings.model_copy(update={"ingest_max_items": 5, "ingest_max_body_bytes": 2048})
    async with running(small) as (app, client):
        assert app.state.publisher.connected
        for name, payload, status, reason in REFUSED:
            raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            response = await client.post("/requests", content=raw)
            assert response.status_code == status, (name, response.text)
            body = response.json()
            assert body["status"] == "error", name
            text = body["reason"] + " ".join(e["reason"] for e in body["errors"])
            assert reason in text, (name, body)
            if status == 422:
                assert body["errors"] and set(body["errors"][0]) == {"index", "reason"}

        # A bad item anywhere refuses the whole POST, and says which.
        mixed = await client.post("/requests", json={"data": [MSG, MSG, [{"role": "x"}], MSG]})
        assert mixed.status_code == 422
        assert [e["index"] for e in mixed.json()["errors"]] == [2]

        # Body size: by Content-Length, and by the bytes read when it is not declared.
        big = orjson.dumps({"data": [[{"role": "user", "content": "x" * 3000}]]})
        declared = await client.post("/requests", content=big)
        assert declared.status_code == 413 and "larger than 2048" in declared.json()["reason"]

        async def chunks() -> Any:
            for i in range(0, len(big), 500):
                yield big[i : i + 500]

        streamed = await client.post("/requests", content=chunks())
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413

        metrics = (await client.get("/metrics")).text
        assert 'batchpipe_ingest_requests_refused_total{reason="invalid"} 9.0' in metrics
        assert 'batchpipe_ingest_requests_refused_total{reason="body_too_large"} 2.0' in metrics
        assert 'batchpipe_ingest_items_refused_total{reason="too_many_items"} 6.0' in metrics

    assert await topic_size(settings) == 0


async def test_auth_on_and_off(
    settings: Settings,
    topic_size: EndOffsets,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_keys = ("s3cret-key-alpha", "s3cret-key-beta")
    locked = settings.model_copy(
        update={"ingest_api_keys": tuple(SecretStr(k) for k in secret_keys)}
    )
    async with running(locked) as (_, client):
        missing = await client.post("/requests", json={"data": [MSG]})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.post(
            "/requests", json={"data": [MSG]}, headers={"Authorization": "Bearer s3cret-key-alph"}
        )
        assert wrong.status_code == 401
        assert await topic_size(settings) == 0
        for key in secret_keys:
            ok = await client.post(
                "/requests", json={"data": [MSG]}, headers={"Authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 202, ok.text
    assert await topic_size(settings) == 2

    async with running(settings) as (_, client):  # no keys configured: open
        assert (await client.post("/requests", json={"data": [MSG]})).status_code == 202

    out, err = capfd.readouterr()
    logged = caplog.text + out + err + " ".join(str(r.msg) for r in caplog.records)
    assert "auth_missing" in logged and "auth_invalid" in logged  # refusals are logged...
    for key in (*secret_keys, "s3cret-key-alph"):
        assert key not in logged  # ...without any key or token


async def test_kafka_unreachable_starts_fast_and_answers_503() -> None:
    down = make_test_settings(
        f"127.0.0.1:{free_port()}", ingest_publish_timeout_seconds=1.0
    )  # nothing listens there
    started = time.monotonic()
    async with running(down, startup_wait=0.5, connect_timeout=1.0) as (app, client):
        assert time.monotonic() - started < 5
        assert not app.state.publisher.connected
        response = await client.post("/requests", content=SEED_CURL_BODY, headers=SEED_HEADERS)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["status"] == "error"
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"producer": False, "requests_topic": False}
        # Validation still comes first: a bad POST is a 422, not a 503.
        assert (await client.post("/requests", json={"data": [[]]})).status_code == 422
    assert time.monotonic() - started < 15


async def test_publish_timeout_answers_503_not_202(kafka_bootstrap: str) -> None:
    # Connected producer, but the topic does not exist (and is not auto-created): no ack.
    missing_topic = make_test_settings(kafka_bootstrap, ingest_publish_timeout_seconds=1.0)
    async with running(missing_topic) as (app, client):
        assert app.state.publisher.connected
        started = time.monotonic()
        response = await client.post("/requests", json={"data": [MSG, MSG]})
        assert response.status_code == 503
        assert "did not acknowledge within 1s" in response.json()["reason"]
        assert response.headers["retry-after"]
        assert time.monotonic() - started < 5
        ready = await client.get("/readyz")
        assert ready.json()["checks"] == {"producer": True, "requests_topic": False}


async def test_ops_routes_metrics_and_openapi(ingest: Ingest) -> None:
    _, client = ingest
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert (await client.post("/requests", json={"data": [MSG] * 3})).status_code == 202
    metrics = (await client.get("/metrics")).text
    assert "batchpipe_ingest_items_accepted_total 3.0" in metrics
    assert "batchpipe_ingest_publish_seconds_count 1.0" in metrics
    assert "batchpipe_ingest_requests_in_flight 0.0" in metrics

    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/requests"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    assert media["example"] == SEED_EXAMPLE
    assert media["example"] == orjson.loads(SEED_CURL_BODY)
    assert {"202", "401", "413", "422", "503"} <= set(operation["responses"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
