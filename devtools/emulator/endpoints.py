"""The emulated endpoints: each Batch API endpoint's deterministic response body and usage.

One handler per ``url`` of a batch input line (``HANDLERS``; OpenAI's with ``/v1``, Azure's
without); an unknown url gets ``generic``.
A handler is pure: the body it returns and the tokens it counts depend only on the request
body, the ``LineContext`` (seed, batch sequence number, created time) and the custom_id, so the
same input gives the same output. An invalid body raises ``BadRequestError`` (a 400 line).
"""

from __future__ import annotations

import base64
import math
import random
import struct
from dataclasses import dataclass, field
from typing import Any

from batchpipe.devtools.emulator.determinism import digest, hex_id, unit

EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072, "text-embedding-3-small": 1536}
DEFAULT_EMBEDDING_DIMENSIONS = 1536


@dataclass
class LineContext:
    """What a line's outcome depends on besides its own content."""

    seed: int
    batch_seq: int
    batch_id: str
    endpoint: str
    created: int
    failure_rate: float = 0.0
    failure_statuses: list[int] = field(default_factory=lambda: [500])


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens

    def as_batch_usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def count_tokens(text: str) -> int:
    """A plausible token estimate: about four characters per token, at least one."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


def reply_text(prompt: str, model: str, max_tokens: int | None) -> tuple[str, str]:
    """(content, finish_reason): derived only from the prompt, so the same input gives the same
    output; truncated to ``max_tokens`` tokens (finish_reason ``length``)."""
    words = prompt.split()
    gist = " ".join(words[:24])[:160]
    tag = hex_id(model, prompt, length=8)
    text = f"Emulated reply {tag} to: {gist}" if gist else f"Emulated reply {tag}."
    if max_tokens is not None and count_tokens(text) > max_tokens:
        return text[: max(max_tokens, 1) * 4], "length"
    return text, "stop"


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return None


class BadRequestError(ValueError):
    """The request body is invalid for its endpoint: a 400 line in the error file."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def chat_completion(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("Missing required parameter: 'messages'.", "messages")
    model = str(body["model"])
    prompt_tokens = 0
    last_user = ""
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise BadRequestError("Invalid value for 'messages': each needs a 'role'.", "messages")
        text = _text_of(message.get("content"))
        prompt_tokens += 4 + count_tokens(text)
        if message["role"] == "user":
            last_user = text
    prompt_tokens += 3
    raw_n = body.get("n")
    n = raw_n if isinstance(raw_n, int) and raw_n > 0 else 1
    limit = _max_tokens(body, "max_completion_tokens", "max_tokens")
    content, finish = reply_text(last_user, model, limit)
    completion_tokens = count_tokens(content) * n
    response = {
        "id": f"chatcmpl-{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'chat', length=29)}",
        "object": "chat.completion",
        "created": ctx.created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return response, Usage(prompt_tokens, completion_tokens)


def _prompts(prompt: Any) -> list[str]:
    """The prompts of a legacy completion: a string, a list of strings (one choice set each),
    a list of token ids or a list of such lists."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(x, str) for x in prompt):
            return list(prompt)
        if all(isinstance(x, int) for x in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in prompt):
            return [" ".join(map(str, x)) for x in prompt]
    raise BadRequestError("Invalid value for 'prompt'.", "prompt")


def completion(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    """A legacy ``text_completion``: ``n`` choices per prompt, ``max_tokens`` 16 by default."""
    if body.get("prompt") is None:
        raise BadRequestError("Missing required parameter: 'prompt'.", "prompt")
    prompts = _prompts(body["prompt"])
    model = str(body["model"])
    raw_n = body.get("n")
    n = raw_n if isinstance(raw_n, int) and raw_n > 0 else 1
    limit = _max_tokens(body, "max_tokens") or 16
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for prompt in prompts:
        prompt_tokens += count_tokens(prompt)
        content, finish = reply_text(prompt, model, limit)
        for _ in range(n):
            completion_tokens += count_tokens(content)
            choices.append(
                {"text": content, "index": len(choices), "logprobs": None, "finish_reason": finish}
            )
    response = {
        "id": f"cmpl-{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'cmpl', length=29)}",
        "object": "text_completion",
        "created": ctx.created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_emulator",
    }
    return response, Usage(prompt_tokens, completion_tokens)


def embedding_vector(text: str, model: str, dimensions: int) -> list[float]:
    """A unit-length vector determined by (model, text)."""
    rng = random.Random(digest("embedding", model, text))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        raise BadRequestError("Missing required parameter: 'input'.", "input")
    inputs: list[str]
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and all(isinstance(x, int) for x in raw):
        inputs = [" ".join(map(str, raw))]
    elif isinstance(raw, list):
        inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
    else:
        raise BadRequestError("Invalid value for 'input'.", "input")
    model = str(body["model"])
    dims = body.get("dimensions")
    if not isinstance(dims, int) or dims <= 0:
        dims = EMBEDDING_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
    b64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, model, dims)
        tokens += count_tokens(text)
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if b64 else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    response = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return response, Usage(tokens, 0)


def responses(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    raw = body.get("input")
    if raw is None:
        raise BadRequestError("Missing required parameter: 'input'.", "input")
    if isinstance(raw, str):
        prompt = raw
    elif isinstance(raw, list):
        texts = [
            _text_of(item.get("content")) if isinstance(item, dict) else str(item) for item in raw
        ]
        prompt = texts[-1] if texts else ""
    else:
        raise BadRequestError("Invalid value for 'input'.", "input")
    instructions = body.get("instructions")
    model = str(body["model"])
    content, finish = reply_text(prompt, model, _max_tokens(body, "max_output_tokens"))
    input_tokens = count_tokens(prompt) + count_tokens(str(instructions or "")) + 7
    output_tokens = count_tokens(content)
    rid = hex_id(ctx.seed, ctx.batch_seq, custom_id, "resp", length=48)
    response = {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": ctx.created,
        "status": "completed" if finish == "stop" else "incomplete",
        "background": False,
        "error": None,
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [
            {
                "id": f"msg_{rid}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    return response, Usage(input_tokens, output_tokens)


MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


# the categories omni-moderation also judges images for
IMAGE_CATEGORIES = frozenset(
    {
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "violence",
        "violence/graphic",
    }
)


def _moderation_inputs(raw: Any) -> list[tuple[str, list[str]]]:
    """(text, input types) per result: one per string of a list, one for a list of
    multimodal parts (``text`` / ``image_url``) taken together."""
    if isinstance(raw, str):
        return [(raw, ["text"])]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return [(x, ["text"]) for x in raw]
    if isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        kinds = [x.get("type") for x in raw]
        if all(kind in ("text", "image_url") for kind in kinds):
            text = " ".join(str(x.get("text", "")) for x in raw if x.get("type") == "text")
            return [(text, ["text", "image"] if "image_url" in kinds else ["text"])]
    raise BadRequestError("Invalid value for 'input'.", "input")


def moderation(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    """Nothing is flagged; scores are small and a function of the input. The real endpoint
    reports no ``usage``, so none is counted."""
    raw = body.get("input")
    if raw is None:
        raise BadRequestError("Missing required parameter: 'input'.", "input")
    results = [
        {
            "flagged": False,
            "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
            "category_scores": {
                c: round(unit("mod", c, text) * 0.01, 6) for c in MODERATION_CATEGORIES
            },
            "category_applied_input_types": {
                c: [t for t in types if t == "text" or c in IMAGE_CATEGORIES]
                for c in MODERATION_CATEGORIES
            },
        }
        for text, types in _moderation_inputs(raw)
    ]
    response = {
        "id": f"modr-{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'mod')}",
        "model": str(body["model"]),
        "results": results,
    }
    return response, Usage()


def generic(body: dict[str, Any], ctx: LineContext, custom_id: str) -> tuple[Any, Usage]:
    return {"created": ctx.created, "data": [], "emulated": True}, Usage()


AZURE_FILTER_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


def _filter_results(*detections: str) -> dict[str, Any]:
    """Azure's content-filter annotations, every category passed (``safe``)."""
    result: dict[str, Any] = {
        c: {"filtered": False, "severity": "safe"} for c in AZURE_FILTER_CATEGORIES
    }
    for name in detections:
        result[name] = {"filtered": False, "detected": False}
    return result


def azure_chat_completion(
    body: dict[str, Any], ctx: LineContext, custom_id: str
) -> tuple[Any, Usage]:
    """A chat completion as Azure returns it: OpenAI's body plus the content-filter results
    of the prompt and of every choice (``model`` is the line's, i.e. the deployment)."""
    response, usage = chat_completion(body, ctx, custom_id)
    response["prompt_filter_results"] = [
        {"prompt_index": 0, "content_filter_results": _filter_results("jailbreak")}
    ]
    for choice in response["choices"]:
        choice["content_filter_results"] = _filter_results(
            "protected_material_code", "protected_material_text"
        )
    del response["service_tier"]
    return response, usage


HANDLERS = {
    "/v1/chat/completions": chat_completion,
    "/v1/completions": completion,
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
    "/v1/moderations": moderation,
    # Azure OpenAI's batch endpoints (no /v1)
    "/chat/completions": azure_chat_completion,
    "/embeddings": embeddings,
    "/responses": responses,
}
