"""Lifecycle paths: per-line failures, all-failed, cancel, expiry (window and forced), restart."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.runner import RunningEmulator, run_emulator_in_thread
from tests.emulator.helpers import (
    chat_file,
    chat_line,
    client,
    create,
    jsonl,
    read_jsonl,
    upload,
    wait,
)


def test_partial_line_failures_split_output_and_error_files(emulator: RunningEmulator) -> None:
    emulator.set_faults(line_failure_rate=0.3, line_failure_status=[429, 500, 400])
    c = client(emulator)
    done = wait(c, create(c, upload(c, chat_file(60))).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    out, err = read_jsonl(c, done.output_file_id), read_jsonl(c, done.error_file_id)
    assert len(out) == done.request_counts.completed > 0
    assert len(err) == done.request_counts.failed > 0
    assert len(out) + len(err) == 60
    assert {line["custom_id"] for line in out}.isdisjoint(line["custom_id"] for line in err)
    statuses = {line["response"]["status_code"] for line in err}
    assert statuses <= {429, 500, 400} and len(statuses) >= 2
    for line in err:
        assert line["error"] is None
        assert set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    assert c.files.retrieve(done.error_file_id or "").filename == f"{done.id}_error.jsonl"


def test_all_lines_failed_is_completed_without_output(emulator: RunningEmulator) -> None:
    emulator.set_faults(line_failure_rate=1.0, line_failure_status=[500])
    c = client(emulator)
    done = wait(c, create(c, upload(c, chat_file(5))).id)
    assert done.status == "completed"
    assert done.output_file_id is None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 5)
    assert {line["response"]["status_code"] for line in read_jsonl(c, done.error_file_id)} == {500}


def test_invalid_request_body_is_a_400_line(emulator: RunningEmulator) -> None:
    bad = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "gpt-4o-mini"}}  # fmt: skip
    c = client(emulator)
    done = wait(c, create(c, upload(c, jsonl([chat_line("good"), bad]))).id)
    assert done.status == "completed"
    (err,) = read_jsonl(c, done.error_file_id)
    assert err["custom_id"] == "bad"
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["param"] == "messages"


def test_cancel_gives_partial_output(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=3.0)
    c = client(emulator)
    batch = create(c, upload(c, chat_file(100)))
    wait(c, batch.id, statuses={"in_progress"})
    time.sleep(1.0)
    cancelling = c.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    assert c.batches.cancel(batch.id).status in ("cancelling", "cancelled")  # idempotent
    done = wait(c, batch.id)
    assert done.status == "cancelled"
    assert done.cancelled_at is not None and done.completed_at is None
    out = read_jsonl(c, done.output_file_id)
    assert 5 < len(out) < 95  # about a third of the lines had finished
    assert done.request_counts is not None and done.request_counts.completed == len(out)
    assert done.request_counts.total == 100


def test_cancel_right_after_create(emulator: RunningEmulator) -> None:
    c = client(emulator)
    batch = create(c, upload(c, chat_file(3)))
    assert c.batches.cancel(batch.id).status == "cancelling"
    done = wait(c, batch.id)
    assert done.status == "cancelled"
    assert done.completed_at is None


def test_cancel_of_an_ended_batch_is_409(emulator: RunningEmulator) -> None:
    c = client(emulator)
    done = wait(c, create(c, upload(c, chat_file(2))).id)
    c = c.with_options(max_retries=0)  # the SDK retries 409 by default
    with pytest.raises(openai.ConflictError) as info:
        c.batches.cancel(done.id)
    assert info.value.status_code == 409
    failed = wait(c, create(c, upload(c, b"nope\n")).id)
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(failed.id)


def test_expiry_after_completion_window_keeps_finished_lines(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=2.0, completion_window_seconds=1.0)
    c = client(emulator)
    batch = create(c, upload(c, chat_file(100)))
    assert batch.expires_at == batch.created_at + 1
    done = wait(c, batch.id)
    assert done.status == "expired"
    assert done.expired_at is not None
    out, err = read_jsonl(c, done.output_file_id), read_jsonl(c, done.error_file_id)
    assert 5 < len(out) < 95
    assert len(out) + len(err) == 100
    assert all(line["error"]["code"] == "batch_expired" for line in err)
    assert all(line["response"] is None for line in err)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (len(out), len(err))


def test_forced_expiry_fault(emulator: RunningEmulator) -> None:
    emulator.set_faults(force_expire=True)
    c = client(emulator)
    done = wait(c, create(c, upload(c, chat_file(40))).id)
    assert done.status == "expired"
    assert len(read_jsonl(c, done.error_file_id)) > 0


def test_restart_resumes_unfinished_batches(tmp_path: Any) -> None:
    config = EmulatorConfig(port=0, data_dir=tmp_path, processing_seconds=1.5, seed=7)
    data = chat_file(30)
    with run_emulator_in_thread(config) as emulator:
        c = client(emulator)
        input_id = upload(c, data)
        running = create(c, input_id, metadata={"k": "v"})
        wait(c, running.id, statuses={"in_progress"})
        waiting = create(c, input_id)
        cancelled = create(c, input_id)
        c.batches.cancel(cancelled.id)
        before = emulator.stats()
    with run_emulator_in_thread(config.model_copy(update={"port": 0})) as emulator:
        c = client(emulator)
        assert c.files.content(input_id).content == data
        for batch_id in (running.id, waiting.id):
            done = wait(c, batch_id)
            assert done.status == "completed"
            assert len(read_jsonl(c, done.output_file_id)) == 30
        assert wait(c, cancelled.id).status == "cancelled"
        assert c.batches.retrieve(running.id).metadata == {"k": "v"}
        after = emulator.stats()
    assert after["batches_created"] == before["batches_created"] == 3
    assert after["batches_by_status"] == {"completed": 2, "cancelled": 1}


def test_seeded_runs_are_deterministic(emulator_factory: Any) -> None:
    def run(emulator: RunningEmulator) -> tuple[dict[str, int], list[str], dict[str, str]]:
        emulator.set_faults(line_failure_rate=0.4, line_failure_status=[429, 500])
        c = client(emulator)
        done = wait(c, create(c, upload(c, chat_file(50))).id)
        lines = read_jsonl(c, done.output_file_id) + read_jsonl(c, done.error_file_id)
        statuses = {line["custom_id"]: line["response"]["status_code"] for line in lines}
        order = [line["custom_id"] for line in read_jsonl(c, done.output_file_id)]
        contents = {
            line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
            for line in read_jsonl(c, done.output_file_id)
        }
        return statuses, order, contents

    first = run(emulator_factory(seed=99))
    second = run(emulator_factory(seed=99))
    assert first == second
    order = first[1]
    assert order != sorted(order, key=lambda cid: int(cid.split("-")[1]))  # shuffled
    third = run(emulator_factory(seed=100))
    assert third[0] != first[0]


def test_deleting_the_input_file_does_not_break_a_running_batch(emulator: RunningEmulator) -> None:
    c = client(emulator)
    file_id = upload(c, chat_file(5))
    batch = create(c, file_id)
    wait(c, batch.id, statuses={"in_progress", "completed"})
    c.files.delete(file_id)
    done = wait(c, batch.id)
    assert done.status == "completed"
    assert len(read_jsonl(c, done.output_file_id)) == 5
    assert not list((emulator.data_dir / "batch-inputs").iterdir())
