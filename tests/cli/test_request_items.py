"""batchpipe.shared.request_items: the three accepted shapes, and each refusal's reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpipe.shared.contracts import is_valid_custom_id
from batchpipe.shared.request_items import DuplicateIds, ItemRefused, new_custom_id, normalize_item

KW = {"max_tokens": 1000, "temperature": 0.2}


def norm(item: Any) -> Any:
    return normalize_item(item, default_model="gpt-4o-mini", default_kwargs=KW)


def test_bare_messages_get_the_default_model_and_kwargs() -> None:
    line = norm([{"role": "user", "content": "How can I learn Python?"}])
    assert line.url == "/v1/chat/completions"
    assert line.body == {
        "model": "gpt-4o-mini",
        "max_tokens": 1000,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "How can I learn Python?"}],
    }
    assert is_valid_custom_id(line.custom_id)


def test_object_with_messages_keeps_its_parameters() -> None:
    line = norm(
        {
            "custom_id": "a-1",
            "model": "gpt-4o",
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert line.custom_id == "a-1"
    assert line.body["model"] == "gpt-4o" and line.body["temperature"] == 0
    assert "max_tokens" not in line.body


def test_full_batch_lines_for_each_endpoint() -> None:
    emb = norm(
        {
            "custom_id": "e1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": "hello"},
        }
    )
    assert emb.url == "/v1/embeddings" and emb.model == "text-embedding-3-small"
    chat = norm({"body": {"messages": [{"role": "user", "content": "x"}]}})
    assert chat.url == "/v1/chat/completions" and chat.model == "gpt-4o-mini"
    completion = norm(
        {
            "custom_id": "c1",
            "url": "/v1/completions",
            "body": {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "best_of": 3},
        }
    )
    assert completion.url == "/v1/completions" and completion.model == "gpt-3.5-turbo-instruct"
    assert completion.body["prompt"] == ["a", "b"] and "max_tokens" not in completion.body
    moderation = norm({"url": "/v1/moderations", "body": {"input": "x", "model": "omni-mod"}})
    assert moderation.url == "/v1/moderations" and moderation.model == "omni-mod"


def test_a_line_without_a_model_gets_its_endpoints_own_default_or_the_services() -> None:
    """Moderations default to OpenAI's own default model (the service's default is a chat
    model, which /v1/moderations refuses); every other endpoint to the service's default.
    Either way the line names a model, which the dispatcher's windows need."""
    moderation = norm({"url": "/v1/moderations", "body": {"input": ["a", "b"]}})
    assert moderation.body == {"input": ["a", "b"], "model": "omni-moderation-latest"}
    completion = norm({"url": "/v1/completions", "body": {"prompt": "x"}})
    assert completion.body == {"prompt": "x", "model": "gpt-4o-mini"}  # no chat defaults
    assert norm([{"role": "user", "content": "x"}]).url == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("hello", "item is a string"),
        ([], "empty list of messages"),
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        ([{"content": "x"}], "unknown role missing"),
        ({"messages": "hi"}, "not a list of messages"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream: true"),
        ({"custom_id": "bad id!", "messages": [{"role": "user"}]}, "bad custom_id"),
        ({"custom_id": "x" * 65, "messages": [{"role": "user"}]}, "bad custom_id"),
        ({"url": "/v1/images", "body": {"model": "m", "input": "x"}}, "not allowed"),
        ({"method": "GET", "body": {"messages": [{"role": "user"}]}}, "method must be 'POST'"),
        ({"body": {"model": "m"}}, "body.messages is required"),
        ({"url": "/v1/embeddings", "body": {"model": "m"}}, "body.input is required"),
        ({"url": "/v1/completions", "body": {"model": "m"}}, "body.prompt is required for"),
        ({"url": "/v1/completions", "body": {"messages": [{"role": "user"}]}}, "body.prompt"),
        ({"url": "/v1/moderations", "body": {"model": "m"}}, "body.input is required for"),
        ({"url": "/v1/moderations", "body": {"input": "x", "model": ""}}, "non-empty string"),
        ({"url": "/v1/completions", "body": {"prompt": "x", "stream": True}}, "stream: true"),
        ({"body": [1]}, "body is a list"),
        ({"body": {"messages": [{"role": "user"}]}, "extra": 1}, "unknown field(s) 'extra'"),
        ({"messages": [{"role": "user"}], "url": "/v1/embeddings"}, "belong(s) to a batch line"),
        ({"messages": [{"role": "user"}], "model": ""}, "model must be a non-empty string"),
        ({"prompt": "x"}, "neither 'messages' nor 'body'"),
    ],
)
def test_refusals_say_why(item: Any, reason: str) -> None:
    with pytest.raises(ItemRefused) as refused:
        norm(item)
    assert reason in str(refused.value)


def test_a_deeply_nested_value_is_refused_with_a_reason_not_a_recursion_error() -> None:
    # 1000 levels: deeper than Python's repr can go, so a reason must never repr the value.
    deep = orjson.loads(b"[" * 1000 + b"]" * 1000)
    deep_object = orjson.loads(b'{"a": ' * 1000 + b"1" + b"}" * 1000)
    msgs = [{"role": "user", "content": "x"}]
    for item, reason in [
        ({"custom_id": deep, "messages": msgs}, "bad custom_id a list"),
        ({"custom_id": deep_object, "messages": msgs}, "bad custom_id an object"),
        ({"custom_id": deep, "body": {"messages": msgs}}, "bad custom_id a list"),
        ({"messages": deep}, "messages[0] is a list"),
        ({"messages": deep_object}, "messages is an object, not a list of messages"),
        ({"messages": [{"role": deep}]}, "messages[0] has unknown role a list"),
        ([{"role": "user", "content": deep_object}], "item[0].content is an object"),
        ({"messages": msgs, "model": deep}, "model must be a non-empty string, not a list"),
        ({"url": deep, "body": {"messages": msgs}}, "url a list not allowed"),
        ({"method": deep_object, "body": {"messages": msgs}}, "not an object"),
    ]:
        with pytest.raises(ItemRefused) as refused:
            norm(item)
        assert reason in str(refused.value) and len(str(refused.value)) < 200


def test_duplicates_are_refused_with_the_first_position() -> None:
    seen = DuplicateIds()
    seen.check("a", 1)
    seen.check("b", 2)
    with pytest.raises(ItemRefused, match="duplicate custom_id 'a' \\(first at 1\\)"):
        seen.check("a", 7)


def test_generated_ids_are_unique_and_time_ordered() -> None:
    ids = [new_custom_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_valid_custom_id(i) and i[14] == "7" for i in ids[:10])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "custom_id",
                    "messages",
                    "body",
                    "url",
                    "method",
                    "model",
                    "role",
                    "content",
                    "input",
                    "stream",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=400, deadline=None)
def test_any_json_value_is_either_a_request_line_or_refused_with_a_reason(item: Any) -> None:
    try:
        line = norm(item)
    except ItemRefused as refused:
        assert str(refused)
        return
    assert is_valid_custom_id(line.custom_id) and line.body["model"]
    assert line.body.get("stream") is not True
