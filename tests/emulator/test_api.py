"""The HTTP surface through the SDK: files CRUD and listing, batch listing, auth, 404s, SDK
retries on injected 429/5xx (honouring Retry-After), latency, stats and the faults endpoint."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from batchpipe.devtools.emulator.runner import RunningEmulator
from tests.emulator.helpers import (
    aclient,
    chat_file,
    chat_line,
    client,
    create,
    jsonl,
    upload,
    wait,
)


def test_files_crud_and_listing(emulator: RunningEmulator) -> None:
    c = client(emulator)
    ids = [upload(c, chat_file(1, prefix=f"f{i}"), name=f"in{i}.jsonl") for i in range(5)]
    other = c.files.create(file=("notes.txt", io.BytesIO(b"hi")), purpose="user_data")
    info = c.files.retrieve(ids[0])
    assert info.id.startswith("file-")
    assert (info.object, info.purpose, info.filename) == ("file", "batch", "in0.jsonl")
    assert info.bytes == len(chat_file(1, prefix="f0"))
    assert info.status == "processed"
    assert c.files.content(ids[0]).content == chat_file(1, prefix="f0")

    page = c.files.list(limit=2, purpose="batch")
    assert [f.id for f in page.data] == ids[::-1][:2]  # newest first
    assert page.has_more
    assert [f.id for f in c.files.list(limit=2, purpose="batch")] == ids[::-1]  # auto-pages
    assert [f.id for f in c.files.list(order="asc")] == [*ids, other.id]

    deleted = c.files.delete(ids[1])
    assert (deleted.id, deleted.deleted) == (ids[1], True)
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(ids[1])
    with pytest.raises(openai.NotFoundError):
        c.files.content(ids[1])
    with pytest.raises(openai.NotFoundError):
        c.files.delete(ids[1])
    assert emulator.stats()["files"] == 5
    expiring = c.files.create(
        file=("e.jsonl", io.BytesIO(b"x")),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert expiring.expires_at == expiring.created_at + 3600


def test_output_files_expire_as_asked(emulator: RunningEmulator) -> None:
    c = client(emulator)
    batch = create(
        c,
        upload(c, chat_file(1)),
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    done = wait(c, batch.id)
    output = c.files.retrieve(done.output_file_id or "")
    assert output.expires_at == output.created_at + 7200


def test_batch_listing_paginates_newest_first_with_metadata(emulator: RunningEmulator) -> None:
    c = client(emulator)
    file_id = upload(c, chat_file(1))
    created = [create(c, file_id, metadata={"n": str(i)}).id for i in range(5)]
    first = c.batches.list(limit=2)
    assert [b.id for b in first.data] == created[::-1][:2]
    assert first.has_more
    listed = list(c.batches.list(limit=2))
    assert [b.id for b in listed] == created[::-1]
    assert [b.metadata for b in listed] == [{"n": str(i)} for i in reversed(range(5))]
    raw = httpx.get(f"{emulator.base_url}/batches", params={"limit": 2}).json()
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == (
        "list",
        created[4],
        created[3],
        True,
    )
    last = httpx.get(f"{emulator.base_url}/batches", params={"after": created[1]}).json()
    assert [b["id"] for b in last["data"]] == [created[0]] and last["has_more"] is False
    with pytest.raises(openai.BadRequestError):
        c.batches.list(limit=101)


async def test_async_listing_and_errors(emulator: RunningEmulator) -> None:
    c = aclient(emulator, max_retries=0)
    uploaded = await c.files.create(file=("a.jsonl", io.BytesIO(chat_file(1))), purpose="batch")
    for _ in range(3):
        await c.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert len([b async for b in c.batches.list(limit=1)]) == 3
    with pytest.raises(openai.NotFoundError):
        await c.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        await c.batches.cancel("batch_nope")
    await c.close()


def test_errors_have_openai_shape(emulator: RunningEmulator) -> None:
    response = httpx.get(f"{emulator.base_url}/batches/batch_nope")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    unknown_route = httpx.get(f"{emulator.base_url}/nothing/here")
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error"]["type"] == "invalid_request_error"


def test_api_key_is_enforced_when_set(emulator_factory: Any) -> None:
    emulator = emulator_factory(api_key="sk-right-key-123")
    assert emulator.api_key == "sk-right-key-123"
    wrong = openai.OpenAI(base_url=emulator.base_url, api_key="sk-wrong-key-456")
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.batches.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong-key-456" not in str(info.value)
    assert client(emulator).batches.list().data == []


def test_sdk_retries_injected_429_on_create_and_upload(emulator_factory: Any) -> None:
    emulator = emulator_factory(create_429_rate=1.0, upload_429_rate=1.0, retry_after_seconds=0.05)
    c = client(emulator, max_retries=2)
    with pytest.raises(openai.RateLimitError) as info:
        c.files.create(file=("a.jsonl", io.BytesIO(chat_file(1))), purpose="batch")
    assert info.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.RateLimitError):
        c.batches.create(
            input_file_id="file-x", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert emulator.stats()["faults_injected"] == {"upload_429": 3, "create_429": 3}  # 1 + 2
    emulator.set_faults(create_429_rate=0.5, upload_429_rate=0.5)
    c = client(emulator, max_retries=10)
    for _ in range(8):
        create(c, upload(c, chat_file(1)))
    injected = emulator.stats()["faults_injected"]
    assert injected["create_429"] > 3 and injected["upload_429"] > 3
    assert emulator.stats()["batches_created"] == 8


def test_sdk_honours_retry_after(emulator_factory: Any) -> None:
    emulator = emulator_factory(create_429_rate=1.0, retry_after_seconds=1.2)
    c = client(emulator, max_retries=1)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        create(c, "file-x")
    assert time.monotonic() - started >= 1.2  # the SDK's own backoff would be <= 0.5 s


def test_sdk_retries_injected_5xx_on_retrieve(emulator: RunningEmulator) -> None:
    c = client(emulator)
    batch = create(c, upload(c, chat_file(1)))
    emulator.set_faults(retrieve_5xx_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        c.with_options(max_retries=1).batches.retrieve(batch.id)
    assert emulator.stats()["faults_injected"]["retrieve_5xx"] == 2  # 1 + 1 retry
    heal = threading.Timer(0.2, lambda: emulator.set_faults(retrieve_5xx_rate=0.0))
    heal.start()
    assert c.with_options(max_retries=3).batches.retrieve(batch.id).id == batch.id
    heal.join()
    assert emulator.stats()["faults_injected"]["retrieve_5xx"] >= 3


def test_slow_responses(emulator: RunningEmulator) -> None:
    c = client(emulator)
    emulator.set_faults(slow_seconds=0.3)
    started = time.monotonic()
    c.batches.list()
    assert time.monotonic() - started >= 0.3


def test_faults_endpoint(emulator: RunningEmulator) -> None:
    current = emulator.set_faults(line_failure_rate=0.25, line_failure_status=429)
    assert current["line_failure_rate"] == 0.25
    assert current["line_failure_status"] == [429]
    response = httpx.post(f"{emulator.root_url}/_emulator/faults", json={"nope": 1})
    assert response.status_code == 400
    response = httpx.post(f"{emulator.root_url}/_emulator/faults", json={"line_failure_rate": 2})
    assert response.status_code == 400
    assert httpx.get(f"{emulator.root_url}/_emulator/faults").json()["line_failure_rate"] == 0.25


def test_stats_detect_duplicates_and_double_billing(emulator: RunningEmulator) -> None:
    c = client(emulator)
    a = wait(c, create(c, upload(c, chat_file(4, prefix="a"))).id)
    assert a.status == "completed"
    # the same custom_ids again, successfully: submitted twice and billed twice
    wait(c, create(c, upload(c, chat_file(2, prefix="a"))).id)
    # b-* fail first, then are retried in a new batch: duplicates but billed once
    emulator.set_faults(line_failure_rate=1.0)
    wait(c, create(c, upload(c, chat_file(3, prefix="b"))).id)
    emulator.set_faults(line_failure_rate=0.0)
    wait(c, create(c, upload(c, chat_file(3, prefix="b"))).id)
    stats = emulator.stats()
    assert stats["lines_submitted"] == 12
    assert stats["batches_created"] == 4
    assert stats["duplicate_custom_ids"] == 5
    assert stats["double_billed_custom_ids"] == 2
    assert stats["batches_by_status"] == {"completed": 4}
    assert stats["files"] == 4 + 3 + 1  # inputs, outputs, one error file


def test_progress_is_visible_while_in_progress(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=1.5)
    c = client(emulator)
    batch = create(c, upload(c, jsonl([chat_line(str(i)) for i in range(100)])))
    wait(c, batch.id, statuses={"in_progress"})
    time.sleep(0.8)
    middle = c.batches.retrieve(batch.id)
    assert middle.status == "in_progress"
    assert middle.request_counts is not None
    assert 0 < middle.request_counts.completed < 100
    assert middle.request_counts.total == 100
