"""Unit tests of ingest's pure steps (no Kafka): validate, encode, partition, auth."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from batchpipe.services.ingest.auth import ApiKeys, AuthResult
from batchpipe.services.ingest.encode import MAX_VALUE_BYTES, LineEncoder
from batchpipe.services.ingest.validate import ItemError, Validated, validate_body
from batchpipe.shared import request_items
from batchpipe.shared.contracts import RequestLine, decode, encode, is_valid_custom_id
from batchpipe.shared.request_items import new_custom_id, new_custom_ids
from tests.ingest.conftest import SEED_CURL_BODY

KWARGS = {"max_tokens": 1000, "temperature": 0.2}
MSG = [{"role": "user", "content": "hi"}]


def check(payload: Any) -> Validated:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return validate_body(raw, default_model="gpt-4o-mini", default_kwargs=KWARGS)


def errors_of(payload: Any) -> list[ItemError]:
    result = check(payload)
    assert not result.ok and not result.lines
    return result.errors


def test_seed_payload_becomes_two_partial_chat_lines() -> None:
    result = check(SEED_CURL_BODY)
    assert result.ok and len(result.lines) == 2
    first, second = result.lines
    assert first.url == "/v1/chat/completions" and first.method == "POST"
    assert first.body == {
        "model": "gpt-4o-mini",
        "max_tokens": 1000,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "How can I learn Python?"}],
    }
    assert second.body["messages"][0]["content"].startswith("Who is the first president")
    assert first.custom_id != second.custom_id
    assert first.custom_id < second.custom_id  # generated ids sort in creation order


def test_every_item_shape_and_the_unwrapped_single_item() -> None:
    result = check(
        {
            "data": [
                MSG,
                {"custom_id": "a-1", "messages": MSG, "temperature": 0},
                {"messages": MSG, "model": "gpt-4o"},
                {
                    "custom_id": "b:2",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4.1", "messages": MSG},
                },
                {"custom_id": "e.3", "url": "/v1/embeddings", "body": {"input": "x"}},
                {"url": "/v1/responses", "body": {"model": "o3", "input": "x"}},
                {"body": {"messages": MSG}},
            ]
        }
    )
    assert result.ok, result.errors
    lines = result.lines
    assert lines[1].custom_id == "a-1"
    # Objects get the default model only, not the partial requests' default parameters.
    assert lines[1].body == {"messages": MSG, "temperature": 0, "model": "gpt-4o-mini"}
    assert lines[2].body["model"] == "gpt-4o"
    assert lines[3].custom_id == "b:2" and lines[3].body["model"] == "gpt-4.1"
    assert lines[4].url == "/v1/embeddings" and lines[4].body["model"] == "gpt-4o-mini"
    assert lines[5].url == "/v1/responses"
    assert lines[6].url == "/v1/chat/completions"
    assert all(is_valid_custom_id(line.custom_id) for line in lines)

    for single in (MSG, {"messages": MSG}, {"body": {"messages": MSG}}):
        alone = check(single)
        assert alone.ok and len(alone.lines) == 1


def test_completions_and_moderations_lines_are_encoded_as_the_contract_encodes_them() -> None:
    items: list[Any] = [
        {"custom_id": "c-1", "url": "/v1/completions", "body": {"prompt": "x", "n": 2}},
        {"custom_id": "m-1", "url": "/v1/moderations", "body": {"input": ["a", "b"]}},
        {"url": "/v1/moderations", "body": {"input": "x", "model": "text-moderation-stable"}},
        MSG,
    ]
    result = check({"data": items})
    assert result.ok, result.errors
    completion, moderation, pinned, bare = result.lines
    assert completion.url == "/v1/completions"
    assert completion.body == {"prompt": "x", "n": 2, "model": "gpt-4o-mini"}
    assert moderation.url == "/v1/moderations" and moderation.model == "omni-moderation-latest"
    assert pinned.model == "text-moderation-stable"
    assert bare.url == "/v1/chat/completions" and bare.body["max_tokens"] == 1000
    for (key, value), line in zip(result.records, result.lines, strict=True):
        assert key == line.custom_id.encode() and value == encode(line)
    # A bare list is chat messages even when it looks like a prompt or an input.
    assert errors_of([{"prompt": "x"}])[0].reason.startswith("item[0] has unknown role")
    assert errors_of(["x"])[0].reason == "item[0] is a string, not a list of messages"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("hello", "expected a list of chat messages"),
        (42, "expected a list of chat messages"),
        ({"prompt": "x"}, "neither 'messages' nor 'body'"),
        ({"messages": "hi"}, "not a list of messages"),
        (["hi"], "not a list of messages"),
        ({"body": {"messages": {"role": "user"}}}, "not a list of messages"),
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        ([{"content": "x"}], "unknown role missing"),
        ({"messages": [{"role": "user", "content": 3}]}, "content is a number"),
        ([], "empty list of messages"),
        ({"messages": []}, "empty list of messages"),
        ({"messages": MSG, "stream": True}, "stream: true"),
        ({"body": {"messages": MSG, "stream": True}}, "stream: true"),
        ({"url": "/v1/images/generations", "body": {"prompt": "x"}}, "url '/v1/images/gen"),
        ({"url": "/v1/completions", "body": {"messages": MSG}}, "body.prompt is required"),
        ({"url": "/v1/completions", "body": {"prompt": "x", "n": 0}}, "body.n must be >= 1"),
        ({"url": "/v1/moderations", "body": {"prompt": "x"}}, "body.input is required"),
        ({"url": "/v1/moderations", "body": {"input": {}}}, "body.input: Text, texts"),
        ({"method": "GET", "body": {"messages": MSG}}, "method must be 'POST'"),
        ({"body": "x"}, "body is a string"),
        ({"body": {"model": "m"}}, "body.messages is required"),
        ({"url": "/v1/embeddings", "body": {"model": "m"}}, "body.input is required"),
        ({"body": {"messages": MSG}, "extra": 1}, "unknown field(s) 'extra'"),
        ({"url": "/v1/chat/completions", "messages": MSG}, "needs 'body'"),
        ({"messages": MSG, "model": ""}, "model must be a non-empty string"),
        ({"custom_id": "", "messages": MSG}, "bad custom_id"),
        ({"custom_id": "x" * 65, "messages": MSG}, "bad custom_id"),
        ({"custom_id": "a b", "messages": MSG}, "bad custom_id"),
        ({"custom_id": 7, "messages": MSG}, "bad custom_id"),
        ({"custom_id": "é", "body": {"messages": MSG}}, "bad custom_id"),
    ],
)
def test_each_rule_refuses_the_item_with_its_reason(item: Any, reason: str) -> None:
    errors = errors_of({"data": [MSG, item]})
    assert len(errors) == 1
    assert errors[0].index == 1
    assert reason in errors[0].reason


def test_duplicate_custom_id_in_one_post() -> None:
    errors = errors_of(
        {
            "data": [
                {"custom_id": "same", "messages": MSG},
                {"custom_id": "other", "messages": MSG},
                {"custom_id": "same", "body": {"messages": MSG}},
            ]
        }
    )
    assert errors == [ItemError(2, "duplicate custom_id 'same' (also item 0)")]


def test_all_bad_items_are_listed_and_nothing_is_kept() -> None:
    result = check({"data": [MSG, [], MSG, {"messages": MSG, "stream": True}, "x"]})
    assert [e.index for e in result.errors] == [1, 3, 4]
    assert result.lines == []
    assert all(set(e.as_dict()) == {"index", "reason"} for e in result.errors)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b"{not json", "not valid JSON"),
        (b'{"data": {"a": 1}}', "'data' must be a list"),
        (b'{"data": []}', "'data' is empty"),
        (b'{"data": [], "more": 1}', "beside 'data'"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unusable_bodies(raw: bytes, reason: str) -> None:
    errors = errors_of(raw)
    assert len(errors) == 1 and errors[0].index is None
    assert reason in errors[0].reason


def test_a_long_or_deep_value_is_shortened_in_the_reason() -> None:
    errors = errors_of({"data": [[{"role": "r" * 1000}]]})
    assert len(errors[0].reason) < 200
    deep = b"[" * 1020 + b"]" * 1020  # deeper than Python's repr can go
    msgs = b'[{"role": "user"}]'
    for raw in (
        b'{"custom_id": %s, "messages": %s}' % (deep, msgs),
        b'{"model": %s, "messages": %s}' % (deep, msgs),
        b'{"url": %s, "body": {"messages": %s}}' % (deep, msgs),
        b'[{"role": %s}]' % deep,
    ):
        errors = errors_of(raw)
        assert len(errors) == 1 and "a list" in errors[0].reason, errors


UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_new_custom_ids_in_bulk_are_what_single_calls_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [new_custom_id(), *new_custom_ids(300), new_custom_id(), *new_custom_ids(1)]
    assert len(set(ids)) == len(ids) == 303 and ids == sorted(ids)
    assert all(UUID7.match(i) for i in ids) and new_custom_ids(0) == []
    # Across a 16-bit boundary of the counter: the very ids of single calls.
    frozen_ms = time.time_ns() // 1_000_000 + 10_000
    monkeypatch.setattr(request_items, "_time_ns", lambda: frozen_ms * 1_000_000)
    start = (5 << 16) - 3
    monkeypatch.setattr(request_items, "_getrandbits", lambda bits: start if bits == 40 else 0)
    request_items._id_state[:] = [0, 0]
    bulk = new_custom_ids(6)
    request_items._id_state[:] = [0, 0]
    assert bulk == [new_custom_id() for _ in range(6)]
    assert bulk == sorted(bulk) and len(set(bulk)) == 6 and all(UUID7.match(i) for i in bulk)
    # At the counter's overflow the run moves to the next millisecond, still after the last id.
    request_items._id_state[:] = [frozen_ms, (1 << 42) - 3]
    last = new_custom_id()
    bulk = new_custom_ids(6)
    assert [last, *bulk] == sorted([last, *bulk]) and len(set(bulk)) == 6
    assert int(bulk[0].replace("-", "")[:12], 16) == frozen_ms + 1
    assert new_custom_id() > bulk[-1]


def test_new_custom_id_is_unique_sortable_uuid7() -> None:
    ids = [new_custom_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    pattern = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(pattern.match(i) and is_valid_custom_id(i) for i in ids[:100])
    parsed = uuid.UUID(ids[-1])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time() * 1000) < 60_000  # milliseconds since 1970


def test_records_are_the_contract_bytes_and_oversized_items_are_413_errors() -> None:
    result = check({"data": [MSG, {"custom_id": "c-1", "messages": MSG}]})
    assert result.ok and len(result.records) == 2
    for (key, value), line, custom_id in zip(result.records, result.lines, result.ids, strict=True):
        assert key == custom_id.encode() == line.custom_id.encode()
        assert value == encode(line)  # the very bytes contracts.encode gives
    assert result.ids[1] == "c-1"

    big = "x" * (MAX_VALUE_BYTES + 1)
    result = check({"data": [MSG, [{"role": "user", "content": big}]]})
    assert not result.ok and not result.records and result.too_large
    assert [e.index for e in result.errors] == [1]
    assert "bytes; at most" in result.errors[0].reason

    nested = "[" * 400 + "]" * 400  # valid JSON that the contract's serialiser refuses (deep)
    # A tool's parameters are free-form for the schema: the one place such nesting is valid.
    too_deep = check(
        b'{"data": [[{"role": "user", "content": "x"}], {"messages": [{"role": "user", '
        b'"content": "x"}], "tools": [{"type": "function", "function": {"parameters": %s}}]}]}'
        % nested.encode()
    )
    assert not too_deep.ok and not too_deep.too_large
    assert [e.index for e in too_deep.errors] == [1]
    assert all("cannot be serialised" in e.reason for e in too_deep.errors)


def test_bare_messages_fast_path_gives_the_same_line_as_the_contract() -> None:
    kwargs = {"max_tokens": 5, "temperature": 0.5, "stop": ["\n", "é"], "model": "gpt-x"}
    encoder = LineEncoder("gpt-4o-mini", kwargs)
    item = [
        {"role": "system", "content": 's "q" ☃'},
        {"role": "user", "content": [{"type": "text", "text": "t"}]},
    ]
    custom_id, value = encoder.encode(item)
    body = {"model": "gpt-4o-mini", **kwargs, "messages": item}
    line = RequestLine(custom_id=custom_id, url="/v1/chat/completions", body=body)
    assert value == encode(line)
    assert decode(RequestLine, value).body["model"] == "gpt-x"  # the defaults' own model wins


def test_api_keys_constant_time_check() -> None:
    off = ApiKeys(())
    assert not off.enabled and off.check(None) is AuthResult.OK
    keys = ApiKeys((SecretStr("k-one"), SecretStr("k-two")))
    assert keys.enabled
    assert keys.check(None) is AuthResult.MISSING
    assert keys.check("") is AuthResult.MISSING
    assert keys.check("Basic k-one") is AuthResult.MISSING
    assert keys.check("Bearer ") is AuthResult.MISSING
    assert keys.check("Bearer k-three") is AuthResult.INVALID
    assert keys.check("Bearer k-on") is AuthResult.INVALID
    assert keys.check("Bearer k-one") is AuthResult.OK
    assert keys.check("bearer k-two") is AuthResult.OK
    assert "k-one" not in repr(vars(keys))
