"""ingest's request schema (``shared.request_schema``) against the openai SDK it is derived
from, and the validators compiled from it against ``jsonschema`` on generated items (no Kafka).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from batchpipe.devtools import sdk_params as derive_params
from batchpipe.shared import request_schema, sdk_params
from batchpipe.shared.contracts import ENDPOINTS
from batchpipe.shared.request_items import ItemRefused, normalize_item
from tests.ingest.schema_strategies import JSON_VALUES, mutated, valid, validator

ITEM_SCHEMA = request_schema.item_schema()
ITEM = validator(ITEM_SCHEMA)
VALID_ITEMS = valid(ITEM_SCHEMA)
MSG = [{"role": "user", "content": "hi"}]
CMPL = {"custom_id": "c", "url": "/v1/completions"}
MOD = {"url": "/v1/moderations"}
NATIVE = {"url": "/v1/messages"}
TURN = [{"role": "user", "content": "hi"}]
CLAUDE = {"model": "claude-sonnet-4-5"}


def verdict(item: Any) -> str | None:
    """None if ingest accepts the item, else its reason."""
    try:
        normalize_item(item, "gpt-4o-mini", {})
    except ItemRefused as refused:
        return str(refused)
    return None


def test_the_params_module_is_what_the_installed_sdk_gives() -> None:
    derived = derive_params.derive()
    drift = (
        f"openai {derived['sdk_version']} (the module is from {sdk_params.SDK_VERSION}) "
        "takes other parameters: run `python -m batchpipe.devtools.sdk_params` and review"
    )
    assert derived["endpoints"] == sdk_params.ENDPOINTS, drift
    assert derived["messages"] == sdk_params.MESSAGES, drift


def test_parameter_names_are_the_sdks_less_stream_only_ones() -> None:
    sdk = {url: set(e["properties"]) for url, e in sdk_params.ENDPOINTS.items()}
    for url, names in request_schema.PARAM_NAMES.items():
        assert names == sdk[url] - request_schema.STREAM_ONLY, url
        # Every refinement names a parameter the SDK still has.
        assert set(request_schema._RANGES[url]) <= names, url
        assert set(request_schema._REPLACED[url]) <= names, url
    assert sdk["/v1/chat/completions"] >= request_schema.STREAM_ONLY
    assert {"temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens"} <= (
        request_schema.PARAM_NAMES["/v1/chat/completions"]
    )
    assert set(request_schema.ROLES) == {
        "developer",
        "system",
        "user",
        "assistant",
        "tool",
        "function",
    }


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"messages": MSG, "stream": -58800}, "stream (a number) matches no accepted form"),
        ([{"role": "tool"}], "item[0] (tool) needs 'content', 'tool_call_id'"),
        ([{"role": "tool", "content": "x"}], "needs 'tool_call_id'"),
        ([{"role": "user"}], "item[0] (user) needs 'content'"),
        ([{"role": "assistant"}], "needs 'content', 'tool_calls' or 'function_call'"),
        ([{"role": "assistant", "content": None}], "needs 'content', 'tool_calls'"),
        ({"custom_id": "x", "body": {}}, "body.messages is required"),
        ({"messages": MSG, "temperature": 2.5}, "temperature must be <= 2, not 2.5"),
        ({"messages": MSG, "top_p": -0.1}, "top_p must be >= 0"),
        ({"messages": MSG, "n": 0}, "n must be >= 1"),
        ({"messages": MSG, "max_tokens": 0}, "max_tokens must be >= 1"),
        ({"messages": MSG, "max_tokens": 1.5}, "max_tokens is a number; expected an integer"),
        ({"messages": MSG, "presence_penalty": 3}, "presence_penalty must be <= 2"),
        ({"messages": MSG, "stop": ["a"] * 5}, "stop (a list) matches no accepted form"),
        ({"messages": MSG, "stop": 5}, "stop (a number) matches no accepted form"),
        ({"messages": MSG, "temprature": 1}, "unknown parameter(s) 'temprature'"),
        ({"messages": MSG, "stream_options": {}}, "stream_options needs stream: true"),
        ({"messages": MSG, "reasoning_effort": "huge"}, "reasoning_effort 'huge' not allowed"),
        ({"body": {"messages": MSG, "logprobs": "yes"}}, "body.logprobs is a string"),
        ([{"role": "user", "content": "x", "extra": 1}], "unknown field(s) 'extra' in item[0]"),
        ([{"role": "user", "content": [{"type": "text"}]}], "item[0].content (a list)"),
        ({"url": "/v1/embeddings", "body": {"input": ""}}, "body.input: Text, or up to 2048"),
        ({"url": "/v1/embeddings", "body": {"input": "x", "n": 1}}, "unknown parameter(s) 'n'"),
        ({"url": "/v1/responses", "body": {"input": "x", "max_output_tokens": 3}}, ">= 16"),
        ({"url": "/v1/responses", "body": {"input": "x", "metadata": {"k": 1}}}, "metadata"),
        (CMPL | {"body": {"prompt": "x", "temperature": 2.1}}, "body.temperature must be <= 2"),
        (CMPL | {"body": {"prompt": "x", "top_p": 1.5}}, "body.top_p must be <= 1"),
        (CMPL | {"body": {"prompt": "x", "n": 129}}, "body.n must be <= 128"),
        (CMPL | {"body": {"prompt": "x", "n": 0}}, "body.n must be >= 1"),
        (CMPL | {"body": {"prompt": "x", "logprobs": 6}}, "body.logprobs must be <= 5"),
        (CMPL | {"body": {"prompt": "x", "max_tokens": -1}}, "body.max_tokens must be >= 0"),
        (CMPL | {"body": {"prompt": "x", "best_of": 21}}, "body.best_of must be <= 20"),
        (CMPL | {"body": {"prompt": "x", "presence_penalty": -3}}, "presence_penalty must be >="),
        (CMPL | {"body": {"prompt": "x", "frequency_penalty": 2.5}}, "frequency_penalty must be"),
        (CMPL | {"body": {"prompt": "x", "stop": ["a"] * 5}}, "body.stop (a list) matches no"),
        (CMPL | {"body": {"prompt": "x", "echo": "yes"}}, "body.echo is a string"),
        (CMPL | {"body": {"prompt": "x", "suffix": 1}}, "body.suffix is a number"),
        (CMPL | {"body": {"prompt": "x", "logit_bias": {"1": 101}}}, "body.logit_bias (an object)"),
        (CMPL | {"body": {"prompt": "x", "messages": MSG}}, "unknown parameter(s) 'messages'"),
        (CMPL | {"body": {"prompt": "x", "stream_options": {}}}, "stream_options needs stream"),
        (CMPL | {"body": {"prompt": None}}, "body.prompt: Text, texts, a token array"),
        (CMPL | {"body": {"prompt": []}}, "body.prompt: Text, texts"),
        (CMPL | {"body": {"prompt": 7}}, "body.prompt: Text, texts"),
        (CMPL | {"body": {"prompt": [[]]}}, "body.prompt: Text, texts"),
        (CMPL | {"body": {}}, "body.prompt is required"),
        (MOD | {"body": {}}, "body.input is required"),
        (MOD | {"body": {"input": None}}, "body.input: Text, texts, or text and image_url"),
        (MOD | {"body": {"input": []}}, "body.input: Text, texts"),
        (MOD | {"body": {"input": 3}}, "body.input: Text, texts"),
        (MOD | {"body": {"input": "x", "model": 3}}, "model must be a non-empty string"),
        (MOD | {"body": {"input": "x", "temperature": 1}}, "unknown parameter(s) 'temperature'"),
        ({"body": {"prompt": "x"}}, "body.messages is required"),  # url defaults to chat
        (NATIVE | {"body": {"messages": TURN}}, "body.model is required for /v1/messages"),
        (NATIVE | {"body": CLAUDE}, "body.messages is required"),
        (NATIVE | {"body": {"messages": []} | CLAUDE}, "body.messages"),
        (NATIVE | {"body": CLAUDE | {"messages": [{"role": "system", "content": "x"}]}}, "role"),
        (NATIVE | {"body": CLAUDE | {"messages": [{"role": "user"}]}}, "body.messages[0]"),
        (NATIVE | {"body": CLAUDE | {"messages": [{"role": "user", "content": 3}]}}, "content"),
        (
            NATIVE | {"body": CLAUDE | {"messages": [{"role": "user", "content": [{}]}]}},
            "content (a list)",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "max_tokens": 0}},
            "body.max_tokens must be >= 1",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "max_tokens": "9"}},
            "body.max_tokens is a string",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "temperature": 1}},
            "unknown parameter(s) 'temp",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "n": 2}},
            "unknown parameter(s) 'n' for /v1/mes",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "stream": True}},
            "stream: true is not supported",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "system": 3}},
            "body.system (a number) matches no",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "stop_sequences": "x"}},
            "body.stop_sequences is",
        ),
        (
            NATIVE | {"body": CLAUDE | {"messages": TURN, "model": ""}},
            "model must be a non-empty string",
        ),
    ],
)
def test_what_openai_would_refuse_is_refused_with_a_short_reason(item: Any, reason: str) -> None:
    found = verdict(item)
    assert found is not None and reason in found, found
    assert len(found) < 200
    assert not ITEM.is_valid(item)  # and the document says so too


@pytest.mark.parametrize(
    "item",
    [
        [{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        [
            {"role": "assistant", "tool_calls": [], "content": None},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        {"messages": MSG, "temperature": 0, "top_p": 1, "n": 2, "stop": ["a", "b"], "seed": 1},
        {"messages": MSG, "max_tokens": 1.0, "temperature": None, "stream": False},
        {"url": "/v1/embeddings", "body": {"input": [[1, 2], [3]], "dimensions": 8}},
        {"url": "/v1/responses", "body": {"input": [{"role": "user"}], "max_output_tokens": 16}},
        CMPL | {"body": {"prompt": "", "model": "gpt-3.5-turbo-instruct"}},
        CMPL | {"body": {"prompt": [[1, 2], [3]], "max_tokens": 0, "logprobs": 5, "n": 128}},
        CMPL | {"body": {"prompt": [1, 2], "best_of": 0, "echo": True, "suffix": None}},
        CMPL | {"body": {"prompt": ["a"], "temperature": 0, "top_p": 1, "stop": ["a"] * 4}},
        CMPL | {"body": {"prompt": "x", "seed": 1, "user": "u", "stream": False}},
        CMPL | {"body": {"prompt": "x", "logit_bias": {"50256": -100}, "frequency_penalty": -2}},
        MOD | {"body": {"input": "x"}},
        MOD | {"body": {"input": ["a", "b"], "model": "omni-moderation-latest"}},
        NATIVE | {"body": {"messages": TURN} | CLAUDE},
        NATIVE
        | {
            "custom_id": "n1",
            "body": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "system": [{"type": "text", "text": "Be brief."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Again?"},
                ],
                "stop_sequences": ["\n\n"],
                "metadata": {"user_id": "u-1"},
                "stream": False,
            },
        },
        MOD | {"body": {"input": [{"type": "text", "text": "x"}]}},
    ],
)
def test_what_openai_takes_is_accepted(item: Any) -> None:
    assert verdict(item) is None
    assert ITEM.is_valid(item)


def test_every_endpoint_has_its_rules_and_a_line_in_the_document() -> None:
    """Each endpoint of the contract has its required fields, ranges and replacements (a new
    endpoint without them would be a KeyError at import, never silently unchecked), and the
    item schema offers exactly one batch line per endpoint."""
    assert set(request_schema.REQUIRED) == set(ENDPOINTS)
    assert set(request_schema._RANGES) == set(request_schema._REPLACED) == set(ENDPOINTS)
    assert set(sdk_params.ENDPOINTS) == set(ENDPOINTS)
    assert set(request_schema.DEFAULT_MODELS) <= set(ENDPOINTS)
    for url in ENDPOINTS:
        assert request_schema.PARAMS[url]["model"]["minLength"] == 1, url
    urls = [
        branch["properties"]["url"]["enum"]
        for branch in ITEM_SCHEMA["oneOf"]
        if "url" in branch.get("properties", {})
    ]
    assert sorted(u for (u,) in urls) == sorted(ENDPOINTS)
    assert request_schema.REQUIRED["/v1/completions"] == ("prompt",)
    assert request_schema.REQUIRED["/v1/moderations"] == ("input",)


@pytest.mark.parametrize("url", ["/v1/completions", "/v1/moderations", "/v1/embeddings"])
def test_the_schema_strategies_reach_the_batch_line_endpoints(url: str) -> None:
    """The generated items (here, and in the fuzz test against the served document) include
    batch lines of these endpoints (a line of theirs must name its url), and ingest accepts
    the first one generated (no shrinking: it only has to exist)."""
    line = find(
        VALID_ITEMS,
        lambda item: isinstance(item, dict) and item.get("url") == url,
        settings=settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert verdict(line) is None, line


def test_plain_text_roles_are_those_whose_schema_takes_role_and_text() -> None:
    assert {"developer", "system", "user", "assistant"} == request_schema.PLAIN_TEXT_ROLES


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_validator_agrees_with_jsonschema_on_the_item_schema(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["valid", "mutated", "any"]))
    if kind == "any":
        item = data.draw(JSON_VALUES)
    else:
        item = data.draw(VALID_ITEMS)
        if kind == "mutated":
            item = data.draw(mutated(item))
    found = verdict(item)
    assert (found is None) == ITEM.is_valid(item), (item, found)
    if found is not None:
        assert len(found) < 300
