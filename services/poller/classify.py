"""Turn one request's outcome in a finished batch into its terminal result or a retry.

Pure: no I/O, and the same for every provider. Inputs are one result line in the common shape
the provider layer gives (``shared/providers/base.py``: ``{"custom_id", "response":
{"status_code", "body"}}`` or ``{"custom_id", "error": {"code", "message"}}``), or the fact
that the request appears in no result line, the ``BatchRecord`` and what the provider said
about the batch (``BatchOutcome``). The decision is either a ``ResultMessage`` (terminal) or
a ``Retry`` (re-publish the original request line to ``requests`` with ``batchpipe-attempt``
+ 1).

Rules:

- a response with a 2xx status → ``succeeded`` (with ``usage`` from the response body);
- retryable: HTTP 429 or 5xx, ``batch_expired``, a batch ``failed`` at validation with
  ``token_limit_exceeded`` (and a request missing from a ``completed`` batch's files) → a
  ``Retry`` while ``attempts < MAX_ATTEMPTS``, else a terminal ``failed`` (``expired`` for
  ``batch_expired``) carrying the last error;
- permanent: other 4xx, validation errors → ``failed`` with the provider's error;
- a request that did not finish in a ``cancelled`` batch → ``cancelled``.

In a batch that ``failed`` validation with errors naming input lines, the named lines fail
permanently and the other (innocent) lines are retried; without line numbers every line fails
with the batch's first error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchpipe.shared.contracts import (
    BatchRecord,
    ResultError,
    ResultMessage,
    ResultResponse,
    ResultStatus,
    ResultUsage,
)
from batchpipe.shared.providers.base import BatchErrorInfo, BatchOutcome
from batchpipe.shared.usage import normalize_usage


@dataclass(frozen=True, slots=True)
class Retry:
    """Re-publish the request's original line with ``batchpipe-attempt: attempt``."""

    custom_id: str
    attempt: int
    error: ResultError


Decision = ResultMessage | Retry


