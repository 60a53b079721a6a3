"""Anthropic result lines: each request's outcome and the pass that writes a batch's results.

Role: what a Message Batch's ``results`` JSONL holds. Anthropic validates a request's
``params`` only when it processes it, so a bad request is not a create failure but an
``errored`` line with an ``invalid_request_error``; the fault injector's ``anthropic_error_rate``
errors a share of the valid ones with a chosen error type. Requests the batch did not reach
before it was canceled or expired get a ``canceled`` / ``expired`` line.
Invariant: pure apart from ``run_results_pass``; every choice (which lines finished, which
errored, the reply) is a hash of the seed, the batch sequence number and the custom_id, so a
batch restarted mid-way writes the same results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchpipe.devtools.emulator.determinism import digest, hex_id, unit
from batchpipe.devtools.emulator.endpoints import count_tokens, reply_text
from batchpipe.devtools.emulator.process import ShuffledWriter

Json = dict[str, Any]

ROLES = ("user", "assistant")
FAULT_MESSAGES = {
    "invalid_request_error": "Invalid request (emulated error).",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "rate_limit_error": "This request would exceed the rate limit for your organization "
    "(emulated).",
    "authentication_error": "invalid x-api-key",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "The requested resource could not be found.",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "timeout_error": "Request timed out.",
}


class InvalidParams(ValueError):
    """A request's ``params`` the Messages API would refuse: an errored line."""


@dataclass
class ResultContext:
    """What a line's outcome depends on besides its own content (picklable: it crosses into
    the step worker process)."""

    seed: int
    batch_seq: int
    error_rate: float = 0.0
    error_types: list[str] = field(default_factory=lambda: ["api_error"])


@dataclass
class ResultCounts:
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    succeeded_custom_ids: list[str] = field(default_factory=list)

    def as_counts(self) -> dict[str, int]:
        return {
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        if not content:
            raise InvalidParams(f"{where}: content must be non-empty")
        return content
    if isinstance(content, list) and content:
        parts: list[str] = []
        for block in content:
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise InvalidParams(f"{where}: each content block needs a 'type'")
            if isinstance(block.get("text"), str):
                parts.append(block["text"])
        return " ".join(parts)
    raise InvalidParams(f"{where}: Input should be a valid string or a list of content blocks")


def check_params(params: Any) -> tuple[str, int, str, int]:
    """Validate Messages API ``params`` as the API would: (model, max_tokens, the last user
    text, the prompt's tokens); raises ``InvalidParams`` with the API's kind of message."""
    if not isinstance(params, dict):
        raise InvalidParams("params: Input should be a valid dictionary")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidParams("model: Field required")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise InvalidParams("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidParams("max_tokens: Input should be an integer greater than or equal to 1")
    if params.get("stream"):
        raise InvalidParams("stream: Stream mode is not supported in Message Batches.")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidParams("messages: Field required (a non-empty list)")
    tokens = 3
    system = params.get("system")
    if system is not None:
        tokens += count_tokens(_text(system, "system"))
    last_user = ""
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise InvalidParams(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role == "system":
            raise InvalidParams(
                f'{where}: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.'
            )
        if role not in ROLES:
            raise InvalidParams(f"{where}.role: Input should be 'user' or 'assistant'")
        if index == 0 and role != "user":
            raise InvalidParams('messages: first message must use the "user" role')
        text = _text(message.get("content"), f"{where}.content")
        tokens += 4 + count_tokens(text)
        if role == "user":
            last_user = text
    return model, max_tokens, last_user, tokens


def message(ctx: ResultContext, custom_id: str, params: Any) -> tuple[Json, int, int]:
    """The ``Message`` answering a request (raises ``InvalidParams``): (message, in, out)."""
    model, max_tokens, prompt, input_tokens = check_params(params)
    text, finish = reply_text(prompt, model, max_tokens)
    output_tokens = count_tokens(text)
    body = {
        "id": f"msg_{hex_id(ctx.seed, ctx.batch_seq, custom_id, 'message', length=24)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "max_tokens" if finish == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }
    return body, input_tokens, output_tokens


def errored(kind: str, text: str) -> Json:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": text}}}


def result_of(request: Json, ctx: ResultContext, counts: ResultCounts) -> Json:
    """The result of one request the batch processed, counted into ``counts``."""
    custom_id = str(request["custom_id"])
    if ctx.error_rate > 0 and unit(ctx.seed, "errored", ctx.batch_seq, custom_id) < ctx.error_rate:
        types = ctx.error_types
        kind = types[int(unit(ctx.seed, "error_type", ctx.batch_seq, custom_id) * len(types))]
        counts.errored += 1
        return errored(kind, FAULT_MESSAGES.get(kind, "Error (emulated)."))
    try:
        body, input_tokens, output_tokens = message(ctx, custom_id, request.get("params"))
    except InvalidParams as exc:
        counts.errored += 1
        return errored("invalid_request_error", str(exc))
    counts.succeeded += 1
    counts.input_tokens += input_tokens
    counts.output_tokens += output_tokens
    counts.succeeded_custom_ids.append(custom_id)
    return {"type": "succeeded", "message": body}


def finished_by(ctx: ResultContext, custom_id: str) -> float:
    """When (as a fraction of the processing time) this request finishes."""
    return unit(ctx.seed, "finish", ctx.batch_seq, custom_id)


def run_results_pass(
    requests_path: Path, out_path: Path, ctx: ResultContext, done_before: float, rest: str
) -> ResultCounts:
    """Stream the batch's stored requests once and write its results to ``out_path``: the
    requests that finished before ``done_before`` (a fraction of the processing time; >= 1:
    all) get their result, the others ``rest`` (``canceled`` or ``expired``). Results are
    shuffled (Anthropic guarantees no order). Runs in a step worker or a thread."""
    counts = ResultCounts()
    with (
        requests_path.open("rb", buffering=1 << 20) as source,
        out_path.open("wb", buffering=1 << 20) as out,
    ):
        writer = ShuffledWriter(out, random.Random(digest(ctx.seed, ctx.batch_seq, "results")))
        for raw in source:
            if not raw.strip():
                continue
            request = orjson.loads(raw)
            custom_id = str(request["custom_id"])
            if done_before < 1.0 and finished_by(ctx, custom_id) >= done_before:
                setattr(counts, rest, getattr(counts, rest) + 1)
                result: Json = {"type": rest}
            else:
                result = result_of(request, ctx, counts)
            writer.write({"custom_id": custom_id, "result": result})
        writer.flush()
    return counts
