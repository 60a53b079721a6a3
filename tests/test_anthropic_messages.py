"""batchpipe.shared.anthropic_messages: OpenAI chat bodies as Anthropic Messages params (pure)."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

import pytest
from anthropic.types import (
    Base64ImageSourceParam,
    ImageBlockParam,
    MetadataParam,
    TextBlockParam,
    URLImageSourceParam,
)
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from hypothesis import given
from hypothesis import strategies as st

from batchpipe.shared.anthropic_messages import (
    ANTHROPIC_CUSTOM_ID,
    Untranslatable,
    anthropic_custom_id,
    is_mapped,
    messages_params,
)
from batchpipe.shared.contracts import CUSTOM_ID_PATTERN

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
DEFAULT = 512
USER = {"role": "user", "content": "How can I learn Python?"}
PNG = "iVBORw0KGgo="


def chat(**params: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-5", "messages": [USER], **params}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return messages_params(CHAT, body, default_max_tokens=DEFAULT)


def refused(body: dict[str, Any], url: str = CHAT) -> str:
    with pytest.raises(Untranslatable) as err:
        messages_params(url, body, default_max_tokens=DEFAULT)
    return str(err.value)


def _keys(typed_dict: Any) -> frozenset[str]:
    return frozenset(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


PARAM_KEYS = _keys(MessageCreateParamsNonStreaming)
BLOCK_KEYS = {"text": _keys(TextBlockParam), "image": _keys(ImageBlockParam)}
SOURCE_KEYS = {"base64": _keys(Base64ImageSourceParam), "url": _keys(URLImageSourceParam)}
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


def _no_none(value: Any, where: str = "params") -> None:
    assert value is not None, where
    if isinstance(value, dict):
        for key, inner in value.items():
            _no_none(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _no_none(inner, f"{where}[{i}]")


def assert_messages_params(params: dict[str, Any]) -> None:
    """The structure Anthropic's ``MessageCreateParamsNonStreaming`` and Messages API need."""
    _no_none(params)
    assert set(params) <= PARAM_KEYS, set(params) - PARAM_KEYS
    assert {"model", "messages", "max_tokens"} <= set(params)
    assert isinstance(params["model"], str) and params["model"]
    assert type(params["max_tokens"]) is int and params["max_tokens"] >= 1
    assert "stream" not in params
    if "system" in params:
        assert isinstance(params["system"], str) and params["system"]
    if "stop_sequences" in params:
        stops = params["stop_sequences"]
        assert stops and all(isinstance(s, str) and s.strip() for s in stops)
    if "metadata" in params:
        assert set(params["metadata"]) <= _keys(MetadataParam)
        assert isinstance(params["metadata"]["user_id"], str)
    turns = params["messages"]
    assert isinstance(turns, list) and turns
    assert turns[0]["role"] == "user" and turns[-1]["role"] == "user"
    for turn in turns:
        assert set(turn) == {"role", "content"}
        assert turn["role"] in ("user", "assistant")
        content = turn["content"]
        if isinstance(content, str):
            assert content.strip()
            continue
        assert isinstance(content, list) and content
        for block in content:
            assert set(block) <= BLOCK_KEYS[block["type"]]
            if block["type"] == "text":
                assert isinstance(block["text"], str) and block["text"].strip()
            else:
                assert turn["role"] == "user"
                source = block["source"]
                assert set(source) == SOURCE_KEYS[source["type"]]
                if source["type"] == "base64":
                    assert source["media_type"] in MEDIA_TYPES and source["data"]
                else:
                    assert re.match(r"^https?://", source["url"])


# -- the seed sample and the basic mapping -----------------------------------------------------


def test_the_seed_samples_bare_messages_body_translates() -> None:
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 1000,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "How can I learn Python?"}],
    }
    params = translate(body)
    assert params == {
        "model": "claude-sonnet-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "How can I learn Python?"}],
    }
    assert_messages_params(params)


