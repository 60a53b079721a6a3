"""Read a finished batch back and produce the ordered messages it owes Kafka.

``emissions()`` reads the batch's result lines through its provider (``BatchProvider.results``:
streamed, parsed, in the common shape; a file is never held in memory) and yields one
``Emission`` per request: a result for ``results`` or the original request line for
``requests`` (a retry). Requests with no result line (failed, expired or cancelled batches)
and retried requests are found by streaming the batch's request lines afterwards
(``BatchProvider.requests``); only the set of custom_ids seen (at most 100,000 short strings)
is kept.

The order is a pure function of what the provider keeps (immutable once the batch ended), so a
replay after a crash yields the same sequence and the publisher (``publisher.py``) can skip
the first N emissions it already committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from batchpipe.services.poller.classify import Classifier, Retry
from batchpipe.shared.contracts import (
    BatchRecord,
    ResultMessage,
    attempt_headers,
    encode,
    key_bytes,
    key_headers,
)
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import BatchOutcome, BatchProvider

log = get_logger(__name__)


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
    cached_tokens: int = 0

    @property
    def key(self) -> bytes:
        return key_bytes(self.custom_id)


def result_emission(message: ResultMessage) -> Emission:
    usage = message.usage
    return Emission(
        kind="result",
        custom_id=message.custom_id,
        value=encode(message),
        headers=[],
        status=message.status,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cached_tokens=(usage.cached_tokens or 0) if usage else 0,
    )


def retry_emission(retry: Retry, line: bytes, api_key: str | None = None) -> Emission:
    """The request again, with its next attempt and the API key name it came with."""
    return Emission(
        kind="retry",
        custom_id=retry.custom_id,
        value=line,
        headers=attempt_headers(retry.attempt) + key_headers(api_key),
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
    counts = message["usage"] or {}
    return Emission(
        kind="result",
        custom_id=custom_id,
        value=orjson.dumps(message),
        headers=[],
        status="succeeded",
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cached_tokens=counts.get("cached_tokens") or 0,
    )


async def emissions(
    batch: BatchRecord,
    outcome: BatchOutcome,
    provider: BatchProvider,
    *,
    max_attempts: int,
    now: int,
) -> AsyncIterator[Emission]:
    """Every message the finished ``batch`` owes, in a deterministic order."""
    classifier = Classifier(batch, outcome, max_attempts=max_attempts, now=now)
    seen: set[str] = set()
    retries: dict[str, Retry] = {}
    async with provider.results(batch, outcome) as lines:
        async for line in lines:
            if line is None:
                log.warning("result.unreadable_line", batch_id=batch.batch_id)
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
    async with provider.requests(batch) as requests:
        async for line_number, custom_id, raw in requests:
            retry = retries.pop(custom_id, None)
            if retry is not None:
                yield retry_emission(retry, raw, batch.api_key)
                continue
            if custom_id in seen:
                continue
            seen.add(custom_id)
            decision = classifier.missing(custom_id, line_number)
            if isinstance(decision, Retry):
                yield retry_emission(decision, raw, batch.api_key)
            else:
                yield result_emission(decision)
    for custom_id in retries:  # a result line for a request not in the input: impossible
        log.error("retry.not_in_input_file", batch_id=batch.batch_id, custom_id=custom_id)
