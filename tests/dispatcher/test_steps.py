"""Unit tests of validation, the ledger's pure parts, retry timing and the JSONL writer,
plus the faust-streaming behaviour that made the dispatcher manage its own commits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from pydantic import ValidationError

from batchpipe.services.dispatcher.dead_letters import (
    Invalid,
    Valid,
    classify,
    classify_fast,
    dead_letter,
)
from batchpipe.services.dispatcher.jsonl import jsonl_size, write_jsonl
from batchpipe.services.dispatcher.ledger import (
    LedgerEntry,
    LedgerState,
    coverage_of,
    decode_entry,
    dispatch_id_for,
    encode_entry,
    to_ranges,
)
from batchpipe.services.dispatcher.submit import (
    UPLOAD_CHUNK,
    Aborted,
    Submitter,
    _LargeReads,
    _upload,
    backoff,
    retry_after,
)
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


# --- validation ----------------------------------------------------------------------------


def test_valid_line_is_reencoded_on_one_line() -> None:
    raw = (
        b'{\n  "custom_id": "a-1", "url": "/v1/embeddings",\n "body": {"model": "e", "input": "x"}}'
    )
    result = classify(raw, 10_000)
    assert isinstance(result, Valid)
    assert b"\n" not in result.line  # one JSONL line (the file writer adds the newline)
    assert orjson.loads(result.line)["method"] == "POST"
    assert (result.endpoint, result.model, result.custom_id) == ("/v1/embeddings", "e", "a-1")


def test_complete_one_line_value_is_kept_byte_for_byte() -> None:
    """What ingest publishes (all four fields, one line) goes into the file as it came: the
    consumed value itself (not re-encoded, not copied); with a newline or without ``method``
    it is re-encoded."""
    raw = b'{"url": "/v1/embeddings", "method": "POST", "custom_id": "a-1", "body": {"model": "e"}}'
    result = classify(raw, 10_000)
    assert isinstance(result, Valid) and result.line is raw
    for value in (raw.replace(b", ", b",\r\n"), raw.replace(b'"method": "POST", ', b"")):
        again = classify(value, 10_000)
        assert isinstance(again, Valid) and again.line != value
        assert b"\n" not in again.line and b"\r" not in again.line
        assert orjson.loads(again.line) == orjson.loads(raw)
    assert classify(raw, len(raw)) == Invalid(
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
    result = classify(value, 4096)
    assert isinstance(result, Invalid), result
    assert result.reason == reason


def test_dead_letter_keeps_the_raw_value() -> None:
    letter = dead_letter(
        topic="requests",
        partition=2,
        offset=7,
        key=b"k",
        value=b"\xff",
        invalid=Invalid("not_json", "bad"),
    )
    assert letter.reason.startswith("not_json")
    assert (letter.partition, letter.offset, letter.value_encoding) == (2, 7, "base64")
    assert letter.service == "dispatcher"


# --- ledger (pure parts) ---------------------------------------------------------------------


def test_ranges_and_coverage() -> None:
    assert to_ranges([1, 2, 3, 7, 9, 10]) == [1, 3, 7, 7, 9, 10]
    assert to_ranges([5, 6, 7]) == [5, 7] and to_ranges([4]) == [4, 4] and to_ranges([]) == []
    cov = coverage_of([("t", 1, 5), ("t", 0, 2), ("t", 0, 3), ("t", 1, 4)])
    assert cov == {"t:0": [2, 3], "t:1": [4, 5]}


def test_dispatch_id_is_deterministic_and_order_free() -> None:
    def dispatch_id(*positions: tuple[str, int, int]) -> str:
        return dispatch_id_for(coverage_of(positions))

    a = dispatch_id(("t", 0, 1), ("t", 1, 5), ("t", 0, 2))
    b = dispatch_id(("t", 1, 5), ("t", 0, 2), ("t", 0, 1))  # consumed in another order
    others = {
        dispatch_id(("t", 0, 1), ("t", 1, 6), ("t", 0, 2)),  # one other offset
        dispatch_id(("t", 0, 1), ("t", 1, 5)),  # one request less
        dispatch_id(("t", 0, 1), ("t", 2, 5), ("t", 0, 2)),  # another partition
        dispatch_id(("u", 0, 1), ("u", 1, 5), ("u", 0, 2)),  # another topic
        dispatch_id(("t", 0, 1), ("t", 1, 5), ("t", 0, 3)),  # a gap: ranges 1-1, 3-3
    }
    assert a == b and a.startswith("dsp_") and a not in others and len(others) == 5


def entry(dispatch_id: str, positions: list[tuple[str, int, int]], state: str) -> LedgerEntry:
    return LedgerEntry(
        dispatch_id=dispatch_id,
        state=state,
        endpoint="/v1/chat/completions",  # type: ignore[arg-type]
        model="m",
        request_count=len(positions),
        input_bytes=1,
        window_opened_at=0.0,
        coverage=coverage_of(positions),
        planned_at=0.0,
        updated_at=0.0,
    )


def test_ledger_state_covering_transitions_and_tombstones() -> None:
    s = LedgerState()
    e1 = entry("d1", [("t", 0, 0), ("t", 0, 1), ("t", 0, 5)], "planned")
    e2 = entry("d2", [("t", 0, 2), ("t", 0, 3), ("t", 1, 0)], "published")
    s.apply(e1)
    s.apply(e2)
    assert [s.covering(("t", 0), o) for o in range(7)] == ["d1", "d1", "d2", "d2", None, "d1", None]
    assert s.covering(("t", 1), 0) == "d2" and s.covering(("t", 2), 0) is None
    assert [e.dispatch_id for e in s.unfinished([("t", 0)])] == ["d1"]
    assert s.unfinished([("t", 1)]) == []
    s.apply(e1.with_state("abandoned"))  # abandoned: its requests are free again
    assert s.covering(("t", 0), 0) is None and s.unfinished() == []
    s.apply(None, "d2")
    assert s.covering(("t", 0), 2) is None and "d2" not in s.entries
    assert decode_entry(encode_entry(e2)) == e2


def test_ledger_state_covers_any_matches_covering_over_every_range() -> None:
    s = LedgerState()
    s.apply(entry("d1", [("t", 0, 0), ("t", 0, 1), ("t", 0, 5), ("t", 0, 9)], "planned"))
    s.apply(entry("d2", [("t", 0, 2), ("t", 0, 3), ("t", 1, 0)], "published"))
    for tp in [("t", 0), ("t", 1), ("t", 2)]:
        for first in range(-1, 12):
            for last in range(first, 12):
                expected = any(s.covering(tp, o) is not None for o in range(first, last + 1))
                assert s.covers_any(tp, first, last) == expected, (tp, first, last)


# --- retries -------------------------------------------------------------------------------


def status_error(code: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/files")
    response = httpx.Response(code, headers=headers, request=request)
    return openai.APIStatusError("err", response=response, body=None)


def test_retry_after_headers() -> None:
    assert retry_after(status_error(429, {"retry-after-ms": "1500"})) == 1.5
    assert retry_after(status_error(429, {"retry-after": "3"})) == 3.0
    assert retry_after(status_error(500, {})) is None
    assert retry_after(ValueError()) is None
    assert backoff(3, 0.5, 30, 2.0) == 2.0
    assert 2.0 <= backoff(3, 0.5, 30, None) <= 4.0
    assert backoff(50, 0.5, 30, None) <= 30


class FakeFiles:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise status_error(429, {"retry-after-ms": "10"})
        return SimpleNamespace(id="file-1")


class FakeBatches:
    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes
        self.calls = 0

    async def create(self, **_: Any) -> Any:
        outcome = self.outcomes[self.calls]
        self.calls += 1
        if outcome == "lost":  # created, but the answer never arrived
            raise openai.APIConnectionError(request=httpx.Request("POST", "http://x"))
        if outcome == "429":
            raise status_error(429, {})
        return SimpleNamespace(id=f"batch-{self.calls}")


class FakeClient:
    def __init__(self, files: FakeFiles, batches: FakeBatches) -> None:
        self.files = files
        self.batches = batches

    def with_options(self, **_: Any) -> FakeClient:
        return self


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_upload_retries_until_it_succeeds(tmp_path: Path) -> None:
    path = write_jsonl([b"{}"], tmp_path)
    files = FakeFiles(failures=5)
    s = Submitter(FakeClient(files, FakeBatches([])), sleep=no_sleep)  # type: ignore[arg-type]
    assert await s.upload(path) == "file-1"
    assert files.calls == 6


async def test_upload_can_be_aborted(tmp_path: Path) -> None:
    path = write_jsonl([b"{}"], tmp_path)
    s = Submitter(FakeClient(FakeFiles(10), FakeBatches([])), sleep=no_sleep)  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        await s.upload(path, abort=lambda: True)


async def test_create_is_not_repeated_when_lookup_finds_the_batch() -> None:
    batches = FakeBatches(["lost", "ok"])
    s = Submitter(FakeClient(FakeFiles(0), batches), sleep=no_sleep)  # type: ignore[arg-type]
    found = SimpleNamespace(id="batch-from-listing")

    async def lookup() -> Any:
        return found

    batch = await s.create(file_id="f", endpoint="/v1/embeddings", metadata={}, lookup=lookup)
    assert batch is found and batches.calls == 1


async def test_create_retried_when_lookup_finds_nothing_and_never_aborted_after_trying() -> None:
    batches = FakeBatches(["429", "lost", "ok"])
    s = Submitter(FakeClient(FakeFiles(0), batches), sleep=no_sleep)  # type: ignore[arg-type]
    lookups = 0

    async def lookup() -> Any:
        nonlocal lookups
        lookups += 1
        return None

    aborting = False

    def abort() -> bool:
        return aborting

    async def attempt() -> None:
        nonlocal aborting
        aborting = True  # revocation arrives right after the first attempt

    batch = await s.create(
        file_id="f",
        endpoint="/v1/embeddings",
        metadata={},
        lookup=lookup,
        abort=abort,
        on_attempt=attempt,
    )
    assert batch.id == "batch-3" and lookups == 2


def test_write_jsonl(tmp_path: Path) -> None:
    lines = [b'{"a":%d}' % i for i in range(20_000)]  # several joined chunks
    path = write_jsonl(lines, tmp_path)
    assert path.read_bytes() == b"".join(line + b"\n" for line in lines)
    assert path.stat().st_size == jsonl_size(lines)
    assert write_jsonl([], tmp_path).read_bytes() == b""


def test_the_threaded_upload_sends_the_whole_file_in_large_reads(
    tmp_path: Path, emulator: Any
) -> None:
    """The sync upload reads the file 8 MiB at a time (few GIL hand-offs from its thread) and
    the emulator receives every byte, with the right length."""
    lines = [b'{"custom_id":"r%d","pad":"%s"}' % (i, b"x" * (i % 900)) for i in range(40_000)]
    path = write_jsonl(lines, tmp_path)
    assert path.stat().st_size > 2 * UPLOAD_CHUNK
    with _LargeReads(path) as f:
        assert len(f.read(64 * 1024)) == UPLOAD_CHUNK
    client = OpenAI(base_url=str(emulator), api_key="sk-test")
    file_id = _upload(client, path)
    assert client.files.retrieve(file_id).bytes == path.stat().st_size
    assert client.files.content(file_id).read() == path.read_bytes()


# --- why faust acks are off for the requests topic ---------------------------------------------


def faust_new_offset(acked: list[int], committed: int | None) -> int | None:
    """Run faust-streaming's own Consumer._new_offset on a minimal consumer state."""
    from faust.transport.consumer import Consumer

    fake = SimpleNamespace(
        _acked={"tp": list(acked)},
        _gap=defaultdict(_EmptyTree),
        _committed_offset={"tp": committed},
        _acked_index=defaultdict(set),
    )
    result: int | None = Consumer._new_offset(fake, "tp")  # type: ignore[arg-type]
    return result