def test_the_input_is_never_mutated_and_the_output_shares_no_containers() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        stop=["END"],
        user="u-1",
    )
    before = copy.deepcopy(body)
    params = translate(body)
    assert body == before
    params["messages"][0]["content"][0]["text"] = "changed"
    params["stop_sequences"].append("X")
    assert body == before


def test_max_tokens_comes_from_either_name_or_the_default() -> None:
    assert translate(chat())["max_tokens"] == DEFAULT
    assert translate(chat(max_tokens=7))["max_tokens"] == 7
    assert translate(chat(max_completion_tokens=9))["max_tokens"] == 9
    assert translate(chat(max_completion_tokens=9, max_tokens=9))["max_tokens"] == 9
    assert translate(chat(max_tokens=None, max_completion_tokens=None))["max_tokens"] == DEFAULT


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"max_tokens": 0}, "max_tokens 0 is not an integer of at least 1"),
        ({"max_tokens": 1.5}, "max_tokens 1.5"),
        ({"max_tokens": True}, "max_tokens true"),
        ({"max_completion_tokens": -1}, "max_completion_tokens -1"),
        ({"max_completion_tokens": 5, "max_tokens": 6}, "differ"),
    ],
)
def test_bad_max_tokens_are_refused(params: dict[str, Any], reason: str) -> None:
    assert reason in refused(chat(**params))


def test_the_default_max_tokens_must_be_a_positive_int() -> None:
    for bad in (0, -3, True):
        with pytest.raises(ValueError, match="default_max_tokens") as err:
            messages_params(CHAT, chat(), default_max_tokens=bad)
        assert not isinstance(err.value, Untranslatable)


def test_model_is_kept_and_must_be_a_non_empty_string() -> None:
    assert translate(chat(model="claude-haiku-5-5"))["model"] == "claude-haiku-5-5"
    assert "'model' is an empty string" in refused(chat(model=""))
    assert "'model' is missing" in refused({"messages": [USER]})
    assert "'model' is a number" in refused(chat(model=3))


def test_other_urls_and_non_object_bodies_are_refused() -> None:
    for url in ("/v1/embeddings", "/v1/responses", "/v1/completions", "/chat/completions"):
        assert f"url {url!r} cannot be sent to Anthropic" in refused(chat(), url)
    with pytest.raises(Untranslatable, match="not an object"):
        messages_params(CHAT, [USER], default_max_tokens=DEFAULT)  # type: ignore[arg-type]


# -- parameters ---------------------------------------------------------------------------------


def test_temperature_and_top_p_are_dropped_within_openais_ranges() -> None:
    for value in (0, 0.2, 1, 1.5, 2):
        assert "temperature" not in translate(chat(temperature=value))
    for value in (0, 0.5, 1):
        assert "top_p" not in translate(chat(top_p=value))


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"temperature": 2.5}, "temperature 2.5 is not a number from 0 to 2"),
        ({"temperature": -0.1}, "temperature -0.1"),
        ({"temperature": "hot"}, "temperature 'hot'"),
        ({"temperature": True}, "temperature true"),
        ({"top_p": 1.5}, "top_p 1.5 is not a number from 0 to 1"),
    ],
)
def test_sampling_values_outside_openais_ranges_are_refused(
    params: dict[str, Any], reason: str
) -> None:
    assert reason in refused(chat(**params))


def test_stop_becomes_a_list_of_stop_sequences() -> None:
    assert translate(chat(stop="END"))["stop_sequences"] == ["END"]
    assert translate(chat(stop=["a", "b"]))["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(chat(stop=[]))
    assert "stop_sequences" not in translate(chat(stop=None))


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("", "stop sequence ''"),
        ([" \n"], "non-whitespace stop sequences"),
        ([1], "not a string or a list of strings"),
        ({"a": 1}, "not a string or a list of strings"),
    ],
)
def test_bad_stop_sequences_are_refused(stop: Any, reason: str) -> None:
    assert reason in refused(chat(stop=stop))


