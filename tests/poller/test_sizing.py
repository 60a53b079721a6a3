"""sizing.py: the rule that keeps every message the poller publishes within its topic's limit
(pure: no Kafka; the emissions from in-memory files)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from batchpipe.services.poller.results import Emission, emissions
from batchpipe.services.poller.sizing import (
    MessageLimits,
    record_bytes,
    result_too_large,
    retry_too_large,
)
from batchpipe.services.poller.status import PollerMetrics
from batchpipe.shared.contracts import (
    RESULT_TOO_LARGE,
    RETRY_TOO_LARGE,
    ResultError,
    ResultMessage,
    ResultRef,
    ResultResponse,
    ResultUsage,
    decode,
    encode,
    key_bytes,
)
from batchpipe.shared.providers.base import BatchOutcome, Progress
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import MAX_REQUEST_SIZE

from .helpers import MemoryProvider, http_error_line, ok_line, record, request_line

LIMIT = 16 * 1024


def big_ok_line(custom_id: str, size: int) -> dict[str, Any]:
    line = ok_line(custom_id)
    line["response"]["body"]["choices"] = [{"message": {"content": "x" * size}}]
    return line


def message(**overrides: Any) -> ResultMessage:
    values: dict[str, Any] = {
        "custom_id": "big",
        "status": "succeeded",
        "batch_id": "batch_1",
        "provider": "openai",
        "response": ResultResponse(status_code=200, body={"content": "x" * 50_000}),
        "attempts": 1,
        "model": "gpt-4o-mini",
        "usage": ResultUsage(input_tokens=5, output_tokens=12_500, total_tokens=12_505),
        "submitted_at": 10,
        "completed_at": 20,
    }
    return ResultMessage(**(values | overrides))


@pytest.mark.parametrize("value_size", [0, 1, 127, 128, 16_000, 70_000, 3_000_000])
@pytest.mark.parametrize("headers", [[], [("batchpipe-attempt", b"2")]])
def test_record_bytes_bounds_the_record_batch_the_broker_sizes(
    value_size: int, headers: list[tuple[str, bytes]]
) -> None:
    key, value = b"req-123", b"v" * value_size
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=1,
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
        batch_size=2**31 - 1,
    )
    builder.append(0, timestamp=None, key=key, value=value, headers=headers)
    actual = len(builder.build())
    assert actual <= record_bytes(key, value, headers) <= actual + 21


def test_default_limits_are_the_topics() -> None:
    assert MessageLimits() == MessageLimits(results=1024 * 1024, requests=MAX_REQUEST_SIZE)
    settings = Settings(results_max_message_bytes=65_536)
    assert MessageLimits.from_settings(settings).results == 65_536
    with pytest.raises(ValueError, match="results_max_message_bytes"):
        Settings(results_max_message_bytes=1000)


def test_a_result_too_large_keeps_status_and_usage_and_names_where_its_body_is() -> None:
    original = message()
    value = encode(original)
    size = record_bytes(key_bytes("big"), value, [])
    stub = result_too_large(value, size, LIMIT)
    assert stub.status == "succeeded"  # it ran (and was billed): not to be submitted again
    assert stub.response == ResultResponse(status_code=200, body=None)
    assert stub.usage == original.usage and stub.attempts == 1 and stub.model == "gpt-4o-mini"
    assert stub.error is not None and stub.error.code == RESULT_TOO_LARGE == "result_too_large"
    assert f"{size:,} bytes" in stub.error.message and f"{LIMIT:,} bytes" in stub.error.message
    assert "batchpipe results fetch batch_1 big --provider openai" in stub.error.message
    body_bytes = len(orjson.dumps(original.response.body))  # type: ignore[union-attr]
    assert stub.body_ref == ResultRef(
        provider="openai", batch_id="batch_1", custom_id="big", body_bytes=body_bytes
    )
    encoded = encode(stub)
    assert record_bytes(key_bytes("big"), encoded, []) < 2048 < LIMIT
    assert decode(ResultMessage, encoded) == stub
    assert orjson.loads(encoded)["body_ref"]["custom_id"] == "big"


def test_a_failed_result_too_large_keeps_the_providers_error_in_the_message() -> None:
    failed = message(
        status="failed",
        response=ResultResponse(status_code=400, body={"error": {"message": "y" * 40_000}}),
        error=ResultError(code="invalid_request", message="bad " + "y" * 5000),
        usage=None,
    )
    value = encode(failed)
    stub = result_too_large(value, record_bytes(b"big", value, []), LIMIT)
    assert stub.status == "failed" and stub.response is not None
    assert stub.response.status_code == 400 and stub.response.body is None
    assert stub.error is not None and stub.error.code == RESULT_TOO_LARGE
    assert "The provider's error: invalid_request: bad yyy" in stub.error.message
    assert len(stub.error.message) < 2000


def test_a_result_too_large_fits_even_with_an_absurd_model_name() -> None:
    value = encode(message(model="m" * 20_000))
    stub = result_too_large(value, record_bytes(b"big", value, []), LIMIT)
    assert record_bytes(b"big", encode(stub), []) <= LIMIT
    assert stub.model == "m" * 256


def test_results_without_a_body_ref_are_serialised_as_before() -> None:
    encoded = orjson.loads(encode(message()))
    assert "body_ref" not in encoded
    assert list(encoded) == [
        "custom_id",
        "status",
        "batch_id",
        "provider",
        "response",
        "error",
        "attempts",
        "model",
        "usage",
        "submitted_at",
        "completed_at",
        "endpoint",
        "api_key",
    ]
    old = {k: v for k, v in encoded.items()}  # a message written before the field existed
    assert decode(ResultMessage, orjson.dumps(old)).body_ref is None


def test_retry_too_large_says_why_and_what_was_retried() -> None:
    error = retry_too_large(ResultError(code="server_error", message="boom"), 5_000_000, 4_194_304)
    assert error.code == RETRY_TOO_LARGE == "retry_too_large"
    assert "server_error: boom" in error.message
    assert "5,000,000 bytes" in error.message and "4,194,304 bytes" in error.message


async def collect(
    files: dict[str, list[dict[str, Any]]], limits: MessageLimits | None, **kw: Any
) -> list[Emission]:
    provider = MemoryProvider(files)
    batch = kw.pop("batch", record())
    outcome = kw.pop("outcome", BatchOutcome("completed", "out"))
    return [
        e async for e in emissions(batch, outcome, provider, max_attempts=3, now=1, limits=limits)
    ]


async def test_one_oversized_result_among_normal_ones_is_replaced_one_for_one() -> None:
    files = {
        "out": [ok_line("a"), big_ok_line("big", 40_000), ok_line("c")],
        "file-in": [],
    }
    unlimited = await collect(files, None)
    limited = await collect(files, MessageLimits(results=LIMIT))
    assert [e.custom_id for e in limited] == ["a", "big", "c"]  # same order, same count
    assert limited[0] == unlimited[0] and limited[2] == unlimited[2]  # the others untouched
    big = limited[1]
    assert big.kind == "result" and big.oversized == RESULT_TOO_LARGE
    assert big.status == "succeeded" and big.output_tokens == 7  # usage kept
    assert record_bytes(big.key, big.value, big.headers) <= LIMIT
    result = decode(ResultMessage, big.value)
    assert result.error is not None and result.error.code == RESULT_TOO_LARGE
    assert result.body_ref is not None and result.body_ref.custom_id == "big"
    assert all(e.oversized is None for e in unlimited)
    assert len(unlimited[1].value) > LIMIT


async def test_a_result_exactly_at_the_limit_is_kept() -> None:
    files = {"out": [big_ok_line("big", 20_000)], "file-in": []}
    [whole] = await collect(files, None)
    exact = record_bytes(whole.key, whole.value, whole.headers)
    [kept] = await collect(files, MessageLimits(results=exact))
    assert kept == whole
    [cut] = await collect(files, MessageLimits(results=exact - 1))
    assert cut.oversized == RESULT_TOO_LARGE


async def test_a_retry_too_large_for_requests_becomes_its_terminal_result() -> None:
    big_line = request_line("b", "z" * 30_000)
    files = {
        "out": [ok_line("a")],
        "err": [http_error_line("b", 500), http_error_line("c", 503)],
        "file-in": [request_line("a"), big_line, request_line("c")],
    }
    out = await collect(
        files,
        MessageLimits(results=LIMIT, requests=LIMIT),
        batch=record(attempts={"b": 1}),
        outcome=BatchOutcome("completed", "out", "err"),
    )
    assert [(e.custom_id, e.kind, e.status) for e in out] == [
        ("a", "result", "succeeded"),
        ("b", "result", "failed"),
        ("c", "retry", "retry"),
    ]
    failed = decode(ResultMessage, out[1].value)
    assert out[1].oversized == RETRY_TOO_LARGE
    assert failed.error is not None and failed.error.code == RETRY_TOO_LARGE
    assert "server_error" in failed.error.message
    assert failed.attempts == 2 and failed.batch_id == "batch_1"


async def test_a_missing_request_whose_retry_is_too_large_gets_its_terminal_result() -> None:
    files = {"out": [ok_line("a")], "file-in": [request_line("a"), request_line("m", "z" * 30_000)]}
    out = await collect(files, MessageLimits(requests=LIMIT), batch=record(request_count=2))
    assert [(e.custom_id, e.status, e.oversized) for e in out] == [
        ("a", "succeeded", None),
        ("m", "failed", RETRY_TOO_LARGE),
    ]
    error = decode(ResultMessage, out[1].value).error
    assert error is not None and "missing_result" in error.message


def test_metrics_count_results_changed_by_the_rule() -> None:
    metrics = PollerMetrics(list)
    chunk = [
        Emission("result", "a", b"{}", [], "succeeded"),
        Emission("result", "b", b"{}", [], "succeeded", oversized=RESULT_TOO_LARGE),
        Emission("result", "c", b"{}", [], "failed", oversized=RETRY_TOO_LARGE),
    ]
    metrics.count_chunk("gpt-4o-mini", chunk)
    sample = metrics.registry.get_sample_value
    assert sample("poller_results_too_large_total", {"code": RESULT_TOO_LARGE}) == 1
    assert sample("poller_results_too_large_total", {"code": RETRY_TOO_LARGE}) == 1
    assert sample("poller_results_total", {"status": "succeeded"}) == 2


class RetrievingMemoryProvider(MemoryProvider):
    def __init__(
        self, files: dict[str, list[dict[str, Any]]], outcome: BatchOutcome | None
    ) -> None:
        super().__init__(files)
        self.outcome = outcome

    async def retrieve(self, batch_id: str) -> Progress:
        status = self.outcome.status if self.outcome else "in_progress"
        return Progress(status=status, outcome=self.outcome)


async def test_result_of_returns_the_line_the_poller_published_from() -> None:
    big = big_ok_line("big", 40_000)
    later = ok_line("big", prompt=99)  # a second line for the id: the first one counts
    files = {"out": [ok_line("a"), big], "err": [later, http_error_line("e", 400)]}
    provider = RetrievingMemoryProvider(files, BatchOutcome("completed", "out", "err"))
    line = await provider.result_of("batch_1", "big")
    assert line == big
    assert await provider.result_of("batch_1", "e") == http_error_line("e", 400)
    assert await provider.result_of("batch_1", "nope") is None
    ongoing = RetrievingMemoryProvider(files, None)
    assert await ongoing.result_of("batch_1", "big") is None
