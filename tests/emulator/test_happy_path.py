"""The happy path through the SDK: upload, create, poll, download; sync and async clients."""

from __future__ import annotations

import io

from batchpipe.devtools.emulator.runner import RunningEmulator
from tests.emulator.helpers import (
    aclient,
    await_batch,
    chat_file,
    client,
    create,
    read_jsonl,
    upload,
    wait,
)


def test_chat_batch_completes_with_output(emulator: RunningEmulator) -> None:
    c = client(emulator)
    file_id = upload(c, chat_file(20))
    batch = create(c, file_id, metadata={"purpose": "test"})
    assert batch.status == "validating"
    assert batch.id.startswith("batch_")
    assert batch.expires_at == batch.created_at + 86_400
    assert batch.metadata == {"purpose": "test"}
    done = wait(c, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (20, 20)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None
    assert done.model == "gpt-4o-mini"
    lines = read_jsonl(c, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(20))
    first = lines[0]
    assert first["id"].startswith("batch_req_")
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    body = first["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert done.usage is not None
    assert done.usage.total_tokens == sum(
        line["response"]["body"]["usage"]["total_tokens"] for line in lines
    )
    out = c.files.retrieve(done.output_file_id or "")
    assert out.purpose == "batch_output"
    assert out.filename == f"{batch.id}_output.jsonl"
    stats = emulator.stats()
    assert stats["batches_by_status"] == {"completed": 1}
    assert stats["lines_submitted"] == 20


async def test_async_client_round_trip(emulator: RunningEmulator) -> None:
    c = aclient(emulator)
    uploaded = await c.files.create(file=("in.jsonl", io.BytesIO(chat_file(3))), purpose="batch")
    batch = await c.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await await_batch(c, batch.id)
    assert done.status == "completed"
    content = await c.files.content(done.output_file_id or "")
    assert len(content.text.splitlines()) == 3
    await c.close()
