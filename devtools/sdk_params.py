"""Derive ``shared/sdk_params.py`` from the installed openai and anthropic SDKs' request
TypedDicts.

The SDKs' TypedDicts are the best available statement of what each API takes (OpenAI's
endpoints from ``openai``, Anthropic's native ``/v1/messages`` from ``anthropic``); ingest's
schema (``shared.request_schema``) is built on what this module derives from them, so that the
parameter names, their JSON types, the literal values and the required fields of each endpoint
and chat message role come from one place. The result is written as a plain dict module (ingest
does not import the SDK's types at start-up) and a test regenerates it and compares, so that an
SDK upgrade shows up as a failing test with the difference, fixed by
``python -m batchpipe.devtools.sdk_params``.

Conversion: ``str``/``int``/``float``/``bool``/``None`` → the JSON types; ``Literal`` → a typed
``enum``; ``Union`` → ``anyOf`` (plain types merged into one ``type`` list, a literal beside its
own base type dropped, as for ``model``); sequences → arrays; ``Dict[str, X]`` → an object of
X. A nested TypedDict becomes a closed object (``additionalProperties: false``, its required
keys) down to ``depth`` levels, and ``{"type": "object"}`` below: message roles are described in
full, a request parameter's nested objects only by their type (the SDK may lag behind the API
inside them). Anything else (a file upload type) is ``{}``.
"""

from __future__ import annotations

import collections.abc
import pprint
import sys
import types
import typing
from pathlib import Path
from typing import Any, Final

import anthropic
import openai
import typing_extensions

from batchpipe.shared import sdk_params

MODULE_PATH: Final = Path(sdk_params.__file__)
# The parameters each ingest endpoint takes; the streaming variant is never batched.
ENDPOINT_PARAMS: Final = {
    "/v1/chat/completions": (
        "openai.types.chat.completion_create_params",
        "CompletionCreateParamsNonStreaming",
    ),
    "/v1/embeddings": ("openai.types.embedding_create_params", "EmbeddingCreateParams"),
    "/v1/responses": (
        "openai.types.responses.response_create_params",
        "ResponseCreateParamsNonStreaming",
    ),
    "/v1/completions": (
        "openai.types.completion_create_params",
        "CompletionCreateParamsNonStreaming",
    ),
    "/v1/moderations": ("openai.types.moderation_create_params", "ModerationCreateParams"),
    "/v1/messages": (
        "anthropic.types.message_create_params",
        "MessageCreateParamsNonStreaming",
    ),
}
PARAM_DEPTH: Final = 0
MESSAGE_DEPTH: Final = 3

_SEQUENCES: Final = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.MutableSequence,
)
_MAPPINGS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SCALARS: Final = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _load(module: str, name: str) -> Any:
    __import__(module)
    return getattr(sys.modules[module], name)


def _hints(typed_dict: Any) -> tuple[dict[str, Any], list[str]]:
    """The fields of a TypedDict (wrappers kept) and its required keys, in declaration order."""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    required = [name for name, hint in hints.items() if _is_required(typed_dict, name, hint)]
    return hints, required


def _is_required(typed_dict: Any, name: str, hint: Any) -> bool:
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    origin = typing.get_origin(hint)
    if origin in (typing.Required, typing_extensions.Required):
        return True
    if origin in (typing.NotRequired, typing_extensions.NotRequired):
        return False
    return bool(getattr(typed_dict, "__total__", False))


