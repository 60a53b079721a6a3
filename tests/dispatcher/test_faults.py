"""Failure tests: OpenAI refusing uploads, out-of-order windows, kill -9 at every step of a
dispatch, two workers sharing the partitions. Zero lost and zero duplicated requests."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import Settings
from tests.dispatcher.support import (
    Worker,
    assert_exactly_once,
    committed_offsets,
    dispatcher_settings,
    metrics_text,
    produce,
    read_batches,
    request,
    total,
    wait_for,
)

pytestmark = pytest.mark.slow


async def test_upload_fails_then_succeeds_nothing_acked_early(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = dispatcher_settings(settings, emulator, batch_max_requests=10, batch_max_wait_seconds=60)
    await ensure_topics(s)
    emulator.set_faults(upload_429_rate=1.0)
    producer = await producer_factory()
    ids = [f"u-{i}" for i in range(40)]
    await produce(producer, s.requests_topic, ((i, request(i)) for i in ids))
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        # OpenAI refuses every upload: the dispatcher retries, stops consuming, commits nothing
        await wait_for(lambda: "dispatch.retry" in worker.log(), 30)
        try:
            await wait_for(
                lambda: _metric(metrics_text(worker), "dispatcher_backpressure", 1.0), 15
            )
        except AssertionError:
            print(await metrics_text(worker))
            print(worker.log()[-5000:])
            raise
        assert (await consumer_factory(s.batches_topic, group_id=None)).assignment() is not None
        assert await read_nothing(batches, 2.0)
        assert sum((await committed_offsets(s, s.dispatcher_group_id)).values()) == 0
        assert emulator.stats()["batches_created"] == 0
        # OpenAI recovers: everything goes through by itself
        emulator.set_faults(upload_429_rate=0.0)
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 40)
        await wait_for(_committed_sum(s, 40), 20)
        assert worker.proc.poll() is None
    finally:
        worker.stop()
    assert [r.request_count for r in records] == [10, 10, 10, 10]
    await assert_exactly_once(s, emulator, records, ids)


async def _metric(text: Any, name: str, value: float) -> bool:
    body = await text
    return re.search(rf"^{name} {value}$", body, re.M) is not None


async def read_nothing(consumer: Any, seconds: float) -> bool:
    got = await consumer.getmany(timeout_ms=int(seconds * 1000))
    return not any(got.values())


def _committed_sum(s: Settings, n: int) -> Any:
    async def check() -> bool:
        return sum((await committed_offsets(s, s.dispatcher_group_id)).values()) == n

    return check


async def test_out_of_order_windows_never_commit_past_a_buffered_request(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = dispatcher_settings(settings, emulator, batch_max_requests=5, batch_max_wait_seconds=300)
    await ensure_topics(s)
    producer = await producer_factory()
    # partition 0: offset 0 is model-b (waits 300 s), offsets 1..5 are model-a (count cut)
    await produce(
        producer, s.requests_topic, [("b-0", request("b-0", model="model-b"))], partition=0
    )
    a_ids = [f"a-{i}" for i in range(5)]
    await produce(
        producer, s.requests_topic, ((i, request(i, model="model-a")) for i in a_ids), partition=0
    )
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w1.log")
    try:
        first = await read_batches(batches, 60, until=lambda r: total(r) >= 5)
        await asyncio.sleep(2.5)  # several timer ticks, each commits the watermark
        committed = await committed_offsets(s, s.dispatcher_group_id)
        assert committed.get(0, 0) == 0, f"committed past the buffered model-b request: {committed}"
    finally:
        worker.kill()  # kill -9: the model-b request exists only in Kafka now
    assert [r.model for r in first] == ["model-a"]
    # a new worker replays from offset 0: a-* are skipped (ledger), b-0 is submitted
    s2 = dispatcher_settings(settings, emulator, batch_max_requests=5, batch_max_wait_seconds=1)
    worker = Worker(s2, tmp_path / "w2.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(first + r) >= 6)
        await wait_for(_committed_sum(s, 6), 20)
    finally:
        worker.stop()
    await assert_exactly_once(s, emulator, first + records, [*a_ids, "b-0"])


KILL_POINTS = [
    ("faust", "after_ledger"),
    ("faust", "after_upload"),
    ("faust", "after_create"),
    ("faust", "after_publish"),
    ("faust", "before_commit"),
    # the same Dispatcher on the opt-in aiokafka engine
    ("aiokafka", "after_create"),
    ("aiokafka", "before_commit"),
]


# Anthropic keeps no batch metadata: after a crash its batch is found by its requests
# (Pending while it runs), at the same kill points.
ANTHROPIC_KILL_POINTS = [
    ("faust", "after_ledger", "claude-3-5-haiku-latest"),
    ("faust", "after_upload", "claude-3-5-haiku-latest"),
    ("faust", "after_create", "claude-3-5-haiku-latest"),
    ("faust", "after_publish", "claude-3-5-haiku-latest"),
    ("faust", "before_commit", "claude-3-5-haiku-latest"),
]


@pytest.mark.parametrize(
    ("engine", "crash_at", "model"),
    [(engine, at, "gpt-4o-mini") for engine, at in KILL_POINTS] + ANTHROPIC_KILL_POINTS,
)
async def test_kill_at_each_step_no_loss_no_duplicate(
    engine: str,
    crash_at: str,
    model: str,
    settings: Settings,
    emulator: Any,
    producer_factory: Any,
    consumer_factory: Any,
    tmp_path: Path,
) -> None:
    s = dispatcher_settings(
        settings,
        emulator,
        batch_max_requests=10,
        batch_max_wait_seconds=2,
        dispatcher_engine=engine,
    )
    await ensure_topics(s)
    producer = await producer_factory()
    ids = [f"k-{i}" for i in range(25)]
    await produce(producer, s.requests_topic, ((i, request(i, model=model)) for i in ids))
    batches = await consumer_factory(s.batches_topic, group_id=None)
    crashing = Worker(s, tmp_path / "w1.log", BATCHPIPE_DISPATCHER_CRASH_AT=crash_at)
    assert crashing.wait_exit(60) == 137, crashing.log()
    assert f"at={crash_at}" in crashing.log()
    worker = Worker(s, tmp_path / "w2.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 25)
        await wait_for(_committed_sum(s, 25), 20)
        await asyncio.sleep(1.0)
        records += [r for r in await read_batches(batches, 1, until=lambda r: True)]
    finally:
        worker.stop()
    if crash_at in ("after_create", "after_publish"):
        assert "outcome=republished" in worker.log()
    if crash_at in ("after_ledger", "after_upload"):
        assert "outcome=abandoned" in worker.log()
    await assert_exactly_once(s, emulator, records, ids)


@pytest.mark.parametrize("engine", ["faust", "aiokafka"])
async def test_two_workers_share_the_partitions(
    engine: str,
    settings: Settings,
    emulator: Any,
    producer_factory: Any,
    consumer_factory: Any,
    tmp_path: Path,
) -> None:
    s = dispatcher_settings(
        settings,
        emulator,
        batch_max_requests=10,
        batch_max_wait_seconds=1.5,
        dispatcher_engine=engine,
    )
    await ensure_topics(s)
    producer = await producer_factory()
    batches = await consumer_factory(s.batches_topic, group_id=None)
    ids = [f"w-{i}" for i in range(90)]
    first = Worker(s, tmp_path / "w1.log")
    second: Worker | None = None
    try:
        await produce(producer, s.requests_topic, ((i, request(i)) for i in ids[:30]))
        await wait_for(lambda: "batch.submitted" in first.log(), 30)
        second = Worker(s, tmp_path / "w2.log")  # joins: a rebalance while the first works
        await produce(producer, s.requests_topic, ((i, request(i)) for i in ids[30:60]))
        await wait_for(lambda: _owns_partitions(second), 30)
        await produce(producer, s.requests_topic, ((i, request(i)) for i in ids[60:]))
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 90)
        await wait_for(_committed_sum(s, 90), 20)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert _owns_partitions(first) or "batch.submitted" in first.log()
    assert "batch.submitted" in second.log(), "the second worker took a share of the work"
    await assert_exactly_once(s, emulator, records, ids)


def _owns_partitions(worker: Worker) -> bool:
    assigned = [line for line in worker.log().splitlines() if "dispatcher.assigned" in line]
    return bool(assigned) and "partitions=[]" not in assigned[-1]
