"""Unit tests of the pure parts: validation, line processing, live counts, fault config."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from pathlib import Path

import pytest

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.endpoints import LineContext, reply_text
from batchpipe.devtools.emulator.lifecycle import Lifecycle
from batchpipe.devtools.emulator.objects import present_batch
from batchpipe.devtools.emulator.process import process_lines
from batchpipe.devtools.emulator.validate import validate_file, validate_lines
from tests.emulator.helpers import chat_file, chat_line


def _lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def test_validate_accepts_a_good_file_and_returns_ids_and_model() -> None:
    result = validate_lines(_lines(chat_file(3)), "/v1/chat/completions", 50_000)
    assert result.ok
    assert (result.total, result.model) == (3, "gpt-4o-mini")
    assert result.custom_ids == ["req-0", "req-1", "req-2"]


def test_validate_reports_many_errors_with_line_numbers() -> None:
    data = b"{bad\n" + json.dumps(chat_line("a", url="/v1/embeddings")).encode() + b"\n"
    result = validate_lines(_lines(data), "/v1/chat/completions", 50_000)
    assert [(e["code"], e["line"]) for e in result.errors] == [
        ("invalid_json_line", 1),
        ("invalid_url", 2),
    ]
    assert result.custom_ids == []


def test_validate_counts_past_the_line_limit() -> None:
    result = validate_lines(_lines(chat_file(4)), "/v1/chat/completions", 3)
    assert result.errors[0]["code"] == "too_many_tasks"
    assert result.total == 4


def test_reply_is_a_function_of_the_prompt() -> None:
    assert reply_text("abc def", "m", None) == reply_text("abc def", "m", None)
    assert reply_text("abc def", "m", None) != reply_text("abc xyz", "m", None)
    text, finish = reply_text("a " * 100, "m", 1)
    assert finish == "length" and len(text) <= 4


def _ctx(**kw: object) -> LineContext:
    values: dict[str, object] = {
        "seed": 1,
        "batch_seq": 1,
        "batch_id": "batch_x",
        "endpoint": "/v1/chat/completions",
        "created": 0,
    }
    return LineContext(**(values | kw))  # type: ignore[arg-type]


def test_process_lines_partial_and_expired() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    result = process_lines(_lines(chat_file(200)), _ctx(), out, err, 0.5, expire_rest=True)
    assert result.completed + result.unfinished == 200
    assert 60 < result.completed < 140
    assert result.error_lines == result.unfinished
    expired = [json.loads(line) for line in err.getvalue().splitlines()]
    assert {line["error"]["code"] for line in expired} == {"batch_expired"}


def test_process_lines_failure_rate_and_statuses() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    ctx = _ctx(failure_rate=0.5, failure_statuses=[429, 400])
    result = process_lines(_lines(chat_file(400)), ctx, out, err, 1.0, expire_rest=False)
    assert 150 < result.failed < 250
    statuses = {json.loads(x)["response"]["status_code"] for x in err.getvalue().splitlines()}
    assert statuses == {429, 400}
    assert len(result.succeeded_custom_ids) == result.completed == result.output_lines


def test_live_counts_grow_with_time() -> None:
    obj = {"status": "in_progress", "request_counts": {"total": 100, "completed": 0, "failed": 0}}
    internal = {"in_progress_f": 1000.0, "processing_seconds": 10.0}
    assert present_batch(obj, internal, 0.0, now=1005.0)["request_counts"]["completed"] == 50
    assert present_batch(obj, internal, 0.2, now=1010.0)["request_counts"] == {
        "total": 100,
        "completed": 80,
        "failed": 20,
    }


def test_fault_config_updates_and_rejects_bad_values() -> None:
    config = EmulatorConfig()
    config.update_faults({"line_failure_status": "429,500", "force_expire": True})
    assert config.line_failure_status == [429, 500]
    assert config.force_expire == 1.0
    with pytest.raises(ValueError, match="unknown"):
        config.update_faults({"port": 1})
    with pytest.raises(ValueError):
        config.update_faults({"line_failure_status": [404]})
    assert config.line_failure_status == [429, 500]


def test_heavy_steps_run_in_a_worker_process_and_survive_its_death(tmp_path: Path) -> None:
    """Validation runs in another process (it must not hold the API's GIL); if that process
    dies, the step still completes (in a thread) and a new pool serves the next ones."""

    async def scenario() -> None:
        lifecycle = Lifecycle(None, None, EmulatorConfig(step_processes=1), seed=1)  # type: ignore[arg-type]
        path = tmp_path / "in.jsonl"
        path.write_bytes(chat_file(2))
        await lifecycle.start_pool()
        try:
            pid = await lifecycle._offload(os.getpid)
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            result = await lifecycle._offload(validate_file, path, "/v1/chat/completions", 10)
            assert result.ok and result.custom_ids == ["req-0", "req-1"]
            again = await lifecycle._offload(os.getpid)
            assert again not in (pid, os.getpid())
        finally:
            await lifecycle.stop()

    asyncio.run(scenario())
