"""The Anthropic provider's pure parts: result lines in the common shape, and a batch's
status, counts and outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from batchpipe.services.poller.classify import Classifier, Retry
from batchpipe.shared.contracts import BatchRecord, ResultMessage
from batchpipe.shared.providers.anthropic import outcome_of, progress_of, result_line
from batchpipe.shared.providers.base import BatchOutcome

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 3},
}


def record() -> BatchRecord:
    return BatchRecord(
        batch_id="msgbatch_1",
        provider="anthropic",
        input_file_id="x.batch-inputs:0:0:0:d",
        endpoint="/v1/chat/completions",
        model="claude-3-5-haiku",
        request_count=4,
        dispatch_id="d",
        input_bytes=10,
        window_opened_at=1.0,
        submitted_at=2,
    )


def decide(raw: dict[str, Any]) -> ResultMessage | Retry:
    outcome = BatchOutcome("completed", finished_at=3)
    return Classifier(record(), outcome, max_attempts=3, now=4).line(result_line(raw, "mine.1"))


def test_succeeded_keeps_anthropics_message_and_the_users_id() -> None:
    result = decide({"custom_id": "bp_x", "result": {"type": "succeeded", "message": MESSAGE}})
    assert isinstance(result, ResultMessage)
    assert (result.custom_id, result.status, result.provider) == (
        "mine.1",
        "succeeded",
        "anthropic",
    )
    assert result.response is not None and result.response.body == MESSAGE
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cached_tokens) == (8, 3)


def errored(error_type: str) -> dict[str, Any]:
    error = {"type": "error", "error": {"type": error_type, "message": "m"}}
    return {"custom_id": "bp_x", "result": {"type": "errored", "error": error}}


def test_transient_errors_are_retried_and_the_others_fail_with_anthropics_error() -> None:
    for kind in ("overloaded_error", "api_error", "rate_limit_error"):
        assert isinstance(decide(errored(kind)), Retry), kind
    failed = decide(errored("invalid_request_error"))
    assert isinstance(failed, ResultMessage) and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "invalid_request_error"
    assert failed.response is not None and failed.response.status_code == 400


def test_expired_is_retried_and_canceled_is_cancelled() -> None:
    assert isinstance(decide({"custom_id": "x", "result": {"type": "expired"}}), Retry)
    cancelled = decide({"custom_id": "x", "result": {"type": "canceled"}})
    assert isinstance(cancelled, ResultMessage) and cancelled.status == "cancelled"


def batch(status: str, **counts: int) -> Any:
    values = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    return SimpleNamespace(
        id="msgbatch_1",
        processing_status=status,
        request_counts=SimpleNamespace(**(values | counts)),
        cancel_initiated_at=None,
        ended_at=datetime(2026, 1, 1, tzinfo=UTC) if status == "ended" else None,
    )


def test_progress_and_outcome() -> None:
    running = progress_of(batch("in_progress", processing=3, succeeded=1))
    assert running.outcome is None and running.counts == {"total": 4, "completed": 1, "failed": 0}
    ended = outcome_of(batch("ended", succeeded=3, errored=1))
    assert ended is not None and ended.status == "completed" and ended.finished_at == 1767225600
    expired = outcome_of(batch("ended", expired=4))
    assert expired is not None and expired.status == "expired"
    cancelled = batch("ended", canceled=4)
    cancelled.cancel_initiated_at = datetime(2026, 1, 1, tzinfo=UTC)
    assert (outcome_of(cancelled) or BatchOutcome("completed")).status == "cancelled"
