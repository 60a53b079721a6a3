"""Anthropic's Message Batches API of the emulator, driven through the official anthropic SDK
(sync and async, ``messages.batches`` and ``beta.messages.batches``): every ending, the
objects' fields, listing, cancel, delete, and the separate account."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from anthropic import BadRequestError, NotFoundError

from batchpipe.devtools.emulator.runner import RunningEmulator
from tests.emulator.anthropic_helpers import (
    aclaude,
    await_ended,
    claude,
    params,
    requests,
    results,
    wait_ended,
)
from tests.emulator.helpers import client
from tests.fixtures_emulator import EmulatorFactory

BAD_PARAMS: dict[str, Any] = {
    "no-model": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    "no-max-tokens": {"model": "claude-x", "messages": [{"role": "user", "content": "x"}]},
    "no-messages": {"model": "claude-x", "max_tokens": 5, "messages": []},
    "streaming": params(stream=True),
    "assistant-first": {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [{"role": "assistant", "content": "x"}],
    },
    "system-role": {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
    },
}


@pytest.mark.parametrize("beta", [False, True])
def test_a_batch_ends_with_a_message_per_valid_request_and_errors_for_bad_params(
    emulator: RunningEmulator, beta: bool
) -> None:
    c = claude(emulator)
    batches: Any = c.beta.messages.batches if beta else c.messages.batches
    bad: list[Any] = [{"custom_id": name, "params": body} for name, body in BAD_PARAMS.items()]
    good = [
        *requests(3),
        {"custom_id": "with-system", "params": params("hi", system="Be brief.")},
        {"custom_id": "blocks", "params": params([{"type": "text", "text": "hi"}])},
    ]
    batch = batches.create(requests=good + bad)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == len(good) + len(bad)
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert batch.ended_at is None and batch.cancel_initiated_at is None
    assert batch.archived_at is None
    ended = wait_ended(c, batch.id, beta=beta)
    assert ended.request_counts.processing == 0
    assert ended.request_counts.succeeded == len(good)
    assert ended.request_counts.errored == len(bad)
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.results_url == (
        f"{emulator.anthropic_base_url}/v1/messages/batches/{batch.id}/results"
    )
    lines = {line.custom_id: line for line in batches.results(batch.id)}
    assert set(lines) == {r["custom_id"] for r in good + bad}
    for item in good:
        result = lines[item["custom_id"]].result
        assert result.type == "succeeded"
        message = result.message
        assert message.id.startswith("msg_") and message.type == "message"
        assert message.role == "assistant" and message.model == "claude-sonnet-4-5"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.stop_reason == "end_turn" and message.stop_sequence is None
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0
    for name in BAD_PARAMS:
        result = lines[name].result
        assert result.type == "errored", name
        assert result.error.type == "error"
        assert result.error.error.type == "invalid_request_error", name
        assert result.error.error.message


def test_replies_are_deterministic_and_max_tokens_truncates(
    emulator_factory: EmulatorFactory,
) -> None:
    emulator = emulator_factory(processing_seconds=0.1)
    c = claude(emulator)
    body = params("a long question " * 20) | {"max_tokens": 2}
    short: list[Any] = [{"custom_id": "short", "params": body}]
    batch = c.messages.batches.create(requests=short)
    line = results(c, wait_ended(c, batch.id))["short"].result
    assert line.type == "succeeded"
    assert line.message.stop_reason == "max_tokens"
    assert line.message.usage.output_tokens <= 2


@pytest.mark.parametrize("beta", [False, True])
async def test_async_create_cancel_and_results(
    emulator_factory: EmulatorFactory, beta: bool
) -> None:
    emulator = emulator_factory(processing_seconds=3)
    c = aclaude(emulator)
    batches: Any = c.beta.messages.batches if beta else c.messages.batches
    batch = await batches.create(requests=requests(20))
    canceling = await batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert (await batches.cancel(batch.id)).processing_status == "canceling"  # idempotent
    ended = await await_ended(c, batch.id, beta=beta)
    counts = ended.request_counts
    assert counts.canceled + counts.succeeded == 20 and counts.canceled > 0
    lines = [line async for line in await batches.results(batch.id)]
    assert sorted(line.custom_id for line in lines) == sorted(f"req-{i}" for i in range(20))
    assert {line.result.type for line in lines} <= {"canceled", "succeeded"}
    assert sum(line.result.type == "canceled" for line in lines) == counts.canceled
    with pytest.raises(BadRequestError):
        await batches.cancel(batch.id)  # it has ended
    await c.close()


async def test_async_succeeded_batch(emulator: RunningEmulator) -> None:
    c = aclaude(emulator)
    batch = await c.messages.batches.create(requests=requests(4))
    ended = await await_ended(c, batch.id)
    assert ended.request_counts.succeeded == 4
    lines = [line async for line in await c.messages.batches.results(batch.id)]
    assert {line.result.type for line in lines} == {"succeeded"}
    await c.close()


@pytest.mark.parametrize("beta", [False, True])
def test_list_pages_newest_first_with_after_id_and_before_id(
    emulator: RunningEmulator, beta: bool
) -> None:
    c = claude(emulator)
    batches: Any = c.beta.messages.batches if beta else c.messages.batches
    ids = [batches.create(requests=requests(1)).id for _ in range(5)]
    newest_first = ids[::-1]
    assert [b.id for b in batches.list(limit=2)] == newest_first  # auto-pagination
    first = batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2]
    assert first.has_more and first.first_id == newest_first[0]
    assert first.last_id == newest_first[1]
    after = batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in after.data] == newest_first[2:4] and after.has_more
    last = batches.list(limit=5, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and not last.has_more
    before = batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more
    assert [b.id for b in batches.list(before_id=newest_first[2])] == newest_first[:2]
    assert [b.id for b in batches.list()] == newest_first  # default limit 20
    for bad in (0, 1001):
        with pytest.raises(BadRequestError):
            batches.list(limit=bad)


def test_delete_only_an_ended_batch(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(processing_seconds=3)
    c = claude(emulator)
    batch = c.messages.batches.create(requests=requests(2))
    with pytest.raises(BadRequestError, match="cancel it first"):
        c.messages.batches.delete(batch.id)
    with pytest.raises(BadRequestError):  # no results before it ends
        c.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)
    c.beta.messages.batches.cancel(batch.id)
    wait_ended(c, batch.id)
    gone = c.beta.messages.batches.delete(batch.id)
    assert gone.id == batch.id and gone.type == "message_batch_deleted"
    with pytest.raises(NotFoundError) as caught:
        c.messages.batches.retrieve(batch.id)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": f"Message batch {batch.id} not found."},
        "request_id": caught.value.body["request_id"],  # type: ignore[index]
    }
    assert [b.id for b in c.messages.batches.list()] == []


def test_expiry_by_the_window_and_forced(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(processing_seconds=5, completion_window_seconds=0.3)
    c = claude(emulator)
    batch = c.messages.batches.create(requests=requests(10))
    ended = wait_ended(c, batch.id)
    assert ended.request_counts.expired + ended.request_counts.succeeded == 10
    assert ended.request_counts.expired > 0
    assert {line.result.type for line in results(c, ended).values()} <= {"expired", "succeeded"}

    forced = emulator_factory(processing_seconds=0.2, force_expire=1.0)
    c = claude(forced)
    ended = wait_ended(c, c.messages.batches.create(requests=requests(40)).id)
    counts = ended.request_counts
    assert counts.expired > 0 and counts.succeeded > 0 and counts.expired + counts.succeeded == 40
    lines = results(c, ended)
    assert sum(line.result.type == "expired" for line in lines.values()) == counts.expired


def test_an_anthropic_batch_is_its_own_account(emulator: RunningEmulator) -> None:
    c = claude(emulator)
    batch = c.messages.batches.create(requests=requests(1))
    openai = client(emulator)
    assert openai.batches.list().data == []
    with pytest.raises(Exception, match="404"):
        openai.batches.retrieve(batch.id)
    assert emulator.stats()["batches_by_provider"] == {"anthropic": {"in_progress": 1}}


def test_stats_count_only_succeeded_requests_as_billed(emulator: RunningEmulator) -> None:
    c = claude(emulator)
    same: list[Any] = [{"custom_id": "twice", "params": params()}]
    bad: list[Any] = [{"custom_id": "twice-bad", "params": {"model": "claude-x"}}]
    for _ in range(2):
        wait_ended(c, c.messages.batches.create(requests=same + bad).id)
    stats = emulator.stats()
    assert stats["duplicate_custom_ids"] == 2  # both submitted twice
    assert stats["double_billed_custom_ids"] == 1  # only the succeeded one is billed twice
    assert stats["lines_submitted"] == 4 and stats["batches_created"] == 2
    assert stats["batches_by_provider"]["anthropic"] == {"ended": 2}