def convert(hint: Any, depth: int) -> dict[str, Any]:
    """The JSON Schema of one annotation (see the module docstring)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (
        typing.Annotated,
        typing.Required,
        typing.NotRequired,
        typing_extensions.Required,
        typing_extensions.NotRequired,
    ):
        return convert(args[0], depth)
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if origin is typing.Literal or origin is typing_extensions.Literal:
        return _literal(args)
    if origin is typing.Union or origin is types.UnionType:
        return _union([convert(arg, depth) for arg in args])
    if origin in _SEQUENCES or getattr(origin, "__name__", "") == "SequenceNotStr":
        return {"type": "array", "items": convert(args[0], depth) if args else {}}
    if origin in _MAPPINGS:
        return {"type": "object", "additionalProperties": convert(args[1], depth)}
    if typing_extensions.is_typeddict(hint):
        return typed_dict(hint, depth)
    return {}


def typed_dict(hint: Any, depth: int) -> dict[str, Any]:
    if depth <= 0:
        return {"type": "object"}
    hints, required = _hints(hint)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: convert(sub, depth - 1) for name, sub in hints.items()},
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _literal(values: tuple[Any, ...]) -> dict[str, Any]:
    by_type: dict[str, list[Any]] = {}
    for value in values:
        kind = "null" if value is None else _SCALARS[type(value)]
        by_type.setdefault(kind, []).append(value)
    branches = [
        {"type": kind} if kind == "null" else {"type": kind, "enum": found}
        for kind, found in by_type.items()
    ]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _union(branches: list[dict[str, Any]]) -> dict[str, Any]:
    flat: list[dict[str, Any]] = []
    for branch in branches:
        for sub in branch.get("anyOf", [branch]) if set(branch) == {"anyOf"} else [branch]:
            if sub not in flat:
                flat.append(sub)
    if {} in flat:
        return {}
    plain = {b["type"] for b in flat if set(b) == {"type"} and isinstance(b["type"], str)}
    # A literal beside its own base type adds nothing (``Union[str, Literal["gpt-4o", ...]]``).
    flat = [b for b in flat if not (set(b) == {"type", "enum"} and b["type"] in plain)]
    if all(set(b) == {"type"} for b in flat):
        kinds = [b["type"] for b in flat]
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    if len(flat) == 1:
        return flat[0]
    return {"anyOf": flat}


def derive() -> dict[str, Any]:
    """Everything ``shared/sdk_params.py`` holds, from the installed SDK."""
    endpoints: dict[str, Any] = {}
    for url, (module, name) in ENDPOINT_PARAMS.items():
        hints, required = _hints(_load(module, name))
        params = {param: convert(hint, PARAM_DEPTH) for param, hint in hints.items()}
        endpoints[url] = {"properties": params, "required": required}
    chat_hints, _ = _hints(_load(*ENDPOINT_PARAMS["/v1/chat/completions"]))
    messages = typing.get_args(convert_inner(chat_hints["messages"]))[0]
    roles: dict[str, Any] = {}
    for message in typing.get_args(messages):
        schema = typed_dict(message, MESSAGE_DEPTH)
        (role,) = schema["properties"]["role"]["enum"]
        roles[role] = schema
    return {
        "sdk_version": openai.__version__,
        "anthropic_sdk_version": anthropic.__version__,
        "endpoints": endpoints,
        "messages": roles,
    }


def convert_inner(hint: Any) -> Any:
    """``hint`` without its ``Required``/``Annotated`` wrappers."""
    while typing.get_origin(hint) in (typing.Annotated, typing.Required, typing.NotRequired):
        hint = typing.get_args(hint)[0]
    return hint


def render(derived: dict[str, Any]) -> str:
    """The source of ``shared/sdk_params.py``."""
    return (
        '"""Generated by ``devtools/sdk_params.py`` (run as a module) from the openai SDK\'s\n'
        "request TypedDicts (``/v1/messages``: the anthropic SDK's): do not edit (a test\n"
        "regenerates it and compares).\n\n"
        "``ENDPOINTS[url]``: the JSON Schema of each parameter and the required ones;\n"
        "``MESSAGES[role]``: the JSON Schema of a chat message of that role.\n"
        '"""\n\n'
        "from typing import Any, Final\n\n"
        f"SDK_VERSION: Final = {derived['sdk_version']!r}\n"
        f"ANTHROPIC_SDK_VERSION: Final = {derived['anthropic_sdk_version']!r}\n\n"
        "ENDPOINTS: Final[dict[str, dict[str, Any]]] = "
        f"{pprint.pformat(derived['endpoints'], width=90, sort_dicts=False)}\n\n"
        "MESSAGES: Final[dict[str, dict[str, Any]]] = "
        f"{pprint.pformat(derived['messages'], width=90, sort_dicts=False)}\n"
    )


def main() -> None:
    MODULE_PATH.write_text(render(derive()))
    print(
        f"wrote {MODULE_PATH} (openai {openai.__version__}, anthropic {anthropic.__version__}); "
        "run `ruff format` on it"
    )


if __name__ == "__main__":
    main()
