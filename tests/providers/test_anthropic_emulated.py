"""The Anthropic provider end to end against the emulator (official SDK) and the real broker
(its input store): a window staged, created inline, followed and read back; custom_ids that
Anthropic would refuse mapped and given back; the batch found again by content after a lost
create answer, ``Pending`` while it runs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from batchpipe.services.dispatcher.jsonl import write_jsonl
from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.providers.anthropic import AnthropicProvider
from batchpipe.shared.providers.base import CreateRequest, Pending, Submission
from batchpipe.shared.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

MODEL = "claude-3-5-haiku-latest"


def chat(custom_id: str, text: str) -> bytes:
    return orjson.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": text},
                ],
            },
        }
    )


def provider(settings: Settings, emulator: Any) -> AnthropicProvider:
    configured = settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("sk-ant"),
            "anthropic_base_url": emulator.anthropic_base_url,
        }
    )
    return AnthropicProvider.from_settings(configured)


async def create(
    p: AnthropicProvider, lines: list[bytes], tmp_path: Path, dispatch_id: str
) -> tuple[str, Submission]:
    path = write_jsonl(lines, tmp_path)
    staged = await p.stage(path, dispatch_id)
    request = CreateRequest(
        dispatch_id=dispatch_id,
        endpoint="/v1/chat/completions",
        model=MODEL,
        path=path,
        staged=staged,
        request_count=len(lines),
        tags={},
    )
    return staged, await p.create(request)


async def ended(p: AnthropicProvider, batch_id: str) -> Any:
    async with asyncio.timeout(30):
        while (progress := await p.retrieve(batch_id)).outcome is None:
            await asyncio.sleep(0.2)
    return progress.outcome


async def test_a_window_round_trips_with_the_users_own_custom_ids(
    settings: Settings, emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory(processing_seconds=0.5)
    p = provider(settings, emulator)
    try:
        lines = [chat("user.id:1", "one"), chat("plain-2", "two")]
        staged, submitted = await create(p, lines, tmp_path, "dsp_round")
        outcome = await ended(p, submitted.batch_id)
        assert outcome.status == "completed"
        record = BatchRecord(
            batch_id=submitted.batch_id,
            provider="anthropic",
            input_file_id=staged,
            endpoint="/v1/chat/completions",
            model=MODEL,
            request_count=2,
            dispatch_id="dsp_round",
            input_bytes=10,
            window_opened_at=1.0,
            submitted_at=submitted.created_at,
        )
        async with p.results(record, outcome) as stream:
            results = [line async for line in stream]
        by_id = {r["custom_id"]: r for r in results if r is not None}
        assert set(by_id) == {"user.id:1", "plain-2"}  # the mapped id is given back
        body = by_id["user.id:1"]["response"]["body"]
        assert by_id["user.id:1"]["response"]["status_code"] == 200
        assert body["type"] == "message" and body["content"][0]["type"] == "text"
        async with p.requests(record) as originals:
            back = [(n, cid, line) async for n, cid, line in originals]
        assert back == [(1, "user.id:1", lines[0]), (2, "plain-2", lines[1])]
    finally:
        await p.close()


async def test_a_batch_whose_create_answer_was_lost_is_found_by_its_requests(
    settings: Settings, emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = emulator_factory(processing_seconds=1.5)
    p = provider(settings, emulator)
    try:
        mine = [chat(f"mine-{i}", str(i)) for i in range(3)]
        other = [chat(f"other-{i}", str(i)) for i in range(3)]  # same size, someone else's
        _, theirs = await create(p, other, tmp_path, "dsp_other")
        staged, created = await create(p, mine, tmp_path, "dsp_mine")
        ask: dict[str, Any] = {
            "not_before": created.created_at - 60,
            "staged": {"dsp_mine": staged},
            "counts": {"dsp_mine": 3},
        }
        running = await p.find(["dsp_mine"], **ask)
        assert isinstance(running["dsp_mine"], Pending)  # cannot tell while they run
        await ended(p, created.batch_id)
        await ended(p, theirs.batch_id)
        found = await p.find(["dsp_mine"], **ask)
        submission = found["dsp_mine"]
        assert isinstance(submission, Submission) and submission.batch_id == created.batch_id
        ask["counts"] = {"dsp_mine": 4}  # no batch of that size: none was created
        assert await p.find(["dsp_mine"], **ask) == {}
    finally:
        await p.close()


async def test_the_create_body_is_streamed_with_its_length_and_refused_here_over_the_limit(
    settings: Settings, emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed body is exactly ``{"requests": [...]}`` of every line's entry (what the
    SDK's ``messages.batches.create`` would send), accepted by the API with a native
    ``/v1/messages`` line among translated ones; a window whose body would exceed the limit is
    refused before anything is sent."""
    from batchpipe.shared.providers import anthropic as module
    from batchpipe.shared.providers.base import Limits

    emulator = emulator_factory(processing_seconds=0.2)
    p = provider(settings, emulator)
    try:
        native = orjson.dumps(
            {
                "custom_id": "native-1",
                "method": "POST",
                "url": "/v1/messages",
                "body": {
                    "model": MODEL,
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            }
        )
        lines = [chat(f"c{i}", "x" * 3000) for i in range(200)] + [native]
        path = write_jsonl(lines, tmp_path)
        staged = await p.stage(path, "dsp_stream")
        expected = {"requests": [p.inline_request(line) for line in lines]}
        from_file = tmp_path / "from-file.json"
        size = await p._write_body(module._file_lines(path), from_file)
        assert orjson.loads(from_file.read_bytes()) == expected
        assert size == from_file.stat().st_size
        from_topic = tmp_path / "from-topic.json"
        await p._write_body(p._lines(staged), from_topic)
        assert from_topic.read_bytes() == from_file.read_bytes()
        sent = from_file.read_bytes()
        request = CreateRequest(
            dispatch_id="dsp_stream",
            endpoint="/v1/chat/completions",
            model=MODEL,
            path=path,
            staged=staged,
            request_count=len(lines),
            tags={},
        )
        # without the window's file (another process, after a crash): from the staged lines
        elsewhere = await p.create(replace(request, path=None))
        assert (await ended(p, elsewhere.batch_id)).status == "completed"
        submitted = await p.create(request)
        assert (await ended(p, submitted.batch_id)).status == "completed"

        monkeypatch.setattr(module, "ANTHROPIC_LIMITS", Limits(100_000, len(sent) - 1))
        before = [b.id async for b in p.client.messages.batches.list()]
        with pytest.raises(ValueError, match=f"{len(sent)} bytes, over Anthropic's limit"):
            await p.create(request)
        assert [b.id async for b in p.client.messages.batches.list()] == before
        assert [f.name for f in tmp_path.iterdir() if f.name.startswith("anthropic-body-")] == []
    finally:
        await p.close()