def test_user_and_safety_identifier_become_metadata_user_id() -> None:
    assert translate(chat(user="u-1"))["metadata"] == {"user_id": "u-1"}
    assert translate(chat(safety_identifier="s-1"))["metadata"] == {"user_id": "s-1"}
    assert translate(chat(user="x", safety_identifier="x"))["metadata"] == {"user_id": "x"}
    assert "metadata" not in translate(chat(user=""))
    assert "differ" in refused(chat(user="a", safety_identifier="b"))
    assert "user is a number" in refused(chat(user=5))


def test_stream_false_is_dropped_and_true_refused() -> None:
    assert "stream" not in translate(chat(stream=False))
    assert "stream" not in translate(chat(stream=None))
    assert refused(chat(stream=True)) == "stream=true: Anthropic batches do not stream"


def test_n_one_is_dropped_and_more_refused() -> None:
    assert "n" not in translate(chat(n=1))
    assert "n" not in translate(chat(n=None))
    assert refused(chat(n=3)) == "n=3: Anthropic returns one completion per request"
    assert "n=true" in refused(chat(n=True))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("store", True),
        ("metadata", {"team": "a"}),
        ("service_tier", "flex"),
        ("prompt_cache_key", "k"),
        ("prompt_cache_options", {"ttl": "30m"}),
        ("prompt_cache_retention", "24h"),
        ("parallel_tool_calls", False),
    ],
)
def test_parameters_that_cannot_change_the_completion_are_dropped(name: str, value: Any) -> None:
    assert translate(chat(**{name: value})) == translate(chat())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", 7),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("presence_penalty", False),
        ("response_format", {"type": "json_object"}),
        ("modalities", ["text", "audio"]),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tools", []),
        ("tool_choice", "none"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "high"),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("moderation", {}),
        ("stream_options", {"include_usage": True}),
    ],
)
def test_parameters_without_an_equivalent_are_refused_by_name(name: str, value: Any) -> None:
    assert refused(chat(**{name: value})) == f"parameter {name!r} has no Anthropic equivalent"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("logprobs", False),
        ("logit_bias", {}),
        ("presence_penalty", 0),
        ("frequency_penalty", 0.0),
        ("response_format", {"type": "text"}),
        ("modalities", ["text"]),
        ("seed", None),
        ("tools", None),
    ],
)
def test_values_that_ask_for_nothing_are_dropped(name: str, value: Any) -> None:
    assert translate(chat(**{name: value})) == translate(chat())


def test_unknown_parameters_are_refused() -> None:
    assert refused(chat(top_k=5)) == "unknown parameter 'top_k'"
    assert refused(chat(thinking={"type": "adaptive"})) == "unknown parameter 'thinking'"


# -- messages -----------------------------------------------------------------------------------


def test_system_and_developer_messages_anywhere_become_one_system_string() -> None:
    params = translate(
        chat(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "system", "content": ""},
                {"role": "user", "content": "and now?"},
            ]
        )
    )
    assert params["system"] == "Be brief.\n\nUse French."
    assert params["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and now?"},
    ]


def test_no_system_message_means_no_system_param() -> None:
    assert "system" not in translate(chat())
    empty = chat(messages=[{"role": "system", "content": []}, USER])
    assert "system" not in translate(empty)


def test_system_parts_other_than_text_are_refused() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    body = chat(messages=[{"role": "system", "content": [image]}, USER])
    assert refused(body) == "messages[0].content[0]: only text parts are supported here"
    assert "content is a number" in refused(chat(messages=[{"role": "system", "content": 1}, USER]))


def test_turns_keep_their_order_and_consecutive_roles_are_not_merged() -> None:
    turns = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ]
    assert translate(chat(messages=turns))["messages"] == turns


