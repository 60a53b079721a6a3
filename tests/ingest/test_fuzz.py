"""Hypothesis fuzzing of POST /requests (real broker): whatever the body (item shapes, random
JSON, bytes, deep nesting), never a 5xx; a 202 accepts every item, and only bodies that match
the request schema published in /openapi.json; a refusal is a 4xx in the documented shape."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from batchpipe.services.ingest.app import create_app
from batchpipe.shared.request_items import ROLES
from batchpipe.shared.settings import Settings

Ingest = tuple[FastAPI, httpx.AsyncClient]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
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
    {"body": st.fixed_dictionaries({}, optional={"messages": messages, "input": json_values})},
    optional={
        "custom_id": custom_ids,
        "method": st.sampled_from(["POST", "GET"]),
        "url": st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/x"]),
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
# The request body schema that /openapi.json publishes: every accepted body must match it.
BODY_SCHEMA = create_app(Settings()).openapi()["paths"]["/requests"]["post"]["requestBody"][
    "content"
]["application/json"]["schema"]
SCHEMA = Draft202012Validator(BODY_SCHEMA)

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