class _EmptyTree:
    def __bool__(self) -> bool:
        return False


def test_faust_commits_past_an_unacked_offset() -> None:
    """Documented faust-streaming 0.15 behaviour the dispatcher must not rely on: acked
    offsets that are not contiguous with the committed one are still committed."""
    # nothing committed yet for the partition: 0..4 buffered (unacked), 5..9 acked
    assert faust_new_offset(list(range(5, 10)), None) == 10
    # committed = 10 (next to read), offset 10 unacked, 11..12 acked: off by one
    assert faust_new_offset([11, 12], 10) == 13


def test_window_memory_is_close_to_its_jsonl_size() -> None:
    """A window holds each request once, exact-size: the consumed value itself, or its
    re-encoding copied out of orjson's over-allocated buffer (here every other request lacks
    ``method`` and is re-encoded). The values are "consumed" inside the traced region, sliced
    out of a fetch buffer as aiokafka does, and dropped by the consumer once handled."""
    import tracemalloc

    from batchpipe.services.dispatcher.window import Windows

    encoded = []
    for i in range(5000):
        line = req(custom_id=f"m-{i}", body={"model": "m", "input": "x" * 900})
        if i % 2:
            del line["method"]
        encoded.append(orjson.dumps(line))
    fetched = b"".join(encoded)
    bounds = []
    start = 0
    for value in encoded:
        bounds.append((start, start + len(value)))
        start += len(value)
    del encoded
    tracemalloc.start()
    try:
        windows = Windows(max_requests=50_000, max_bytes=10**8, max_wait=60)
        for i, (start, end) in enumerate(bounds):
            result = classify(fetched[start:end], 10**8)
            assert isinstance(result, Valid)
            windows.add(
                endpoint=result.endpoint,
                model=result.model,
                custom_id=result.custom_id,
                line=result.line,
                position=("t", 0, i),
            )
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (window,) = windows.flush()
    assert 1.0 * window.nbytes < used < 1.6 * window.nbytes, (used, window.nbytes)