def test_content_parts_become_blocks() -> None:
    parts = [
        {"type": "text", "text": "What is this?", "prompt_cache_breakpoint": {"mode": "explicit"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "http://x.test/b.gif"}},
    ]
    params = translate(chat(messages=[{"role": "user", "content": parts}]))
    assert params["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
        {"type": "image", "source": {"type": "url", "url": "http://x.test/b.gif"}},
    ]
    assert_messages_params(params)


def test_an_assistant_refusal_part_becomes_text() -> None:
    turns = [
        USER,
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"role": "user", "content": "Why?"},
    ]
    content = translate(chat(messages=turns))["messages"][1]["content"]
    assert content == [{"type": "text", "text": "I can't."}]


def _with_part(part: dict[str, Any]) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": [part]}])


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}, "'input_audio'"),
        ({"type": "file", "file": {"file_id": "f"}}, "part type 'file' is not supported"),
        ({"type": "refusal", "refusal": "no"}, "'refusal' is not supported in user messages"),
        ({"type": "text", "text": ""}, "empty text"),
        ({"type": "text", "text": " \n"}, "non-whitespace"),
        ({"type": "text", "text": 3}, "text is a number"),
        ({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}, "'cache_control'"),
        ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}, "image/bmp"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "not base64"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "neither http(s)"),
        ({"type": "image_url", "image_url": "https://x/y.png"}, "image_url is a string"),
        ({"type": "image_url", "image_url": {"url": "https://x", "extra": 1}}, "'extra'"),
        ("text", "is a string, not a content part"),
    ],
)
def test_unsupported_parts_are_refused(part: Any, reason: str) -> None:
    message = refused(_with_part(part))
    assert message.startswith("messages[0].content[0]") and reason in message


def test_images_in_assistant_turns_are_refused() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
    turns = [USER, {"role": "assistant", "content": [image]}, USER]
    assert refused(chat(messages=turns)) == (
        "messages[1].content[0]: part type 'image_url' is not supported in assistant messages"
    )


@pytest.mark.parametrize("role", ["tool", "function", "model", "Human"])
def test_unsupported_roles_are_refused(role: str) -> None:
    turns = [USER, {"role": "assistant", "content": "x"}, {"role": role, "content": "r"}]
    assert refused(chat(messages=turns)) == f"messages[2]: role {role!r} is not supported"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("name", "alice", "'name' has no Anthropic equivalent"),
        ("tool_calls", [{"id": "c", "type": "function"}], "'tool_calls' is not supported"),
        ("function_call", {"name": "f", "arguments": "{}"}, "'function_call' is not supported"),
        ("audio", {"id": "a"}, "'audio' is not supported"),
        ("refusal", "no", "'refusal' is not supported"),
        ("weight", 1, "unknown field 'weight'"),
    ],
)
def test_message_fields_without_an_equivalent_are_refused(
    field: str, value: Any, reason: str
) -> None:
    turns = [USER, {"role": "assistant", "content": "x", field: value}, USER]
    message = refused(chat(messages=turns))
    assert message.startswith(f"messages[1]: {reason}")


def test_null_message_fields_are_dropped() -> None:
    turns = [USER, {"role": "assistant", "content": "x", "tool_calls": None, "name": None}, USER]
    assert translate(chat(messages=turns))["messages"][1] == {"role": "assistant", "content": "x"}


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "'messages' is an empty list"),
        (None, "'messages' is missing"),
        ("hi", "'messages' is a string"),
        (["hi"], "messages[0] is a string, not a message object"),
        ([{"content": "x"}], "messages[0]: role is missing"),
        ([{"role": "user", "content": ""}], "messages[0]: empty content"),
        ([{"role": "user", "content": "  "}], "messages[0]: empty content"),
        ([{"role": "user", "content": []}], "messages[0]: empty content"),
        ([{"role": "user"}], "messages[0]: content is missing"),
        ([{"role": "user", "content": 5}], "messages[0]: content is a number"),
        ([{"role": "system", "content": "s"}], "no user message"),
        ([{"role": "assistant", "content": "a"}, USER], "the first turn is the assistant's"),
        ([USER, {"role": "assistant", "content": "a"}], "the last turn is the assistant's"),
    ],
)
def test_bad_conversations_are_refused(messages: Any, reason: str) -> None:
    assert reason in refused(chat(messages=messages))


