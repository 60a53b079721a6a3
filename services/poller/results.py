"""Read a finished batch back and produce the ordered messages it owes Kafka.

``emissions()`` reads the batch's result lines through its provider (``BatchProvider.results``:
streamed, parsed, in the common shape; a file is never held in memory) and yields one
``Emission`` per request: a result for ``results`` or the original request line for
``requests`` (a retry). Requests with no result line (failed, expired or cancelled batches)
and retried requests are found by streaming the batch's request lines afterwards
(``BatchProvider.requests``); only the set of custom_ids seen (at most 100,000 short strings)
is kept.

Every emission is sized against its topic's limit (``sizing.py``): a result too large for
``results`` goes out without its body (``result_too_large``), a retry too large for
``requests`` becomes the request's terminal ``retry_too_large`` result, one for one.

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
from batchpipe.services.poller.sizing import (
    MessageLimits,
    record_bytes,
    result_too_large,
    retry_too_large,
)
from batchpipe.shared.contracts import (
    RESULT_TOO_LARGE,
    RETRY_TOO_LARGE,
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
    oversized: str | None = None  # result_too_large / retry_too_large: the sizing rule applied

    @property
    def key(self) -> bytes:
        return key_bytes(self.custom_id)


def result_emission(message: ResultMessage, oversized: str | None = None) -> Emission:
    usage = message.usage
    return Emission(
        kind="result",
        custom_id=message.custom_id,
        value=encode(message),
        headers=[],
        status=message.status,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        oversized=oversized,
        cached_tokens=(usage.cached_tokens or 0) if usage else 0,
    )


def fitted_result(emission: Emission, limit: int) -> Emission:
    """``emission`` (a result) if it fits in ``limit``, else its ``result_too_large`` form."""
    # far below the limit (the common case): a key is at most 4 bytes a character, the
    # record's framing ~100 bytes
    if len(emission.value) + 4 * len(emission.custom_id) + 1024 < limit:
        return emission
    size = record_bytes(emission.key, emission.value, emission.headers)
    if size <= limit:
        return emission
    stub = result_too_large(emission.value, size, limit)
    log.warning(
        "result.too_large",
        batch_id=stub.batch_id,
        custom_id=stub.custom_id,
        provider=stub.provider,
        status=stub.status,
        size_bytes=size,
        limit_bytes=limit,
    )
    return result_emission(stub, RESULT_TOO_LARGE)


def fitted_retry(
    classifier: Classifier, retry: Retry, line: bytes, limit: int, api_key: str | None = None
) -> Emission:
    """The retry of ``line`` if it fits in ``limit``, else the request's terminal
    ``retry_too_large`` result."""
    emission = retry_emission(retry, line, api_key)
    if len(line) + 4 * len(retry.custom_id) + 1024 < limit:
        return emission
    size = record_bytes(emission.key, emission.value, emission.headers)
    if size <= limit:
        return emission
    error = retry_too_large(retry.error, size, limit)
    log.warning(
        "retry.too_large",
        batch_id=classifier.batch.batch_id,
        custom_id=retry.custom_id,
        size_bytes=size,
        limit_bytes=limit,
    )
    return result_emission(classifier.unretryable(retry, error), RETRY_TOO_LARGE)


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
    limits: MessageLimits | None = None,
) -> AsyncIterator[Emission]:
    """Every message the finished ``batch`` owes, in a deterministic order, each fitting in
    its topic's limit (``limits``; default ``MessageLimits()``)."""
    limits = limits or MessageLimits()
    results_limit, requests_limit = limits.results, limits.requests
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
                yield fitted_result(fast, results_limit)
                continue
            decision = classifier.line(line)
            if isinstance(decision, Retry):
                retries[custom_id] = decision
            else:
                yield fitted_result(result_emission(decision), results_limit)
    if not retries and len(seen) >= batch.request_count:
        return
    # Retried requests need their original line; missing requests need their custom_id.
    async with provider.requests(batch) as requests:
        async for line_number, custom_id, raw in requests:
            retry = retries.pop(custom_id, None)
            if retry is not None:
                yield fitted_retry(classifier, retry, raw, requests_limit, batch.api_key)
                continue
            if custom_id in seen:
                continue
            seen.add(custom_id)
            decision = classifier.missing(custom_id, line_number)
            if isinstance(decision, Retry):
                yield fitted_retry(classifier, decision, raw, requests_limit, batch.api_key)
            else:
                yield fitted_result(result_emission(decision), results_limit)
    for custom_id in retries:  # a result line for a request not in the input: impossible
        log.error("retry.not_in_input_file", batch_id=batch.batch_id, custom_id=custom_id)
