"""validate.py: which consumed values can go into a batch, and the hot path agrees with the
contract (``RequestLine``) on every one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from batchpipe.services.dispatcher.validate import Invalid, Valid, validate, validate_row
from batchpipe.shared.contracts import RequestLine


def req(**over: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": "a-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(over)
    return line


def test_valid_line_is_reencoded_on_one_line() -> None:
    raw = (
        b'{\n  "custom_id": "a-1", "url": "/v1/embeddings",\n "body": {"model": "e", "input": "x"}}'
    )
    result = validate(raw, 10_000)
    assert isinstance(result, Valid)
    assert b"\n" not in result.line  # one JSONL line (the file writer adds the newline)
    assert orjson.loads(result.line)["method"] == "POST"
    assert (result.endpoint, result.model, result.custom_id) == ("/v1/embeddings", "e", "a-1")


def test_complete_one_line_value_is_kept_byte_for_byte() -> None:
    """What ingest publishes (all four fields, one line) goes into the file as it came: the
    consumed value itself (not re-encoded, not copied); with a newline or without ``method``
    it is re-encoded."""
    raw = b'{"url": "/v1/embeddings", "method": "POST", "custom_id": "a-1", "body": {"model": "e"}}'
    result = validate(raw, 10_000)
    assert isinstance(result, Valid) and result.line is raw
    for value in (raw.replace(b", ", b",\r\n"), raw.replace(b'"method": "POST", ', b"")):
        again = validate(value, 10_000)
        assert isinstance(again, Valid) and again.line != value
        assert b"\n" not in again.line and b"\r" not in again.line
        assert orjson.loads(again.line) == orjson.loads(raw)
    assert validate(raw, len(raw)) == Invalid(
        "oversize",
        f"line of {len(raw) + 1} bytes > the batch limit of {len(raw)} bytes "
        "(BATCHPIPE_BATCH_MAX_BYTES, or the enqueued-token budget)",
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (None, "not_json"),
        (b"[1, 2]", "not_batch_line"),
        (orjson.dumps({"custom_id": "a"}), "not_batch_line"),
        (orjson.dumps(req(extra=1)), "not_batch_line"),
        (orjson.dumps(req(custom_id="has space")), "not_batch_line"),
        (orjson.dumps(req(custom_id="trailing-newline\n")), "not_batch_line"),
        (orjson.dumps(req(method="GET")), "not_batch_line"),
        (orjson.dumps(req(url="/v1/images")), "url_not_allowed"),
        (orjson.dumps(req(body={"model": "m", "stream": True})), "stream"),
        (orjson.dumps(req(body={"messages": []})), "no_model"),
        (orjson.dumps(req(body={"model": ""})), "no_model"),
        (orjson.dumps(req(body={"model": "m", "x": "y" * 5000})), "oversize"),
    ],
)
def test_invalid_lines_have_a_reason(value: bytes | None, reason: str) -> None:
    result = validate(value, 4096)
    assert isinstance(result, Invalid), result
    assert result.reason == reason


@pytest.mark.parametrize("url", ["/v1/completions", "/v1/moderations"])
def test_completions_and_moderations_lines_go_into_batches(url: str) -> None:
    """Every endpoint of the contract is a Batch API endpoint here too: ingest's lines
    (complete, one line) are kept byte for byte, others re-encoded; a line without a model
    is still refused (ingest always adds one)."""
    body = {"model": "m", "prompt" if url == "/v1/completions" else "input": "x"}
    raw = orjson.dumps(req(url=url, body=body))
    result = validate(raw, 10_000)
    assert isinstance(result, Valid) and result.line is raw
    assert (result.endpoint, result.model, result.custom_id) == (url, "m", "a-1")
    assert validate_row(raw, 10_000) == ("a-1", url, "m", raw)
    spaced = orjson.dumps(req(url=url, body=body), option=orjson.OPT_INDENT_2)
    again = validate(spaced, 10_000)
    assert isinstance(again, Valid) and orjson.loads(again.line) == orjson.loads(raw)
    missing = validate(orjson.dumps(req(url=url, body={"input": "x"})), 10_000)
    assert isinstance(missing, Invalid) and missing.reason == "no_model"


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(req()),
        orjson.dumps({k: v for k, v in req().items() if k != "method"}),
        orjson.dumps(req(method="GET")),
        orjson.dumps(req(method=None)),
        orjson.dumps({"custom_id": "a", "url": "/v1/embeddings", "extra": {"model": "m"}}),
        orjson.dumps({"custom_id": "a", "url": "/v1/embeddings", "body": {"model": "m"}, "x": 1}),
        orjson.dumps(req(extra=1, method="POST")),
        orjson.dumps(req(body=[])),
        orjson.dumps(req(body={"model": 5})),
        orjson.dumps(req(body={"model": "m", "stream": "true"})),
        orjson.dumps(req(body={"model": "m", "stream": False})),
        orjson.dumps(req(body={"model": "m", "stream": True}, url="/v1/images")),
        orjson.dumps(req(custom_id=7)),
        orjson.dumps(req(custom_id="x" * 65)),
        orjson.dumps(req(url=5)),
        orjson.dumps(req(url="/v1/responses", custom_id="a:b.c_d-e")),
        orjson.dumps(req(url="/v1/completions", body={"model": "i", "prompt": "x"})),
        orjson.dumps(req(url="/v1/moderations", body={"model": "o", "input": ["x"]})),
        orjson.dumps(req(url="/v1/moderations", body={"input": "x"})),
        b'{"custom_id":"a","url":"/v1/completions","body":{"model":"m","prompt":"x"}}',
        b'{"custom_id":"a","url":"/v1/embeddings","body":{"model":"m"}}',
        b"42",
    ],
)
def test_hot_path_validation_agrees_with_the_contract(value: bytes) -> None:
    """``validate_row`` (the plain-check hot path) gives exactly ``validate``'s answer, and
    accepts exactly what ``RequestLine`` accepts."""
    slow = validate(value, 10_000)
    fast = validate_row(value, 10_000)
    if isinstance(slow, Invalid):
        assert fast == slow
    else:
        assert fast == (slow.custom_id, slow.endpoint, slow.model, slow.line)
    try:
        RequestLine.model_validate_json(value)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == isinstance(slow, Valid)
    if isinstance(slow, Valid):
        assert RequestLine.model_validate_json(slow.line) == RequestLine.model_validate_json(value)
