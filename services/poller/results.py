"""Stream a finished batch's files and produce the ordered messages it owes Kafka.

``emissions()`` reads the output file, then the error file, line by line (the SDK's
``with_streaming_response`` + ``iter_lines``: a file is never held in memory), and yields one
``Emission`` per request: a result for ``results`` or the original input line for
``requests`` (a retry). Requests missing from both files (failed, expired or cancelled batches)
and retried requests are found by streaming the input file afterwards; only the set of
custom_ids seen (at most 50,000 short strings) is kept.

The order is a pure function of the (immutable) files, so a replay after a crash yields the same
sequence and the publisher (``publisher.py``) can skip the first N emissions it already
committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from openai import AsyncOpenAI

from batchpipe.services.poller.classify import BatchOutcome, Classifier, Retry
from batchpipe.shared.contracts import (
    BatchRecord,
    ResultMessage,
    attempt_headers,
    encode,
    key_bytes,
)
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

# Opens a file id as an async iterator of its lines (without line ends).
LineOpener = Callable[[str], AbstractAsyncContextManager[AsyncIterator[str]]]


@dataclass(frozen=True, slots=True)
class Emission:
    """One message a finished batch owes: to ``results`` or (a retry) to ``requests``."""

    kind: Literal["result", "retry"]
    custom_id: str
    value: bytes
    headers: list[tuple[str, bytes]]
    status: str  # the result status, or "retry"
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def key(self) -> bytes:
        return key_bytes(self.custom_id)


def openai_line_opener(client: AsyncOpenAI) -> LineOpener:
    """Stream a file's content from the Files API line by line."""

    @contextlib.asynccontextmanager
    async def open_lines(file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        async with client.files.with_streaming_response.content(file_id) as response:
            yield response.iter_lines()

    return open_lines


def _tokens(usage: dict[str, Any] | None) -> tuple[int, int]:
    if not usage:
        return 0, 0
    given = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    taken = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (given if isinstance(given, int) else 0, taken if isinstance(taken, int) else 0)


def result_emission(message: ResultMessage) -> Emission:
    tokens_in, tokens_out = _tokens(message.usage)
    return Emission(
        kind="result",
        custom_id=message.custom_id,
        value=encode(message),
        headers=[],
        status=message.status,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )


def retry_emission(retry: Retry, raw_line: str) -> Emission:
    return Emission(
        kind="retry",
        custom_id=retry.custom_id,
        value=raw_line.encode("utf-8"),
        headers=attempt_headers(retry.attempt),
        status="retry",
    )


def _succeeded(classifier: Classifier, custom_id: str, line: dict[str, Any]) -> Emission | None:
    """A 2xx line's result without pydantic (the common case), or None for the slow path."""
    response = line.get("response")
    if not isinstance(response, dict):
        return None
    status_code = response.get("status_code")
    body = response.get("body")
    if not isinstance(status_code, int) or not 200 <= status_code < 300:
        return None
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    message = classifier.succeeded_json(custom_id, status_code, body, usage)
    tokens_in, tokens_out = _tokens(message["usage"])
    return Emission(
        kind="result",
        custom_id=custom_id,
        value=orjson.dumps(message),
        headers=[],
        status="succeeded",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )


def _parse(raw: str) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("custom_id"), str):
        return None
    return parsed


async def emissions(
    batch: BatchRecord,
    outcome: BatchOutcome,
    open_lines: LineOpener,
    *,
    max_attempts: int,
    now: int,
) -> AsyncIterator[Emission]:
    """Every message the finished ``batch`` owes, in a deterministic order."""
    classifier = Classifier(batch, outcome, max_attempts=max_attempts, now=now)
    seen: set[str] = set()
    retries: dict[str, Retry] = {}
    for file_id in (outcome.output_file_id, outcome.error_file_id):
        if not file_id:
            continue
        async with open_lines(file_id) as lines:
            async for raw in lines:
                if not raw.strip():
                    continue
                line = _parse(raw)
                if line is None:
                    log.warning("result.unreadable_line", batch_id=batch.batch_id, file_id=file_id)
                    continue
                custom_id: str = line["custom_id"]
                if custom_id in seen:
                    continue
                seen.add(custom_id)
                fast = _succeeded(classifier, custom_id, line)
                if fast is not None:
                    yield fast
                    continue
                decision = classifier.line(line)
                if isinstance(decision, Retry):
                    retries[custom_id] = decision
                else:
                    yield result_emission(decision)
    if not retries and len(seen) >= batch.request_count:
        return
    # Retried requests need their original line; missing requests need their custom_id.
    line_number = 0
    async with open_lines(batch.input_file_id) as lines:
        async for raw in lines:
            line_number += 1
            if not raw.strip():
                continue
            request = _parse(raw)
            if request is None:
                log.warning("request.unreadable_input_line", batch_id=batch.batch_id)
                continue
            custom_id = request["custom_id"]
            retry = retries.pop(custom_id, None)
            if retry is not None:
                yield retry_emission(retry, raw)
                continue
            if custom_id in seen:
                continue
            seen.add(custom_id)
            decision = classifier.missing(custom_id, line_number)
            if isinstance(decision, Retry):
                yield retry_emission(decision, raw)
            else:
                yield result_emission(decision)
    for custom_id in retries:  # a result line for a request not in the input file: impossible
        log.error("retry.not_in_input_file", batch_id=batch.batch_id, custom_id=custom_id)
