"""submit.py: retry timing (Retry-After wins), uploads retried until they succeed or are
aborted, a create never repeated once the lookup finds its batch, and the threaded upload."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from batchpipe.services.dispatcher.jsonl import write_jsonl
from batchpipe.services.dispatcher.submit import Aborted, Submitter, backoff, retry_after
from batchpipe.shared.providers.base import CreateRequest, Pending, Submission
from batchpipe.shared.providers.files_api import UPLOAD_CHUNK, _LargeReads, _upload
from tests.dispatcher.fakes import (
    FakeBatches,
    FakeClient,
    FakeFiles,
    fake_provider,
    status_error,
)

REQUEST = CreateRequest(
    dispatch_id="d",
    endpoint="/v1/embeddings",
    model="e",
    path=None,
    staged="f",
    request_count=1,
    tags={},
)


def test_retry_after_headers() -> None:
    assert retry_after(status_error(429, {"retry-after-ms": "1500"})) == 1.5
    assert retry_after(status_error(429, {"retry-after": "3"})) == 3.0
    assert retry_after(status_error(500, {})) is None
    assert retry_after(ValueError()) is None
    assert backoff(3, 0.5, 30, 2.0) == 2.0
    assert 2.0 <= backoff(3, 0.5, 30, None) <= 4.0
    assert backoff(50, 0.5, 30, None) <= 30


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_upload_retries_until_it_succeeds(tmp_path: Path) -> None:
    path = write_jsonl([b"{}"], tmp_path)
    files = FakeFiles(failures=5)
    s = Submitter(sleep=no_sleep)
    assert await s.upload(fake_provider(FakeClient(files)), path, "d") == "file-1"
    assert files.calls == 6


async def test_upload_can_be_aborted(tmp_path: Path) -> None:
    path = write_jsonl([b"{}"], tmp_path)
    s = Submitter(sleep=no_sleep)
    with pytest.raises(Aborted):
        await s.upload(fake_provider(FakeClient(FakeFiles(10))), path, "d", abort=lambda: True)


async def test_create_is_not_repeated_when_lookup_finds_the_batch() -> None:
    batches = FakeBatches(outcomes=["lost", "ok"])
    s = Submitter(sleep=no_sleep)
    found = Submission(batch_id="batch-from-listing", input_file_id="f", created_at=1)

    async def lookup() -> Any:
        return found

    batch = await s.create(fake_provider(FakeClient(batches=batches)), REQUEST, lookup=lookup)
    assert batch is found and batches.calls == 1


async def test_create_retried_when_lookup_finds_nothing_and_never_aborted_after_trying() -> None:
    batches = FakeBatches(outcomes=["429", "lost", "ok"])
    s = Submitter(sleep=no_sleep)
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
        fake_provider(FakeClient(batches=batches)),
        REQUEST,
        lookup=lookup,
        abort=abort,
        on_attempt=attempt,
    )
    assert batch.batch_id == "batch-3" and lookups == 2


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
    file_id = _upload(client, path, {})
    assert client.files.retrieve(file_id).bytes == path.stat().st_size
    assert client.files.content(file_id).read() == path.read_bytes()


async def test_create_waits_while_the_lookup_cannot_tell_and_never_creates_twice() -> None:
    """A lookup answering ``Pending`` (a batch that may be this one has not ended) is asked
    again after a backoff; no second create is tried meanwhile."""
    batches = FakeBatches(outcomes=["lost"])
    s = Submitter(sleep=no_sleep)
    answers: list[Submission | Pending | None] = [
        Pending("batch-1"),
        Pending("batch-1"),
        Submission(batch_id="batch-1", input_file_id="f", created_at=1),
    ]

    async def lookup() -> Submission | Pending | None:
        return answers.pop(0)

    batch = await s.create(fake_provider(FakeClient(batches=batches)), REQUEST, lookup=lookup)
    assert batch.batch_id == "batch-1" and batches.calls == 1 and not answers
