"""The JSON Schema of a request item and of a ``POST /requests`` body: one truth for ingest's
OpenAPI document and for the validation every front door runs (``shared.request_items``).

Built from ``shared.sdk_params`` (derived from the openai SDK's request TypedDicts, and for
Anthropic's native ``/v1/messages`` from the anthropic SDK's: each endpoint's parameter names,
JSON types and literal values, each chat role's message shape) plus
what the SDK's types cannot say and OpenAI enforces line by line (``_RANGES``, ``_REPLACED``):
numeric ranges, ``stop`` at most 4 strings, a non-empty ``model``, a given (non-null, non-empty)
``prompt`` or ``input``; a message of role ``assistant`` needs ``content``, ``tool_calls`` or
``function_call``; a ``/v1/messages`` body has a non-empty list of user/assistant turns and a
``max_tokens`` of at least 1 when given (the Anthropic provider adds
``BATCHPIPE_ANTHROPIC_DEFAULT_MAX_TOKENS`` otherwise). Parameters OpenAI only takes with
``stream: true`` are left out (``STREAM_ONLY``), and so is anything unknown: both APIs refuse
unrecognised arguments.
``model`` is required only by ``/v1/messages`` (as Anthropic requires it; the service's default
model is usually an OpenAI one): elsewhere ingest adds the model of ``DEFAULT_MODELS`` for the
endpoint, or else the service's default model (a window is one model, so every line names one).

The validators are compiled from the same dicts (``fastjsonschema``): one per message role and
one per endpoint's parameters. A body is valid exactly when its parameters pass the endpoint's
validator (whose ``messages`` is left open) and every message passes its role's validator: the
split lets a caller dispatch on the role first, name the bad message, and keep the common case
fast. ``tests/ingest/test_schema.py`` checks the validators against ``jsonschema`` on generated
bodies, and the fuzz test checks the served document against the running service.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

import fastjsonschema

from batchpipe.shared.contracts import CUSTOM_ID_PATTERN, ENDPOINTS
from batchpipe.shared.sdk_params import ENDPOINTS as SDK_ENDPOINTS
from batchpipe.shared.sdk_params import MESSAGES as SDK_MESSAGES

Schema = dict[str, Any]
Validator = Callable[[Any], Any]
SchemaError = fastjsonschema.JsonSchemaValueException

CHAT_URL: Final = "/v1/chat/completions"
STREAM_ONLY: Final = frozenset({"stream_options"})
# What each endpoint needs beside ``model`` (which ingest defaults).
REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "/v1/chat/completions": ("messages",),
    "/v1/embeddings": ("input",),
    "/v1/responses": ("input",),
    "/v1/completions": ("prompt",),
    "/v1/moderations": ("input",),
    "/v1/messages": ("model", "messages"),  # as in Anthropic's API: the model is not defaulted
}
# The model a line of these endpoints gets when it names none, instead of the service's
# default model (a chat model, which these endpoints would refuse): OpenAI's own default for
# the endpoint, so that a line means here what it means at OpenAI.
DEFAULT_MODELS: Final[Mapping[str, str]] = {"/v1/moderations": "omni-moderation-latest"}

_NULL: Final = {"type": "null"}
_SAMPLING: Final[Schema] = {
    "temperature": {"minimum": 0, "maximum": 2},
    "top_p": {"minimum": 0, "maximum": 1},
    "top_logprobs": {"minimum": 0, "maximum": 20},
}
# Keywords merged into the SDK-derived schema of a parameter (OpenAI's documented limits).
_RANGES: Final[Mapping[str, Schema]] = {
    "/v1/chat/completions": {
        **_SAMPLING,
        "frequency_penalty": {"minimum": -2, "maximum": 2},
        "presence_penalty": {"minimum": -2, "maximum": 2},
        "n": {"minimum": 1, "maximum": 128},
        "max_tokens": {"minimum": 1},
        "max_completion_tokens": {"minimum": 1},
    },
    "/v1/embeddings": {"dimensions": {"minimum": 1}},
    "/v1/responses": {
        **_SAMPLING,
        "max_output_tokens": {"minimum": 16},
        "max_tool_calls": {"minimum": 1},
    },
    "/v1/completions": {
        "temperature": {"minimum": 0, "maximum": 2},
        "top_p": {"minimum": 0, "maximum": 1},
        "frequency_penalty": {"minimum": -2, "maximum": 2},
        "presence_penalty": {"minimum": -2, "maximum": 2},
        "n": {"minimum": 1, "maximum": 128},
        "best_of": {"minimum": 0, "maximum": 20},
        "logprobs": {"minimum": 0, "maximum": 5},
        "max_tokens": {"minimum": 0},
    },
    "/v1/moderations": {},
    "/v1/messages": {"max_tokens": {"minimum": 1}},
}
_METADATA: Final = {
    "anyOf": [
        {
            "type": "object",
            "maxProperties": 16,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
        _NULL,
    ]
}
_MODEL: Final = {"type": "string", "minLength": 1}
_STOP: Final = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        _NULL,
    ]
}
_LOGIT_BIAS: Final = {
    "anyOf": [
        {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": -100, "maximum": 100},
        },
        _NULL,
    ]
}
# An Anthropic Messages API turn: the anthropic SDK's ``MessageParam`` (a role and a content
# that is text or a list of typed blocks), the blocks themselves left to Anthropic.
_ANTHROPIC_MESSAGES: Final[Schema] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "title": "Anthropic message",
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "enum": ["user", "assistant"]},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "object", "required": ["type"]}},
                ]
            },
        },
        "additionalProperties": False,
    },
}
# Parameters whose SDK-derived schema is replaced whole (same JSON types, narrower).
_REPLACED: Final[Mapping[str, Schema]] = {
    "/v1/chat/completions": {
        "model": _MODEL,
        "metadata": _METADATA,
        "stop": _STOP,
        "logit_bias": _LOGIT_BIAS,
    },
    "/v1/embeddings": {
        "model": _MODEL,
        "input": {
            "description": "Text, or up to 2048 texts or token arrays; never empty.",
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2048,
                    "items": {"type": "string", "minLength": 1},
                },
                {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "integer"}},
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2048,
                    "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                },
            ],
        },
    },
    "/v1/responses": {"model": _MODEL, "metadata": _METADATA},
    "/v1/completions": {
        "model": _MODEL,
        "stop": _STOP,
        "logit_bias": _LOGIT_BIAS,
        "prompt": {
            "description": "Text, texts, a token array or token arrays; never null or an empty "
            "list.",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                },
            ],
        },
    },
    "/v1/moderations": {
        "model": {**_MODEL, "description": "Defaults to 'omni-moderation-latest'."},
        "input": {
            "description": "Text, texts, or text and image_url parts; never an empty list.",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "object"}},
            ],
        },
    },
    "/v1/messages": {"model": _MODEL, "messages": _ANTHROPIC_MESSAGES},
}
_ASSISTANT_NEEDS: Final[Schema] = {
    "description": "an assistant message needs 'content', 'tool_calls' or 'function_call'",
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"not": _NULL}}},
        {"required": ["tool_calls"]},
        {"required": ["function_call"]},
    ],
}


def _params(url: str) -> Schema:
    """Every parameter of ``url`` that a batch line may carry, with its schema."""
    derived = SDK_ENDPOINTS[url]["properties"]
    ranges = _RANGES[url]
    replaced = _REPLACED[url]
    params: Schema = {}
    for name, schema in derived.items():
        if name in STREAM_ONLY:
            continue
        if name in replaced:
            params[name] = copy.deepcopy(replaced[name])
        else:
            params[name] = {**copy.deepcopy(schema), **ranges.get(name, {})}
    return params


def _message(role: str) -> Schema:
    schema = copy.deepcopy(SDK_MESSAGES[role])
    schema["title"] = f"{role} message"
    if role == "assistant":
        schema.update(_ASSISTANT_NEEDS)
    return schema


ROLES: Final = tuple(SDK_MESSAGES)
MESSAGE_SCHEMAS: Final[Mapping[str, Schema]] = {role: _message(role) for role in ROLES}
PARAMS: Final[Mapping[str, Schema]] = {url: _params(url) for url in ENDPOINTS}
PARAM_NAMES: Final[Mapping[str, frozenset[str]]] = {
    url: frozenset(params) for url, params in PARAMS.items()
}
CUSTOM_ID_SCHEMA: Final = {
    "type": ["string", "null"],
    "pattern": CUSTOM_ID_PATTERN,
    "description": "1-64 characters of [A-Za-z0-9_.:-], unique within one POST; "
    "generated (time-ordered UUIDv7) when missing or null.",
}


def messages_schema() -> Schema:
    return {
        "type": "array",
        "minItems": 1,
        "items": {"oneOf": [copy.deepcopy(s) for s in MESSAGE_SCHEMAS.values()]},
    }


def body_schema(url: str, *, messages: bool = True) -> Schema:
    """The request body of ``url`` (``messages=False``: the chat messages left unchecked, as
    the compiled parameter validator has them)."""
    properties = copy.deepcopy(PARAMS[url])
    if url == CHAT_URL:
        properties["messages"] = messages_schema() if messages else {}
    return {
        "type": "object",
        "required": list(REQUIRED[url]),
        "properties": properties,
        "additionalProperties": False,
    }


def item_schema() -> Schema:
    """One item: bare chat messages, a chat object, or a batch line for one endpoint."""
    chat = body_schema(CHAT_URL)
    chat_object = {
        "title": "Chat request",
        "description": "The chat body itself, with an optional custom_id; model defaults to "
        "the service's default model (no other defaults are added).",
        **chat,
        "properties": {"custom_id": CUSTOM_ID_SCHEMA, **chat["properties"]},
    }
    lines = []
    for url in ENDPOINTS:
        line = {
            "title": f"OpenAI batch line for {url}",
            "type": "object",
            "required": ["body"] if url == CHAT_URL else ["url", "body"],
            "properties": {
                "custom_id": CUSTOM_ID_SCHEMA,
                "method": {"type": "string", "enum": ["POST"]},
                "url": {"type": "string", "enum": [url]},
                "body": body_schema(url),
            },
            "additionalProperties": False,
        }
        if url == CHAT_URL:
            line["description"] = "url defaults to /v1/chat/completions; body.model defaults."
        elif url in DEFAULT_MODELS:
            line["description"] = f"body.model defaults to {DEFAULT_MODELS[url]!r}."
        lines.append(line)
    bare = {
        "title": "Chat messages",
        "description": "A partial request: the service adds its default model and parameters.",
        **messages_schema(),
    }
    return {"oneOf": [bare, chat_object, *lines]}


def request_body_schema(
    max_items: int, default_model: str, default_kwargs: Mapping[str, Any]
) -> Schema:
    """The ``POST /requests`` body as the OpenAPI document shows it."""
    item = item_schema()
    item["oneOf"][0]["description"] = (
        f"A partial request: the body becomes model {default_model!r}, then the default "
        f"parameters {dict(default_kwargs)}, then these messages."
    )
    return {
        "description": (
            "Rules beside the schema: custom_ids are unique within one POST (422); more than "
            f"{max_items} items is a 413, and so is a body over the size limit or an item over "
            "the Kafka message limit; a value nested too deep to serialise is a 422; so is a "
            "line its model's provider cannot run (the routes pick the provider: /v1/messages "
            "is Anthropic's alone, and a chat line for Anthropic must translate)."
        ),
        "oneOf": [
            {
                "title": "Items",
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": max_items,
                        "items": copy.deepcopy(item),
                    }
                },
                "additionalProperties": False,
            },
            {"title": "One item", **item},
        ],
    }


def _compile(schema: Schema) -> Validator:
    validator: Validator = fastjsonschema.compile(schema, detailed_exceptions=True)
    return validator


MESSAGE_VALIDATORS: Final[Mapping[str, Validator]] = {
    role: _compile(schema) for role, schema in MESSAGE_SCHEMAS.items()
}
PARAM_VALIDATORS: Final[Mapping[str, Validator]] = {
    url: _compile(body_schema(url, messages=False)) for url in ENDPOINTS
}


def _accepts_plain_text(role: str) -> bool:
    try:
        MESSAGE_VALIDATORS[role]({"role": role, "content": ""})
    except SchemaError:
        return False
    return True


# Roles for which ``{"role": role, "content": <text>}`` is a whole valid message: the common
# case is accepted without running a validator.
PLAIN_TEXT_ROLES: Final = frozenset(role for role in ROLES if _accepts_plain_text(role))
