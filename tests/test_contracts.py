"""The message contracts: validation, round trips, size bounds, schemas (no Kafka)."""

from __future__ import annotations

import base64

import orjson
import pytest
from pydantic import ValidationError

from batchpipe.shared.contracts import (
    ATTEMPT_HEADER,
    DEAD_LETTER_MAX_VALUE_BYTES,
    BatchRecord,
    DeadLetter,
    RequestLine,
    ResultMessage,
    attempt_from_headers,
    attempt_headers,
    decode,
    encode,
    is_valid_custom_id,
    json_schema,
)

LINE = {
    "custom_id": "req-1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
}


def test_a_request_line_is_exactly_an_openai_batch_line() -> None:
    line = decode(RequestLine, orjson.dumps(LINE))
    assert line.model == "gpt-4o-mini"
    assert orjson.loads(encode(line)) == LINE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"url": "/v1/images/generations"}, "url"),
        ({"method": "GET"}, "method"),
        ({"custom_id": ""}, "custom_id"),
        ({"custom_id": "x" * 65}, "custom_id"),
        ({"custom_id": "has space"}, "custom_id"),
        ({"body": {"messages": []}}, "model"),
        ({"body": {"model": "m", "stream": True}}, "stream"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_request_lines_are_refused(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        RequestLine.model_validate({**LINE, **change})
    assert reason in str(err.value)


def test_decode_refuses_non_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode(RequestLine, b"\xff\x00garbage")


def test_custom_id_rule() -> None:
    assert is_valid_custom_id("a.b:c-d_e")
    assert not is_valid_custom_id("a/b")


def test_attempt_header_round_trip() -> None:
    assert attempt_from_headers(None) == 0
    assert attempt_from_headers([]) == 0
    assert attempt_headers(0) == []
    assert attempt_from_headers(attempt_headers(2)) == 2
    assert attempt_from_headers([(ATTEMPT_HEADER, b"junk")]) == 0


def test_a_batch_record_of_50000_requests_stays_small() -> None:
    record = BatchRecord(
        batch_id="batch_" + "x" * 24,
        input_file_id="file-" + "y" * 24,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_count=50_000,
        dispatch_id="d" * 36,
        # worst realistic case: 5% of the window are retries with 64-character ids
        attempts={f"{i:064d}": 1 for i in range(2_500)},
        input_bytes=190_000_000,
        window_opened_at=1.5,
        submitted_at=2,
    )
    data = encode(record)
    assert len(data) < 250_000
    assert decode(BatchRecord, data) == record
    assert record.attempt_of(f"{1:064d}") == 1
    assert record.attempt_of("other") == 0


def test_result_round_trip_keeps_nulls() -> None:
    result = ResultMessage(
        custom_id="req-1",
        status="succeeded",
        batch_id="batch_1",
        response={"status_code": 200, "body": {"id": "x"}},
        attempts=1,
        model="gpt-4o-mini",
        usage={"input_tokens": 3, "total_tokens": 3},
        submitted_at=1,
        completed_at=2,
    )
    raw = orjson.loads(encode(result))
    assert raw["error"] is None
    assert raw["provider"] == "openai"
    assert raw["usage"] == {
        "input_tokens": 3,
        "output_tokens": 0,
        "total_tokens": 3,
        "cached_tokens": None,
        "reasoning_tokens": None,
    }
    assert set(raw) == {
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
    }
    assert raw["endpoint"] is None and raw["api_key"] is None  # unknown / unattributed
    assert decode(ResultMessage, encode(result)) == result


def test_dead_letter_keeps_text_and_binary_and_truncates() -> None:
    text = DeadLetter.of(
        source_topic="t",
        partition=1,
        offset=7,
        key=b"k",
        value=b"not json",
        reason="r",
        service="s",
    )
    assert (text.value, text.value_encoding, text.value_truncated) == ("not json", "utf-8", False)
    binary = DeadLetter.of(
        source_topic="t",
        partition=0,
        offset=0,
        key=None,
        value=b"\xff\xfe",
        reason="r",
        service="s",
    )
    assert binary.value_encoding == "base64"
    assert base64.b64decode(binary.value) == b"\xff\xfe"
    big = DeadLetter.of(
        source_topic="t",
        partition=0,
        offset=0,
        key=None,
        value=b"a" * 5_000_000,
        reason="r",
        service="s",
    )
    assert big.value_truncated and big.value_size == 5_000_000
    assert len(encode(big)) < DEAD_LETTER_MAX_VALUE_BYTES + 1024


@pytest.mark.parametrize("topic", ["requests", "batches", "results", "dead-letters"])
def test_each_topic_has_a_json_schema(topic: str) -> None:
    schema = json_schema(topic)
    assert schema["type"] == "object"
    assert schema["title"] == topic
    assert schema["required"]


def test_is_valid_custom_id_agrees_with_the_request_line_schema() -> None:
    """``$`` alone matches before a trailing newline in Python's re; the schema does not."""
    from batchpipe.shared.contracts import is_valid_custom_id

    for value in ["ok-1", "a" * 64, "abc\n", "a" * 65, "", "x y", "é"]:
        line = {
            "custom_id": value,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": []},
        }
        try:
            RequestLine.model_validate(line)
            schema_ok = True
        except ValidationError:
            schema_ok = False
        assert is_valid_custom_id(value) is schema_ok, value
