"""Integration tests: real broker, the OpenAI emulator, ``batchpipe dispatcher`` processes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.kafka import ensure_topics
from shared.settings import Settings
from tests.dispatcher.support import (
    Worker,
    custom_ids_of,
    dispatcher_settings,
    produce,
    read_batches,
    request,
)

pytestmark = pytest.mark.slow


def total(records: list[Any]) -> int:
    return sum(r.request_count for r in {r.batch_id: r for r in records}.values())


async def test_count_cut(
    settings: Settings, emulator: Any, producer_factory: Any, consumer_factory: Any, tmp_path: Path
) -> None:
    s = dispatcher_settings(settings, emulator, batch_max_requests=10, batch_max_wait_seconds=60.0)
    await ensure_topics(s)
    producer = await producer_factory()
    ids = [f"c-{i}" for i in range(30)]
    await produce(producer, s.requests_topic, ((i, request(i)) for i in ids))
    batches = await consumer_factory(s.batches_topic, group_id=None)
    worker = Worker(s, tmp_path / "w.log")
    try:
        records = await read_batches(batches, 60, until=lambda r: total(r) >= 30)
    finally:
        worker.stop()
    assert [r.request_count for r in records] == [10, 10, 10], worker.log()
    assert all(r.dispatch_id.startswith("dsp_") for r in records)
    got = await custom_ids_of(s, records)
    assert Counter(got) == Counter(ids)
    assert emulator.stats()["duplicate_custom_ids"] == 0