def _is_retryable_http(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def error_of_body(status_code: int, body: Any) -> ResultError:
    """The error object of a non-2xx response body (``{"error": {...}}``: OpenAI and
    Anthropic both nest it there, with a ``code`` or a ``type``)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        code = error.get("code") or error.get("type") or f"http_{status_code}"
        message = error.get("message") or ""
        return ResultError(code=str(code), message=str(message))
    return ResultError(code=f"http_{status_code}", message=f"HTTP {status_code}")


class Classifier:
    """Decisions for the requests of one finished batch."""

    def __init__(
        self, batch: BatchRecord, outcome: BatchOutcome, *, max_attempts: int, now: int
    ) -> None:
        self.batch = batch
        self.outcome = outcome
        self.max_attempts = max_attempts
        self.completed_at = outcome.finished_at or now
        self._line_errors: dict[int, BatchErrorInfo] = {
            e.line: e for e in outcome.errors if e.line is not None
        }
        self._token_limit = next(
            (e for e in outcome.errors if e.code == "token_limit_exceeded"), None
        )

    def _result(
        self,
        custom_id: str,
        status: ResultStatus,
        *,
        response: ResultResponse | None = None,
        error: ResultError | None = None,
        usage: Any = None,
    ) -> ResultMessage:
        normalized = normalize_usage(usage)
        return ResultMessage(
            custom_id=custom_id,
            status=status,
            batch_id=self.batch.batch_id,
            provider=self.batch.provider,
            response=response,
            error=error,
            attempts=self.batch.attempt_of(custom_id) + 1,
            model=self.batch.model,
            usage=ResultUsage(**normalized) if normalized else None,
            submitted_at=self.batch.submitted_at,
            completed_at=self.completed_at,
            endpoint=self.batch.endpoint,
            api_key=self.batch.api_key,
        )

    def _retry_or(
        self,
        custom_id: str,
        error: ResultError,
        *,
        terminal: ResultStatus = "failed",
        response: ResultResponse | None = None,
    ) -> Decision:
        attempt = self.batch.attempt_of(custom_id)
        if attempt + 1 < self.max_attempts:
            return Retry(custom_id=custom_id, attempt=attempt + 1, error=error)
        return self._result(custom_id, terminal, response=response, error=error)

    def succeeded_json(
        self, custom_id: str, status_code: int, body: dict[str, Any], usage: Any
    ) -> dict[str, Any]:
        """The JSON form of a ``succeeded`` ``ResultMessage``, built without pydantic: the hot
        path for 50,000-line files (equality with ``encode(ResultMessage(...))`` is tested)."""
        return {
            "custom_id": custom_id,
            "status": "succeeded",
            "batch_id": self.batch.batch_id,
            "provider": self.batch.provider,
            "response": {"status_code": status_code, "body": body},
            "error": None,
            "attempts": self.batch.attempts.get(custom_id, 0) + 1,
            "model": self.batch.model,
            "usage": normalize_usage(usage),
            "submitted_at": self.batch.submitted_at,
            "completed_at": self.completed_at,
            "endpoint": self.batch.endpoint,
            "api_key": self.batch.api_key,
        }

    def unretryable(self, retry: Retry, error: ResultError) -> ResultMessage:
        """The terminal ``failed`` result of a request whose ``retry`` cannot be published."""
        return self._result(retry.custom_id, "failed", error=error)

    def line(self, line: Mapping[str, Any]) -> Decision:
        """Decide for one line of the output or error file (``custom_id`` must be a str)."""
        custom_id = str(line["custom_id"])
        response = line.get("response")
        if isinstance(response, Mapping) and isinstance(response.get("status_code"), int):
            status_code: int = response["status_code"]
            body = response.get("body")
            body_dict = dict(body) if isinstance(body, Mapping) else None
            result_response = ResultResponse(status_code=status_code, body=body_dict)
            if 200 <= status_code < 300:
                usage = body_dict.get("usage") if body_dict else None
                return self._result(custom_id, "succeeded", response=result_response, usage=usage)
            error = error_of_body(status_code, body_dict)
            if _is_retryable_http(status_code):
                return self._retry_or(custom_id, error, response=result_response)
            return self._result(custom_id, "failed", response=result_response, error=error)
        raw_error = line.get("error")
        if isinstance(raw_error, Mapping):
            error = ResultError(
                code=str(raw_error.get("code") or "unknown_error"),
                message=str(raw_error.get("message") or ""),
            )
        else:
            error = ResultError(code="malformed_result", message="line has no response or error")
        if error.code == "batch_expired":
            return self._retry_or(custom_id, error, terminal="expired")
        if error.code == "batch_cancelled":
            return self._result(custom_id, "cancelled", error=error)
        return self._result(custom_id, "failed", error=error)

    def missing(self, custom_id: str, line_number: int) -> Decision:
        """Decide for a request found in neither file (``line_number``: 1-based, input file)."""
        status = self.outcome.status
        if status == "cancelled":
            return self._result(
                custom_id,
                "cancelled",
                error=ResultError(code="batch_cancelled", message="The batch was cancelled."),
            )
        if status == "expired":
            error = ResultError(
                code="batch_expired",
                message="This request could not be executed before the completion window expired.",
            )
            return self._retry_or(custom_id, error, terminal="expired")
        if status == "failed":
            return self._failed_batch(custom_id, line_number)
        # A completed batch should list every request; one that is missing is retried.
        error = ResultError(code="missing_result", message="The batch returned no result line.")
        return self._retry_or(custom_id, error)

    def _failed_batch(self, custom_id: str, line_number: int) -> Decision:
        if self._token_limit is not None:
            error = ResultError(code=self._token_limit.code, message=self._token_limit.message)
            return self._retry_or(custom_id, error)
        own = self._line_errors.get(line_number)
        if own is not None:
            return self._result(
                custom_id, "failed", error=ResultError(code=own.code, message=own.message)
            )
        if self._line_errors:
            # Failed because of other lines: this request is fine, submit it again.
            error = ResultError(
                code="batch_failed", message="The batch failed validation on other lines."
            )
            return self._retry_or(custom_id, error)
        first = self.outcome.errors[0] if self.outcome.errors else None
        error = ResultError(
            code=first.code if first else "batch_failed",
            message=first.message if first else "The batch failed.",
        )
        return self._result(custom_id, "failed", error=error)
