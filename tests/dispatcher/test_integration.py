"""Integration tests: real broker, the OpenAI emulator, ``batchpipe dispatcher`` processes.

Every test checks, from the batch input files themselves, that each produced request is in
exactly one batch (nothing lost, nothing twice) and the emulator saw no duplicate custom_id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchpipe.shared.contracts import DeadLetter, decode
from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import Settings
from tests.dispatcher.support import (
    Worker,
    assert_exactly_once,
    committed_offsets,
    custom_ids_of,
    dispatcher_settings,
    produce,
    read_batches,
    request,
    total,
    wait_for,
)
from tests.support import drain

pytestmark = pytest.mark.slow


async def setup(settings: Settings, emulator: Any, **overrides: Any) -> Settings:
    s = dispatcher_settings(settings, emulator, **overrides)
    await ensure_topics(s)
    return s


@pytest.mark.parametrize("engine", ["faust", "aiokafka"])
async def test_count_cut(
    engine: str,
    settings: Settings,
    emulator: Any,
    producer_factory: Any,
    consumer_factory: Any,
    tmp_path: Path,
) -> None:
    s = await setup(
        settings,
        emulator,
        batch_max_requests=10,
        batch_max_wait_seconds=60.0,
        dispatcher_engine=engine,
    )
    producer = await producer_factory()
    ids = [f"c-{i}" for i in range(30)]
    await produce(producer, s.requests_topic, ((i, request(i)) for i in ids[:29]))
    # a re-submission by the poller: same custom_id scheme, attempt header 2
    await produce(producer, s.requests_topic, [(ids[29], request(ids[29]))], attempt=2)
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 30)
        await wait_for(lambda: _all_committed(s, 30), 20)
    finally:
        worker.stop()
    assert [r.request_count for r in records] == [10, 10, 10], worker.log()
    assert all(r.dispatch_id.startswith("dsp_") and r.input_bytes > 0 for r in records)
    await assert_exactly_once(s, emulator, records, ids)
    (retried,) = [r for r in records if ids[29] in await custom_ids_of(s, [r])]
    assert retried.attempts == {ids[29]: 2}
    assert sum(len(r.attempts) for r in records) == 1
    # the committed offsets passed every dispatch: the ledger entries were tombstoned
    ledger = await consumer_factory(f"{s.requests_topic}.dispatch-ledger", group_id=None)
    values = [r.value for r in await drain(ledger, 1, settle=1.0)]
    assert values.count(None) == 3, values


async def _all_committed(s: Settings, n: int) -> bool:
    offsets = await committed_offsets(s, s.dispatcher_group_id)
    return sum(offsets.values()) == n


async def test_time_cut_with_an_idle_stream(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = await setup(settings, emulator, batch_max_requests=1000, batch_max_wait_seconds=2.0)
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        producer = await producer_factory()
        ids = [f"t-{i}" for i in range(5)]
        await produce(producer, s.requests_topic, ((i, request(i)) for i in ids))
        # nothing else arrives: only the timer can cut this window
        records = await read_batches(batches, 30, until=lambda r: total(r) >= 5)
    finally:
        worker.stop()
    (record,) = records
    assert record.request_count == 5
    assert record.submitted_at - record.window_opened_at >= 1.0
    await assert_exactly_once(s, emulator, records, ids)


async def test_bytes_cut(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = await setup(
        settings,
        emulator,
        batch_max_requests=1000,
        batch_max_bytes=1024,
        batch_max_wait_seconds=3.0,
    )
    producer = await producer_factory()
    ids = [f"b-{i}" for i in range(12)]
    await produce(producer, s.requests_topic, ((i, request(i, pad=200)) for i in ids))
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 12)
    finally:
        worker.stop()
    assert len(records) >= 4
    assert all(r.input_bytes <= 1024 for r in records)
    assert any(r.input_bytes > 1024 - 320 for r in records)  # filled up to the limit
    await assert_exactly_once(s, emulator, records, ids)


async def test_mixed_models_split_and_dead_letters(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = await setup(settings, emulator, batch_max_requests=5, batch_max_wait_seconds=2.0)
    producer = await producer_factory()
    ids = [f"m-{i}" for i in range(17)]
    good = [(i, request(i, model="model-a" if n % 2 else "model-b")) for n, i in enumerate(ids)]
    bad = [
        ("x-1", b"not json at all"),
        ("x-2", orjson.dumps({"hello": "world"})),
        ("x-3", request("x-3", url="/v1/images/generations")),
        (
            "x-4",
            orjson.dumps({**orjson.loads(request("x-4")), "body": {"model": "m", "stream": True}}),
        ),
        ("x-5", orjson.dumps({**orjson.loads(request("x-5")), "body": {"messages": []}})),
        ("x-6", request("x-6", pad=2000)),  # valid (a third model); oversize: see unit tests
    ]
    mixed = good[:8] + bad + good[8:]
    await produce(producer, s.requests_topic, mixed)
    batches = await consumer_factory(s.batches_topic, group_id=None)
    dead = await consumer_factory(s.dead_letters_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 18)
        letters = [decode(DeadLetter, r.value) for r in await drain(dead, 5, timeout=30)]
        await wait_for(lambda: _all_committed(s, len(mixed)), 20)
    finally:
        worker.stop()
    reasons = sorted(letter.reason.split(":")[0] for letter in letters)
    assert reasons == ["no_model", "not_batch_line", "not_json", "stream", "url_not_allowed"]
    assert all(letter.source_topic == s.requests_topic for letter in letters)
    # one model per batch, both models present
    models = {r.model for r in records}
    assert models == {"model-a", "model-b", "gpt-4o-mini"}
    for record in records:
        client_ids = await custom_ids_of(s, [record])
        assert all(ids.index(c) % 2 == (record.model == "model-a") for c in client_ids if c in ids)
    await assert_exactly_once(s, emulator, records, [*ids, "x-6"])


async def test_aborted_transactions_are_not_submitted(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    """The poller re-publishes retries inside transactions: an aborted one must not be read."""
    s = await setup(settings, emulator, batch_max_requests=1000, batch_max_wait_seconds=1.5)
    txn = await producer_factory(transactional_id=f"test-{s.requests_topic}")
    await txn.begin_transaction()
    await produce(txn, s.requests_topic, [("aborted-1", request("aborted-1"))], attempt=1)
    await txn.abort_transaction()
    producer = await producer_factory()
    ids = [f"ok-{i}" for i in range(5)]
    await produce(producer, s.requests_topic, ((i, request(i)) for i in ids))
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 5)
        await asyncio.sleep(2.0)
        records += await read_batches(batches, 1, until=lambda r: True)
    finally:
        worker.stop()
    await assert_exactly_once(s, emulator, records, ids)
