"""OpenAI chat-completions bodies as Anthropic Messages API params, and custom ids Anthropic takes.

Role: the one translation every stage shares. Ingest refuses with a 422 what this module
refuses, the dispatcher dead-letters it, and the Anthropic provider builds its batch lines from
what it returns; so a request is either translated faithfully or refused with the reason, never
sent to fail later.

Reason for refusing rather than dropping: a parameter that can change the completion and has
no Anthropic equivalent would be silently ignored, and the user would get an answer to a
different request. Only parameters that cannot change the completion are dropped (storage,
cache and capacity hints), or parameters set to the value that asks for nothing (``n: 1``,
``logprobs: false``, a penalty of 0). Anthropic's current API (the version the ``anthropic``
SDK sends, 2026-10-21) has no sampling parameters: the SDK's ``MessageCreateParams`` has no
``temperature``, ``top_p`` or ``top_k``, and the API rejects a ``temperature``; the models
sample with settings of their own. ``temperature`` and ``top_p`` are therefore dropped, not
refused: no value of theirs can be honoured, and refusing them would refuse every request
given the default ``temperature`` of bare-messages bodies.

Decisions, per OpenAI chat-completions parameter (-> the Anthropic param, or what happens):

- ``model`` -> ``model`` (a non-empty string).
- ``messages`` -> ``system`` (system and developer messages) and ``messages`` (see below).
- ``max_completion_tokens`` or ``max_tokens`` -> ``max_tokens``; ``default_max_tokens`` when
  neither is given (Anthropic requires it); refused when both are given and differ.
- ``stop`` (a string or a list) -> ``stop_sequences`` (a list).
- ``user``, ``safety_identifier`` -> ``metadata.user_id``: both name the end user for abuse
  detection, as ``user_id`` does; refused when both are given and differ.
- ``temperature``, ``top_p`` -> dropped: the current API has no sampling parameters (above);
  a value outside OpenAI's ranges (0-2, 0-1) is refused as invalid.
- ``stream`` -> false dropped, true refused (a batch line never streams).
- ``n`` -> 1 dropped, more refused (Anthropic returns one completion per request).
- ``store``, ``metadata`` -> dropped: they only tag or keep the completion on OpenAI's side.
- ``service_tier`` -> dropped: OpenAI's capacity choice; a batch has its own.
- ``prompt_cache_key``, ``prompt_cache_options``, ``prompt_cache_retention`` -> dropped:
  cache routing changes cost and latency, not the completion.
- ``parallel_tool_calls`` -> dropped: it only means something with ``tools``, refused below.
- ``seed`` -> refused: it asks for reproducible sampling, which Anthropic does not offer.
- ``logprobs``, ``top_logprobs`` -> refused unless false / null (no log probabilities).
- ``logit_bias`` -> refused unless ``{}``; ``presence_penalty``, ``frequency_penalty`` ->
  refused unless 0 (Anthropic has no token biasing or penalties).
- ``response_format`` -> refused unless ``{"type": "text"}``; ``modalities`` -> refused unless
  ``["text"]``.
- ``tools``, ``tool_choice``, ``functions``, ``function_call``, ``audio``, ``prediction``,
  ``reasoning_effort``, ``verbosity``, ``web_search_options``, ``moderation``,
  ``stream_options`` -> refused (not translated).
- anything else -> refused as an unknown parameter.

Every parameter given as ``null`` is dropped: null is OpenAI's "not given".

Messages: ``system`` and ``developer`` messages, wherever they stand, become the top-level
``system``, the documented place for instructions (their position in the conversation is not
kept; the SDK also types ``system`` turns inside ``messages``, undocumented, so not used).
``user`` and ``assistant`` messages keep their order and are not merged: Anthropic combines
consecutive turns of one role itself. A string content stays a string; content parts become
blocks: ``text`` -> text block, ``image_url`` with a ``data:`` URL -> base64 image block (jpeg,
png, gif, webp), with an http(s) URL -> url image block (``detail``, a resolution hint, is
dropped), an assistant ``refusal`` part -> text block. Refused: roles ``tool`` and ``function``,
assistant ``tool_calls``, ``function_call``, ``audio`` and ``refusal`` fields, ``name`` (it tells
the model who speaks, which Anthropic cannot carry), other part types (audio, files), empty or
whitespace-only text (Anthropic rejects it), a conversation whose first turn is not the user's
(Anthropic requires it), and a last turn by the assistant (Anthropic would continue that turn as
a prefill instead of answering it).

Custom ids: batchpipe's ids (``[A-Za-z0-9_.:-]{1,64}``) are wider than Anthropic's
(``ANTHROPIC_CUSTOM_ID``). ``anthropic_custom_id`` keeps an id that fits and maps one that does
not to ``"bp_" + sha256(id)[:40]`` (hex). An id that already has that mapped shape is mapped too,
so ``is_mapped`` is exact and a kept id never equals a mapped one; two different ids map to the
same one only on a 160-bit hash prefix collision (about n**2 / 2**161 for n ids: below 1e-38 for
a 100,000-request batch). The provider keeps the mapping to hand users back their own id.

Invariant: the functions are pure (no I/O, the input is never mutated) and deterministic; the
output holds no ``None`` and its keys are keys of the SDK's ``MessageCreateParamsNonStreaming``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

CHAT_URL: Final = "/v1/chat/completions"
MESSAGES_URL: Final = "/v1/messages"

ANTHROPIC_CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAPPED_PREFIX: Final = "bp_"
_MAPPED_ID: Final = re.compile(r"^bp_[0-9a-f]{40}$")

IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL: Final = re.compile(r"^data:([^;,]+);base64,(.+)$", re.DOTALL)

_SYSTEM_ROLES: Final = frozenset({"system", "developer"})
_TURN_ROLES: Final = frozenset({"user", "assistant"})
_SYSTEM_JOIN: Final = "\n\n"

# Parameters handled by ``_translate_chat`` itself.
_MAPPED_PARAMS: Final = frozenset(
    {
        "model",
        "messages",
        "max_completion_tokens",
        "max_tokens",
        "stop",
        "user",
        "safety_identifier",
        "temperature",
        "top_p",
        "stream",
        "n",
    }
)
# OpenAI's ranges of the dropped sampling parameters: a value outside is invalid, not dropped.
_SAMPLING_RANGES: Final[Mapping[str, int]] = {"temperature": 2, "top_p": 1}
# Parameters that cannot change the completion.
_DROPPED_PARAMS: Final = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "parallel_tool_calls",
    }
)
# Parameters that change the completion and have no Anthropic equivalent; the value listed is
# the one that asks for nothing, and is dropped.
_NO_VALUE: Final = object()
_REFUSED_PARAMS: Final[Mapping[str, object]] = {
    "seed": _NO_VALUE,
    "logprobs": False,
    "top_logprobs": _NO_VALUE,
    "logit_bias": {},
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "response_format": {"type": "text"},
    "modalities": ["text"],
    "tools": _NO_VALUE,
    "tool_choice": _NO_VALUE,
    "functions": _NO_VALUE,
    "function_call": _NO_VALUE,
    "audio": _NO_VALUE,
    "prediction": _NO_VALUE,
    "reasoning_effort": _NO_VALUE,
    "verbosity": _NO_VALUE,
    "web_search_options": _NO_VALUE,
    "moderation": _NO_VALUE,
    "stream_options": _NO_VALUE,
}
# Message fields other than role and content, and why each is refused unless null.
_MESSAGE_FIELDS: Final[Mapping[str, str]] = {
    "name": "'name' has no Anthropic equivalent (Anthropic cannot say who speaks)",
    "tool_calls": "'tool_calls' is not supported (tools are not translated)",
    "function_call": "'function_call' is not supported (functions are not translated)",
    "audio": "'audio' is not supported",
    "refusal": "'refusal' is not supported; give the refusal as content",
}


class Untranslatable(ValueError):
    """A request that has no faithful Anthropic Messages form; the message says what and why."""


def messages_params(
    url: str, body: Mapping[str, Any], *, default_max_tokens: int
) -> dict[str, Any]:
    """The Anthropic Messages params of the request ``body`` sent to ``url``.

    ``/v1/chat/completions`` bodies are translated (module docstring); ``/v1/messages`` bodies
    already are Messages params and are checked for what every batch line needs (a model, a
    non-empty list of messages, ``max_tokens`` of at least 1, defaulted when absent, no
    streaming) and returned as a new dict (nested values are shared, never modified). Raises
    ``Untranslatable`` for anything else.
    """
    if type(default_max_tokens) is not int or default_max_tokens < 1:
        raise ValueError(f"default_max_tokens must be an int >= 1, not {default_max_tokens!r}")
    if not isinstance(body, Mapping):
        raise Untranslatable(f"the body is {_type(body)}, not an object")
    if url == CHAT_URL:
        return _translate_chat(body, default_max_tokens)
    if url == MESSAGES_URL:
        return _check_messages_body(body, default_max_tokens)
    raise Untranslatable(
        f"url {url!r} cannot be sent to Anthropic: use {CHAT_URL} or {MESSAGES_URL}"
    )


def anthropic_custom_id(custom_id: str) -> str:
    """``custom_id`` itself when Anthropic takes it, else its deterministic mapped id."""
    if ANTHROPIC_CUSTOM_ID.fullmatch(custom_id) and not _MAPPED_ID.fullmatch(custom_id):
        return custom_id
    digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()
    return _MAPPED_PREFIX + digest[:40]


def is_mapped(anthropic_id: str) -> bool:
    """Whether ``anthropic_id`` came from mapping (so the original id must be looked up)."""
    return _MAPPED_ID.fullmatch(anthropic_id) is not None


# -- /v1/messages ------------------------------------------------------------------------------


def _check_messages_body(body: Mapping[str, Any], default_max_tokens: int) -> dict[str, Any]:
    params = dict(body)
    _model(params.get("model"))
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Untranslatable(f"'messages' is {_type(messages)}, not a non-empty list")
    if params.get("stream") is True:
        raise Untranslatable("stream=true: Anthropic batches do not stream")
    max_tokens = params.get("max_tokens")
    params["max_tokens"] = (
        default_max_tokens if max_tokens is None else _max_tokens("max_tokens", max_tokens)
    )
    return params


# -- /v1/chat/completions ----------------------------------------------------------------------


def _translate_chat(body: Mapping[str, Any], default_max_tokens: int) -> dict[str, Any]:
    for name, value in body.items():
        if value is None or name in _MAPPED_PARAMS or name in _DROPPED_PARAMS:
            continue
        if name not in _REFUSED_PARAMS:
            raise Untranslatable(f"unknown parameter {name!r}")
        neutral = _REFUSED_PARAMS[name]
        if neutral is _NO_VALUE or not _same(value, neutral):
            raise Untranslatable(f"parameter {name!r} has no Anthropic equivalent")

    params: dict[str, Any] = {"model": _model(body.get("model"))}
    system, turns = _messages(body.get("messages"))
    params["max_tokens"] = _chat_max_tokens(body, default_max_tokens)
    params["messages"] = turns
    if system:
        params["system"] = system

    for name, top in _SAMPLING_RANGES.items():
        value = body.get(name)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= top):
            raise Untranslatable(f"{name} {_json(value)} is not a number from 0 to {top}")
    stream = body.get("stream")
    if stream is not None and stream is not False:
        raise Untranslatable(f"stream={_json(stream)}: Anthropic batches do not stream")
    n = body.get("n")
    if n is not None and not (type(n) is int and n == 1):
        raise Untranslatable(f"n={_json(n)}: Anthropic returns one completion per request")

    stop = _stop(body.get("stop"))
    if stop:
        params["stop_sequences"] = stop
    user_id = _user_id(body)
    if user_id:
        params["metadata"] = {"user_id": user_id}
    return params


def _model(model: Any) -> str:
    if not isinstance(model, str) or not model:
        raise Untranslatable(f"'model' is {_type(model)}, not a non-empty string")
    return model


def _max_tokens(name: str, value: Any) -> int:
    if type(value) is not int or value < 1:
        raise Untranslatable(f"{name} {_json(value)} is not an integer of at least 1")
    return value


def _chat_max_tokens(body: Mapping[str, Any], default: int) -> int:
    completion = body.get("max_completion_tokens")
    legacy = body.get("max_tokens")
    if completion is not None:
        completion = _max_tokens("max_completion_tokens", completion)
    if legacy is not None:
        legacy = _max_tokens("max_tokens", legacy)
    if completion is not None and legacy is not None and completion != legacy:
        raise Untranslatable(
            f"max_completion_tokens {completion} and max_tokens {legacy} differ: "
            "Anthropic takes one max_tokens"
        )
    if completion is not None:
        return completion
    return default if legacy is None else legacy


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise Untranslatable(f"stop is {_type(stop)}, not a string or a list of strings")
    for sequence in sequences:
        if not sequence.strip():
            raise Untranslatable(
                f"stop sequence {sequence!r}: Anthropic needs non-whitespace stop sequences"
            )
    return list(sequences)


def _user_id(body: Mapping[str, Any]) -> str | None:
    ids: dict[str, str] = {}
    for name in ("user", "safety_identifier"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise Untranslatable(f"{name} is {_type(value)}, not a string")
        if value:
            ids[name] = value
    if len(set(ids.values())) > 1:
        raise Untranslatable(
            "user and safety_identifier differ: Anthropic takes one metadata.user_id"
        )
    return next(iter(ids.values()), None)


def _messages(messages: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise Untranslatable(f"'messages' is {_type(messages)}, not a non-empty list")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise Untranslatable(f"{where} is {_type(message)}, not a message object")
        role = message.get("role")
        if not isinstance(role, str):
            raise Untranslatable(f"{where}: role is {_type(role)}, not a string")
        if role not in _SYSTEM_ROLES and role not in _TURN_ROLES:
            raise Untranslatable(f"{where}: role {role!r} is not supported")
        for field, value in message.items():
            if field in ("role", "content") or value is None:
                continue
            reason = _MESSAGE_FIELDS.get(field)
            raise Untranslatable(f"{where}: {reason or f'unknown field {field!r}'}")
        content = message.get("content")
        if role in _SYSTEM_ROLES:
            system.extend(_system_texts(content, where))
        else:
            turns.append({"role": role, "content": _turn_content(role, content, where)})
    if not turns:
        raise Untranslatable("no user message: Anthropic needs at least one")
    if turns[0]["role"] != "user":
        raise Untranslatable(
            f"the first turn is the {turns[0]['role']}'s: Anthropic needs the user's first"
        )
    if turns[-1]["role"] != "user":
        raise Untranslatable(
            "the last turn is the assistant's: Anthropic would continue it (prefill) "
            "instead of answering it"
        )
    return _SYSTEM_JOIN.join(system), turns


def _system_texts(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise Untranslatable(f"{where}: content is {_type(content)}, not text or text parts")
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text":
            raise Untranslatable(f"{where}.content[{j}]: only text parts are supported here")
        text = _text(part, f"{where}.content[{j}]", allow_empty=True)
        if text:
            texts.append(text)
    return texts


def _turn_content(role: str, content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        if not content.strip():
            raise Untranslatable(f"{where}: empty content: Anthropic needs non-whitespace text")
        return content
    if not isinstance(content, list):
        raise Untranslatable(f"{where}: content is {_type(content)}, not text or parts")
    if not content:
        raise Untranslatable(f"{where}: empty content: Anthropic needs at least one block")
    return [_block(role, part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _block(role: str, part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise Untranslatable(f"{where} is {_type(part)}, not a content part")
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": _text(part, where, allow_empty=False)}
    if kind == "refusal" and role == "assistant":
        _only(part, {"type", "refusal"}, where)
        refusal = part.get("refusal")
        if not isinstance(refusal, str) or not refusal.strip():
            raise Untranslatable(f"{where}: refusal is {_type(refusal)}, not non-empty text")
        return {"type": "text", "text": refusal}
    if kind == "image_url" and role == "user":
        return _image(part, where)
    raise Untranslatable(f"{where}: part type {_json(kind)} is not supported in {role} messages")


def _text(part: Mapping[str, Any], where: str, *, allow_empty: bool) -> str:
    # ``prompt_cache_breakpoint`` is a cache hint: it cannot change the completion.
    _only(part, {"type", "text", "prompt_cache_breakpoint"}, where)
    text = part.get("text")
    if not isinstance(text, str):
        raise Untranslatable(f"{where}: text is {_type(text)}, not a string")
    if not allow_empty and not text.strip():
        raise Untranslatable(f"{where}: empty text: Anthropic needs non-whitespace text")
    return text


def _image(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    _only(part, {"type", "image_url", "prompt_cache_breakpoint"}, where)
    image = part.get("image_url")
    if not isinstance(image, Mapping):
        raise Untranslatable(f"{where}: image_url is {_type(image)}, not an object")
    _only(image, {"url", "detail"}, f"{where}.image_url")
    url = image.get("url")
    if not isinstance(url, str):
        raise Untranslatable(f"{where}: image_url.url is {_type(url)}, not a string")
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise Untranslatable(f"{where}: the image data URL is not base64 (data:<type>;base64,)")
        media_type, data = match.group(1), match.group(2)
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
            raise Untranslatable(
                f"{where}: image type {media_type!r} is not supported: Anthropic takes {allowed}"
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise Untranslatable(f"{where}: the image URL is neither http(s) nor a base64 data URL")


def _only(part: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key, value in part.items():
        if key not in allowed and value is not None:
            raise Untranslatable(f"{where}: field {key!r} is not supported")


def _same(value: Any, neutral: object) -> bool:
    """Equal in JSON terms: ``0`` and ``0.0`` match, ``False`` and ``0`` do not."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    return bool(value == neutral)


def _type(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