# -- /v1/messages bodies ------------------------------------------------------------------------


def test_native_messages_bodies_are_checked_and_copied() -> None:
    body = {"model": "claude-opus-5", "max_tokens": 10, "messages": [USER], "system": "s"}
    params = messages_params(MESSAGES, body, default_max_tokens=DEFAULT)
    assert params == body and params is not body
    params["x"] = 1
    assert "x" not in body


def test_native_messages_bodies_get_the_default_max_tokens() -> None:
    body: dict[str, Any] = {"model": "claude-opus-5", "messages": [USER]}
    assert messages_params(MESSAGES, body, default_max_tokens=DEFAULT)["max_tokens"] == DEFAULT
    assert "max_tokens" not in body
    body = {"model": "claude-opus-5", "messages": [USER], "max_tokens": None}
    assert messages_params(MESSAGES, body, default_max_tokens=DEFAULT)["max_tokens"] == DEFAULT


def test_native_messages_bodies_keep_what_they_carry() -> None:
    body = {
        "model": "claude-opus-5",
        "max_tokens": 10,
        "messages": [USER],
        "stream": False,
        "thinking": {"type": "adaptive"},
    }
    assert messages_params(MESSAGES, body, default_max_tokens=DEFAULT) == body


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model": ""}, "'model' is an empty string"),
        ({"model": None}, "'model' is missing"),
        ({"messages": []}, "'messages' is an empty list"),
        ({"messages": "hi"}, "'messages' is a string"),
        ({"max_tokens": 0}, "max_tokens 0"),
        ({"max_tokens": "5"}, "max_tokens '5'"),
        ({"stream": True}, "stream=true"),
    ],
)
def test_bad_native_messages_bodies_are_refused(change: dict[str, Any], reason: str) -> None:
    body = {"model": "claude-opus-5", "max_tokens": 10, "messages": [USER], **change}
    assert reason in refused(body, MESSAGES)


# -- custom ids ---------------------------------------------------------------------------------


def test_ids_anthropic_takes_are_kept() -> None:
    for custom_id in ("req-1", "A_b-9", "x" * 64, "bp_short", "bp_" + "g" * 40):
        assert anthropic_custom_id(custom_id) == custom_id
        assert not is_mapped(custom_id)


def test_other_ids_are_mapped_deterministically() -> None:
    for custom_id in ("req.1", "tenant:42", "x" * 65, "", "ünï"):
        mapped = anthropic_custom_id(custom_id)
        expected = "bp_" + hashlib.sha256(custom_id.encode()).hexdigest()[:40]
        assert mapped == expected == anthropic_custom_id(custom_id)
        assert ANTHROPIC_CUSTOM_ID.fullmatch(mapped)
        assert is_mapped(mapped)


def test_an_id_shaped_like_a_mapped_one_is_mapped_too() -> None:
    lookalike = anthropic_custom_id("req.1")
    assert anthropic_custom_id(lookalike) != lookalike
    assert is_mapped(anthropic_custom_id(lookalike))


@given(st.from_regex(CUSTOM_ID_PATTERN, fullmatch=True))
def test_every_batchpipe_id_becomes_an_anthropic_id(custom_id: str) -> None:
    mapped = anthropic_custom_id(custom_id)
    assert ANTHROPIC_CUSTOM_ID.fullmatch(mapped)
    assert is_mapped(mapped) == (mapped != custom_id)


