"""Hypothesis fuzzing of ingest (real broker) against the document it serves at /openapi.json:
every body that document's request schema accepts (custom_ids unique) is answered 202; every
body it refuses (one mutation away from a valid one, or random JSON, bytes, deep nesting) is a
4xx; never a 5xx; every answer, ops routes included, has a documented status, content type and
schema."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from batchpipe.services.ingest.app import create_app
from batchpipe.shared.contracts import ENDPOINTS
from batchpipe.shared.request_items import ROLES
from batchpipe.shared.settings import Settings
from tests.ingest.schema_strategies import json_values as json_values_of
from tests.ingest.schema_strategies import mutated, python_patterns, valid, validator

Ingest = tuple[FastAPI, httpx.AsyncClient]

json_values = json_values_of(text=20, keys=8, children=4, leaves=12)
roles = st.sampled_from([*sorted(ROLES), "robot", ""]) | st.text(max_size=6)
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.text(max_size=30) | st.none() | json_values,
        "name": st.text(max_size=5),
    },
)
messages = st.lists(message, max_size=3) | json_values
custom_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True) | st.text(max_size=70)
chat_object = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        "custom_id": custom_ids,
        "model": st.text(max_size=10) | json_values,
        "stream": st.booleans(),
        "temperature": st.floats(0, 2),
        "url": st.just("/v1/chat/completions"),
    },
)
batch_line = st.fixed_dictionaries(
    {
        "body": st.fixed_dictionaries(
            {}, optional={"messages": messages, "input": json_values, "prompt": json_values}
        )
    },
    optional={
        "custom_id": custom_ids,
        "method": st.sampled_from(["POST", "GET"]),
        "url": st.sampled_from([*ENDPOINTS, "/x"]),
    },
)
item = messages | chat_object | batch_line | json_values
good_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(sorted(ROLES))}, optional={"content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
good_item = (
    good_messages
    | st.fixed_dictionaries(
        {"messages": good_messages},
        optional={"custom_id": st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)},
    )
    | st.fixed_dictionaries({"body": st.fixed_dictionaries({"messages": good_messages})})
)
document = (
    st.fixed_dictionaries({"data": st.lists(good_item, min_size=1, max_size=5)})
    | st.fixed_dictionaries({"data": st.lists(item, max_size=5)})
    | st.fixed_dictionaries({"data": json_values})
    | item
)
deep_templates = st.sampled_from(
    [
        b'{"data": [{"messages": [{"role": "user"}], "x": %s}]}',
        b'{"data": [{"messages": [{"role": "user"}], "custom_id": %s}]}',
        b'{"data": [{"messages": [{"role": "user"}], "model": %s}]}',
        b'{"data": [{"url": %s, "body": {"messages": [{"role": "user"}]}}]}',
        b'{"data": [[{"role": %s}]]}',
        b'{"data": %s}',
        b"%s",
    ]
)
deeply_nested = st.builds(
    lambda template, depth: template % (b"[" * depth + b"]" * depth),
    deep_templates,
    st.integers(1, 1100),
)
# The document as a client sees it: fetched from the app's /openapi.json (no lifespan, no Kafka).
SPEC: dict[str, Any] = TestClient(create_app(Settings())).get("/openapi.json").json()
BODY_SCHEMA = SPEC["paths"]["/requests"]["post"]["requestBody"]["content"]["application/json"][
    "schema"
]
SCHEMA = validator(BODY_SCHEMA)
VALID_BODIES = valid(BODY_SCHEMA)


def custom_ids_of(body: Any) -> list[str]:
    items = body["data"] if isinstance(body, dict) and "data" in body else [body]
    return [i["custom_id"] for i in items if isinstance(i, dict) and i.get("custom_id")]


def routed_to_anthropic(body: Any) -> Any:
    """``body`` with each ``/v1/messages`` line's model renamed ``claude-...``: a native line
    for a model the routes send elsewhere is refused by a rule the document states beside the
    schema (the model's provider must serve the endpoint), as duplicate custom_ids are."""
    items = (
        body["data"] if isinstance(body, dict) and isinstance(body.get("data"), list) else [body]
    )
    for item in items:
        if isinstance(item, dict) and item.get("url") == "/v1/messages":
            item["body"]["model"] = "claude-" + item["body"]["model"]
    return body


def unique_ids(body: Any) -> bool:
    ids = custom_ids_of(body)
    return len(ids) == len(set(ids))


def check_documented(path: str, method: str, response: httpx.Response) -> None:
    """The answer's status is documented for the route, with its content type and schema."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, (path, response.status_code, response.text)
    content = responses[str(response.status_code)].get("content", {})
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in content, (path, response.status_code, media, list(content))
    schema = content[media].get("schema", {})
    if media == "application/json":
        document = {**python_patterns(schema), "components": SPEC.get("components", {})}
        errors = [e.message for e in Draft202012Validator(document).iter_errors(response.json())]
        assert not errors, (path, response.status_code, errors[:3], response.text[:300])
    else:
        assert schema.get("type") == "string" and isinstance(response.text, str)


body_bytes = document.map(orjson.dumps) | st.binary(max_size=64) | deeply_nested


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=body_bytes)
async def test_post_requests_never_answers_5xx(ingest: Ingest, raw: bytes) -> None:
    _, client = ingest
    response = await client.post("/requests", content=raw)
    assert response.status_code < 500, (raw, response.text)
    event(f"status {response.status_code}")
    check_documented("/requests", "post", response)
    body: dict[str, Any] = response.json()
    if response.status_code == 202:
        assert body["status"] == "success"
        assert body["accepted"] == len(body["ids"]) >= 1
        assert len(set(body["ids"])) == len(body["ids"])
        errors = [e.message for e in SCHEMA.iter_errors(orjson.loads(raw))]
        assert not errors, ("accepted, but the published schema says no", raw, errors[:3])
    else:
        assert response.status_code in (413, 422), (raw, response.text)
        assert body["status"] == "error" and isinstance(body["reason"], str)
        for error in body["errors"]:
            assert set(error) == {"index", "reason"}


FUZZ_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ_SETTINGS
@given(body=VALID_BODIES.filter(unique_ids).map(routed_to_anthropic))
async def test_every_body_the_document_accepts_is_answered_202(ingest: Ingest, body: Any) -> None:
    _, client = ingest
    response = await client.post("/requests", content=orjson.dumps(body))
    assert response.status_code == 202, (body, response.text)
    check_documented("/requests", "post", response)
    answer = response.json()
    sent = body["data"] if isinstance(body, dict) and "data" in body else [body]
    assert answer["accepted"] == len(sent)
    ids = [i.get("custom_id") if isinstance(i, dict) else None for i in sent]
    assert all(a == b for a, b in zip(answer["ids"], ids, strict=True) if b)


@st.composite
def invalid_bodies(draw: st.DrawFn) -> Any:
    body = draw(mutated(draw(VALID_BODIES)))
    assume(not SCHEMA.is_valid(body))
    return body


@FUZZ_SETTINGS
@given(body=invalid_bodies())
async def test_every_body_the_document_refuses_is_a_documented_4xx(
    ingest: Ingest, body: Any
) -> None:
    _, client = ingest
    response = await client.post("/requests", content=orjson.dumps(body))
    assert response.status_code in (413, 422), (body, response.text)
    event(f"status {response.status_code}")
    check_documented("/requests", "post", response)
    reasons = [e["reason"] for e in response.json()["errors"]]
    assert reasons and all(len(r) < 300 for r in reasons)


async def test_the_ops_routes_answer_as_documented(ingest: Ingest) -> None:
    _, client = ingest
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await client.get(path)
        check_documented(path, "get", response)
    assert "batchpipe_ingest" in (await client.get("/metrics")).text
