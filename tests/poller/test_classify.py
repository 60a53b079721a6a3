"""classify.py: every kind of line and batch ending → one terminal result or a retry."""

from __future__ import annotations

from batchpipe.services.poller.classify import Classifier, Retry
from batchpipe.shared.contracts import ResultMessage, ResultUsage
from batchpipe.shared.providers.base import BatchErrorInfo, BatchOutcome

from .helpers import error_line, http_error_line, ok_line, record

NOW = 1_700_000_500


def classifier(
    status: str = "completed", attempts: dict[str, int] | None = None, **kw: object
) -> Classifier:
    outcome = BatchOutcome(status=status, finished_at=1_700_000_400, **kw)  # type: ignore[arg-type]
    return Classifier(record(attempts=attempts), outcome, max_attempts=3, now=NOW)


def test_2xx_succeeds_with_usage_and_bookkeeping() -> None:
    result = classifier().line(ok_line("a", 5, 7))
    assert isinstance(result, ResultMessage)
    assert result.status == "succeeded"
    assert result.usage == ResultUsage(input_tokens=5, output_tokens=7, total_tokens=12)
    assert result.provider == "openai"
    assert result.response is not None and result.response.status_code == 200
    assert (result.batch_id, result.model, result.attempts) == ("batch_1", "gpt-4o-mini", 1)
    assert (result.submitted_at, result.completed_at) == (1_700_000_000, 1_700_000_400)


def test_429_and_5xx_are_retried_until_max_attempts() -> None:
    for status in (429, 500, 503):
        decision = classifier().line(http_error_line("a", status))
        assert isinstance(decision, Retry)
        assert decision == Retry(custom_id="a", attempt=1, error=decision.error)
    second = classifier(attempts={"a": 1}).line(http_error_line("a", 500))
    assert isinstance(second, Retry) and second.attempt == 2
    last = classifier(attempts={"a": 2}).line(http_error_line("a", 500))
    assert isinstance(last, ResultMessage)
    assert last.status == "failed" and last.attempts == 3
    assert last.error is not None and last.error.code == "server_error"
    assert last.response is not None and last.response.status_code == 500


def test_other_4xx_fail_permanently_with_openais_error() -> None:
    result = classifier().line(http_error_line("a", 400, code=None))
    assert isinstance(result, ResultMessage)
    assert result.status == "failed" and result.attempts == 1
    assert result.error is not None and (result.error.code, result.error.message) == (
        "t",
        "status 400",
    )


def test_expired_lines_retry_then_end_expired() -> None:
    assert isinstance(classifier("expired").line(error_line("a", "batch_expired")), Retry)
    result = classifier("expired", attempts={"a": 2}).line(error_line("a", "batch_expired"))
    assert isinstance(result, ResultMessage) and result.status == "expired"
    missing = classifier("expired").missing("a", 1)
    assert isinstance(missing, Retry) and missing.error.code == "batch_expired"


def test_cancelled_batch_cancels_unfinished_lines() -> None:
    result = classifier("cancelled").missing("a", 1)
    assert isinstance(result, ResultMessage) and result.status == "cancelled"
    line = classifier("cancelled").line(error_line("b", "batch_cancelled"))
    assert isinstance(line, ResultMessage) and line.status == "cancelled"


def test_failed_batch_token_limit_is_retried() -> None:
    c = classifier("failed", errors=(BatchErrorInfo("token_limit_exceeded", "too many"),))
    decision = c.missing("a", 1)
    assert isinstance(decision, Retry) and decision.error.code == "token_limit_exceeded"


def test_failed_validation_fails_named_lines_and_retries_innocent_ones() -> None:
    c = classifier("failed", errors=(BatchErrorInfo("invalid_request", "bad model", line=2),))
    bad = c.missing("b", 2)
    assert isinstance(bad, ResultMessage) and bad.status == "failed"
    assert bad.error is not None and bad.error.code == "invalid_request"
    assert isinstance(c.missing("a", 1), Retry)


def test_failed_batch_without_line_numbers_fails_every_line() -> None:
    c = classifier("failed", errors=(BatchErrorInfo("empty_file", "The input file is empty."),))
    result = c.missing("a", 1)
    assert isinstance(result, ResultMessage) and result.status == "failed"
    assert result.error is not None and result.error.code == "empty_file"