def test_prunable_entries_lie_entirely_below_the_committed_offsets() -> None:
    s = LedgerState()
    s.apply(entry("done", [("t", 0, 0), ("t", 1, 4)], "published"))
    s.apply(entry("gone", [("t", 0, 1)], "abandoned"))
    s.apply(entry("open", [("t", 0, 2)], "created"))
    s.apply(entry("late", [("t", 0, 3), ("t", 1, 9)], "published"))
    assert sorted(s.prunable({("t", 0): 10, ("t", 1): 5})) == ["done", "gone"]
    assert s.prunable({("t", 0): 10}) == ["gone"]  # partition 1 not ours / not committed


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
        b'{"custom_id":"a","url":"/v1/embeddings","body":{"model":"m"}}',
        b"42",
    ],
)
def test_hot_path_validation_agrees_with_the_contract(value: bytes) -> None:
    """``classify_fast`` (the plain-check hot path) gives exactly ``classify``'s answer, and
    accepts exactly what ``RequestLine`` accepts."""
    slow = classify(value, 10_000)
    fast = classify_fast(value, 10_000)
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


_REFAULT_PROBE = """
import resource, sys
from batchpipe.services.dispatcher.agent import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
kept = [bytes(1021) for _ in range(30_000)]  # a window's values (~30 MB)
del kept
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kept = [bytes(1021) for _ in range(30_000)]  # the next window's
small = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = b"x" * (8 << 20)  # an upload read, a JSONL join (pages touched)
    del block
print(small, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_freed_window_memory_is_reused_instead_of_faulted_in_again() -> None:
    def faults(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _REFAULT_PROBE, mode], capture_output=True, check=True
        )
        small, large = out.stdout.split()
        return int(small), int(large)

    # ~30 MB of 1 KB values given back and touched again; 8 MiB blocks reused after the first
    assert faults("default")[0] > 5_000
    small, large = faults("keep")
    assert small < 1_000
    assert large < 2 * (8 << 20) // 4096  # not a fresh mmap each time (10 x 2,048 pages)
