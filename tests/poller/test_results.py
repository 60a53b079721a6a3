"""results.py: the deterministic emission sequence of a finished batch, from in-memory files."""

from __future__ import annotations

import orjson

from batchpipe.services.poller.results import Emission, emissions
from batchpipe.shared.contracts import ATTEMPT_HEADER, ResultMessage, decode, encode
from batchpipe.shared.providers.base import BatchOutcome

from .helpers import MemoryProvider, error_line, http_error_line, ok_line, record, request_line


async def collect(batch, outcome, files) -> tuple[list[Emission], list[str]]:  # type: ignore[no-untyped-def]
    provider = MemoryProvider(files)
    out = [e async for e in emissions(batch, outcome, provider, max_attempts=3, now=1)]
    return out, provider.opened


async def test_completed_batch_reads_only_the_output_file() -> None:
    files = {"out": [ok_line("a"), ok_line("b"), ok_line("c")], "file-in": []}
    out, opened = await collect(record(), BatchOutcome("completed", "out"), files)
    assert [e.custom_id for e in out] == ["a", "b", "c"]
    assert {e.status for e in out} == {"succeeded"} and opened == ["out"]
    assert out[0].input_tokens == 5 and out[0].output_tokens == 7
    assert decode(ResultMessage, out[0].value).custom_id == "a"


async def test_partial_failures_retry_with_original_line_and_header() -> None:
    inputs = [request_line("a", "one"), request_line("b", "two"), request_line("c", "three")]
    files = {
        "out": [ok_line("a")],
        "err": [http_error_line("b", 500), http_error_line("c", 400)],
        "file-in": inputs,
    }
    out, opened = await collect(
        record(attempts={"b": 1}), BatchOutcome("completed", "out", "err"), files
    )
    assert opened == ["out", "err", "file-in"]
    kinds = [(e.custom_id, e.status) for e in out]
    assert kinds == [("a", "succeeded"), ("c", "failed"), ("b", "retry")]
    retry = out[2]
    assert orjson.loads(retry.value) == inputs[1]
    assert retry.headers == [(ATTEMPT_HEADER, b"2")]


async def test_missing_lines_of_an_expired_batch_come_from_the_input_file() -> None:
    files = {
        "out": [ok_line("a")],
        "err": [error_line("b", "batch_expired")],
        "file-in": [request_line("a"), request_line("b"), request_line("c")],
    }
    out, _ = await collect(record(attempts={"c": 2}), BatchOutcome("expired", "out", "err"), files)
    assert [(e.custom_id, e.status) for e in out] == [
        ("a", "succeeded"),
        ("b", "retry"),
        ("c", "expired"),
    ]


async def test_the_sequence_is_deterministic_for_replays() -> None:
    files = {
        "err": [http_error_line("b", 429)],
        "file-in": [request_line("a"), request_line("b")],
    }
    outcome = BatchOutcome("cancelled", None, "err")
    first, _ = await collect(record(request_count=2), outcome, files)
    second, _ = await collect(record(request_count=2), outcome, files)
    assert [(e.custom_id, e.kind) for e in first] == [("a", "result"), ("b", "retry")]
    assert [(e.custom_id, e.kind, e.headers) for e in first] == [
        (e.custom_id, e.kind, e.headers) for e in second
    ]


async def test_fast_succeeded_path_encodes_exactly_like_the_contract() -> None:
    from batchpipe.services.poller.classify import Classifier

    batch = record(attempts={"a": 1})
    outcome = BatchOutcome("completed", "out", finished_at=1_700_000_400)
    out, _ = await collect(batch, outcome, {"out": [ok_line("a", 3, 4)], "file-in": []})
    slow = Classifier(batch, outcome, max_attempts=3, now=1).line(ok_line("a", 3, 4))
    assert isinstance(slow, ResultMessage)
    assert out[0].value == encode(slow)
    assert decode(ResultMessage, out[0].value) == slow
    assert (out[0].input_tokens, out[0].output_tokens) == (3, 4)
