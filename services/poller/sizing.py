"""The sizing rule: every message the poller publishes fits in its topic.

A topic refuses a record batch larger than its ``max.message.bytes``, and one refused record
fails its whole transaction: retried as it is, it would block its batch forever. So each
emission of a finished batch is sized as a record batch of its own (``record_bytes``: the
bound aiokafka's producer checks, batch header included) against its topic's limit
(``MessageLimits``) before it is published:

- a **result** that does not fit ``results`` (``BATCHPIPE_RESULTS_MAX_MESSAGE_BYTES``) is
  published without its response body (``result_too_large``): ``response.body`` null,
  ``error`` ``result_too_large`` (its message gives the size, the limit, the command that
  fetches the body, and the provider's own error if there was one) and ``body_ref`` naming
  where the body is kept (provider, batch id, custom_id). ``status``,
  ``response.status_code`` and ``usage`` stay what the provider said: the request ran and
  was billed, so submitting it again would run (and bill) it twice; the body is fetched
  instead (``batchpipe results fetch``).
- a **retry** whose request line does not fit ``requests`` (``MAX_REQUEST_SIZE``: the
  largest message batchpipe produces, what ingest accepts and below the topic's own limit)
  cannot be re-submitted: the request gets its terminal result instead, ``failed`` with
  ``retry_too_large`` (and the error that made it retryable). Such a line reached its batch
  through a producer with a larger limit than batchpipe's.

Dead letters need no rule: ``DeadLetter`` keeps at most 64 KiB of a value, far below the
dead-letter topic's limit. One emission is replaced by one, so the number and order of a
batch's emissions do not depend on the limits (a replay still skips by position); like
``BATCHPIPE_MAX_ATTEMPTS``, the limits must not change while a batch is half published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from batchpipe.shared.contracts import (
    RESULT_TOO_LARGE,
    RETRY_TOO_LARGE,
    ResultError,
    ResultMessage,
    ResultRef,
)
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import MAX_REQUEST_SIZE

# The provider's own error, as kept in a too-large result's message, is cut to this length.
PROVIDER_ERROR_CHARS: Final = 1000
# A model name longer than this is cut in a too-large result that would not fit otherwise.
MODEL_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """The largest record batch (bytes) each topic the poller writes to accepts."""

    results: int = 1024 * 1024
    requests: int = MAX_REQUEST_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageLimits:
        return cls(results=settings.results_max_message_bytes)


def record_bytes(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """The size of a record batch holding only this record (an upper bound: what the
    producer checks against ``max_request_size`` and the broker against
    ``max.message.bytes``)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    return size


def fetch_command(ref: ResultRef) -> str:
    """The CLI command that prints the body ``ref`` names."""
    return f"batchpipe results fetch {ref.batch_id} {ref.custom_id} --provider {ref.provider}"


def result_too_large(value: bytes, size: int, limit: int) -> ResultMessage:
    """The ``result_too_large`` form of an encoded result (``value``, ``size`` bytes as a
    record batch) that does not fit in ``limit``; it always fits (its body left out, it is a
    few hundred bytes; the minimum limit is 16 KiB)."""
    original = ResultMessage.model_validate(orjson.loads(value))
    response = original.response
    body = response.body if response is not None else None
    ref = ResultRef(
        provider=original.provider,
        batch_id=original.batch_id or "",
        custom_id=original.custom_id,
        body_bytes=len(orjson.dumps(body)) if body is not None else 0,
    )
    message = (
        f"The result is {size:,} bytes as a Kafka message, over the results topic's limit "
        f"of {limit:,} bytes (BATCHPIPE_RESULTS_MAX_MESSAGE_BYTES): response.body "
        f"({ref.body_bytes:,} bytes) is left out and kept at the provider; fetch it with "
        f"`{fetch_command(ref)}`."
    )
    if original.error is not None:
        provider_error = f"{original.error.code}: {original.error.message}"
        message += f" The provider's error: {provider_error[:PROVIDER_ERROR_CHARS]}"
    stub = original.model_copy(
        update={
            "response": response.model_copy(update={"body": None}) if response else None,
            "error": ResultError(code=RESULT_TOO_LARGE, message=message),
            "body_ref": ref,
        }
    )
    if len(orjson.dumps(stub.model_dump(mode="json"))) + 1024 > limit:
        stub = stub.model_copy(update={"model": stub.model[:MODEL_CHARS]})
    return stub


def retry_too_large(last: ResultError, size: int, limit: int) -> ResultError:
    """The error of a request that cannot be retried: its line (``size`` bytes as a record
    batch) does not fit in the requests topic's ``limit``."""
    message = (
        f"The request was to be retried ({last.code}: {last.message})"[:PROVIDER_ERROR_CHARS]
        + f", but its line is {size:,} bytes as a Kafka message, over the {limit:,} bytes a "
        "message of the requests topic may have: it cannot be submitted again."
    )
    return ResultError(code=RETRY_TOO_LARGE, message=message)
