"""The batch's API key name reaches every result it gives, both ways a result is built, and
every retry it re-publishes (so the next batch is attributed to the same key)."""

from __future__ import annotations

import orjson

from batchpipe.services.poller.results import emissions
from batchpipe.shared.contracts import ATTEMPT_HEADER, KEY_HEADER, ResultMessage, decode
from batchpipe.shared.providers.base import BatchOutcome

from .helpers import MemoryProvider, http_error_line, ok_line, record, request_line


async def test_results_and_retries_carry_the_key_name() -> None:
    batch = record(request_count=3).model_copy(update={"api_key": "team-a"})
    files = {
        "out": [ok_line("a")],
        "err": [http_error_line("b", 500), http_error_line("c", 400)],
        "file-in": [request_line("a"), request_line("b"), request_line("c")],
    }
    provider = MemoryProvider(files)
    outcome = BatchOutcome("completed", "out", "err")
    out = [e async for e in emissions(batch, outcome, provider, max_attempts=3, now=1)]
    results = {e.custom_id: decode(ResultMessage, e.value) for e in out if e.kind == "result"}
    assert {cid: r.api_key for cid, r in results.items()} == {"a": "team-a", "c": "team-a"}
    assert {r.endpoint for r in results.values()} == {batch.endpoint}
    [retry] = [e for e in out if e.kind == "retry"]
    assert retry.headers == [(ATTEMPT_HEADER, b"1"), (KEY_HEADER, b"team-a")]


async def test_an_unattributed_batch_gives_unattributed_results_and_plain_retries() -> None:
    files = {"out": [ok_line("a")], "err": [http_error_line("b", 503)], "file-in": []}
    files["file-in"] = [request_line("a"), request_line("b")]
    provider = MemoryProvider(files)
    out = [
        e
        async for e in emissions(
            record(request_count=2),
            BatchOutcome("completed", "out", "err"),
            provider,
            max_attempts=3,
            now=1,
        )
    ]
    assert orjson.loads(out[0].value)["api_key"] is None
    assert out[1].headers == [(ATTEMPT_HEADER, b"1")]