@given(st.lists(st.from_regex(CUSTOM_ID_PATTERN, fullmatch=True), unique=True, max_size=50))
def test_different_ids_stay_different(custom_ids: list[str]) -> None:
    assert len({anthropic_custom_id(c) for c in custom_ids}) == len(custom_ids)


# -- properties ---------------------------------------------------------------------------------

_TEXT = st.text(min_size=1, max_size=20).filter(str.strip)
_TEXT_PART = st.builds(lambda t: {"type": "text", "text": t}, _TEXT)
_IMAGE_PART = st.one_of(
    st.builds(
        lambda m, d: {"type": "image_url", "image_url": {"url": f"data:{m};base64,{d}"}},
        st.sampled_from(sorted(MEDIA_TYPES)),
        st.from_regex(r"[A-Za-z0-9+/]{4,16}={0,2}", fullmatch=True),
    ),
    st.builds(
        lambda s, p, d: {"type": "image_url", "image_url": {"url": f"{s}://x.test/{p}", **d}},
        st.sampled_from(["http", "https"]),
        st.from_regex(r"[a-z0-9]{1,8}\.png", fullmatch=True),
        st.sampled_from([{}, {"detail": "auto"}, {"detail": "high"}]),
    ),
)
_SYSTEM = st.builds(
    lambda r, c: {"role": r, "content": c},
    st.sampled_from(["system", "developer"]),
    st.one_of(st.text(max_size=20), st.lists(_TEXT_PART, max_size=2)),
)


def _turn(role: str) -> st.SearchStrategy[dict[str, Any]]:
    parts = st.one_of(_TEXT_PART, _IMAGE_PART) if role == "user" else _TEXT_PART
    content = st.one_of(_TEXT, st.lists(parts, min_size=1, max_size=3))
    return st.builds(lambda c: {"role": role, "content": c}, content)


@st.composite
def _conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    roles = ["user"]
    for _ in range(draw(st.integers(0, 6))):
        roles.append(draw(st.sampled_from(["user", "assistant"])))
    if roles[-1] == "assistant":
        roles.append("user")
    messages: list[dict[str, Any]] = []
    for role in roles:
        messages.extend(draw(st.lists(_SYSTEM, max_size=1)))
        messages.append(draw(_turn(role)))
    return messages


_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(1, 10_000),
    "max_completion_tokens": st.integers(1, 10_000),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "stop": st.one_of(_TEXT, st.lists(_TEXT, max_size=4)),
    "user": st.text(max_size=10),
    "stream": st.just(False),
    "n": st.just(1),
    "store": st.booleans(),
    "metadata": st.dictionaries(_TEXT, _TEXT, max_size=2),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "logprobs": st.just(False),
    "presence_penalty": st.just(0),
    "seed": st.none(),
}


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(_TEXT), "messages": draw(_conversations())}
    for name in draw(st.lists(st.sampled_from(sorted(_OPTIONAL)), unique=True)):
        body[name] = draw(_OPTIONAL[name])
    if "max_tokens" in body and "max_completion_tokens" in body:
        body["max_tokens"] = body["max_completion_tokens"]
    return body


@given(_bodies())
def test_every_translation_is_valid_messages_params_and_deterministic(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    params = translate(body)
    assert_messages_params(params)
    assert params == translate(body)
    assert body == before
    turns = [m for m in body["messages"] if m["role"] in ("user", "assistant")]
    assert [t["role"] for t in params["messages"]] == [t["role"] for t in turns]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["model", "messages", "max_tokens", "stop", "user", "n", "stream", "x"]),
        _JSON,
    ),
    st.sampled_from([CHAT, MESSAGES]),
)
def test_any_body_is_translated_validly_or_refused(body: dict[str, Any], url: str) -> None:
    try:
        params = messages_params(url, body, default_max_tokens=DEFAULT)
    except Untranslatable as err:
        assert str(err)
        return
    if url == CHAT:
        assert_messages_params(params)
    else:
        assert params["model"] and params["messages"] and params["max_tokens"] >= 1
