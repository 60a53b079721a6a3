"""lag.py: requests waiting to be batched, from the dispatcher group's committed offsets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from batchpipe.services.poller.lag import RequestsLag, lag_of
from batchpipe.shared.settings import Settings
from tests.conftest import unique


def test_lag_of_counts_uncommitted_partitions_from_log_start() -> None:
    start = {0: 0, 1: 5, 2: 0}
    end = {0: 10, 1: 9, 2: 3}
    assert lag_of([0, 1, 2], start, end, {0: 4, 2: 3}) == (6 + 4 + 0, 1)
    # a commit below the log start (records deleted) counts from the start; beyond the end: 0
    assert lag_of([0, 1], start, end, {0: 12, 1: 2}) == (0 + 4, 0)
    assert lag_of([0], start, end, {0: -1}) == (10, 1)


async def _read(lag: RequestsLag, timeout: float = 20.0) -> dict[str, Any]:
    """A reading with a value (the group coordinator can need a moment on a fresh broker)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await lag.refresh()
        doc = lag.snapshot()
        if doc["waiting"] is not None or asyncio.get_running_loop().time() > deadline:
            return doc
        await asyncio.sleep(0.5)


@pytest.mark.kafka
async def test_lag_follows_the_dispatcher_group(settings: Settings, producer_factory: Any) -> None:
    settings = settings.model_copy(update={"dispatcher_group_id": unique("dispatcher")})
    producer = await producer_factory()
    for i in range(9):
        await producer.send_and_wait(settings.requests_topic, b"{}", partition=i % 3)
    lag = RequestsLag(settings, min_interval=0.0)
    try:
        doc = await _read(lag)
        assert doc["waiting"] == 9 and doc["error"] is None
        assert doc["partitions"] == 3 and doc["partitions_uncommitted"] == 3
        assert doc["group"] == settings.dispatcher_group_id

        from batchpipe.shared.kafka import make_consumer

        committer = make_consumer(settings, group_id=settings.dispatcher_group_id)
        await committer.start()
        try:
            tp = TopicPartition(settings.requests_topic, 0)
            committer.assign([tp])
            await committer.commit({tp: OffsetAndMetadata(2, "")})
        finally:
            await committer.stop()
        doc = await _read(lag)
        assert doc["waiting"] == 7 and doc["partitions_uncommitted"] == 2
    finally:
        await lag.close()


@pytest.mark.kafka
async def test_unreadable_lag_is_unknown_and_snapshot_never_waits(settings: Settings) -> None:
    missing = settings.model_copy(update={"requests_topic": unique("no-such-topic")})
    lag = RequestsLag(missing, min_interval=60.0, timeout=3.0)
    try:
        first = lag.snapshot()  # returns at once and starts a refresh in the background
        assert first["waiting"] is None and first["error"] == "not read yet"
        task = lag._task
        assert task is not None
        await asyncio.wait_for(task, 10)
        doc = lag.snapshot()  # within min_interval: no new refresh
        assert lag._task is task
        assert doc["waiting"] is None and doc["error"] and "not found" in doc["error"]
    finally:
        await lag.close()


async def test_unreachable_broker_is_unknown() -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", requests_topic="requests")
    lag = RequestsLag(settings, timeout=2.0)
    await lag.refresh()
    doc = lag.snapshot()
    await lag.close()
    assert doc["waiting"] is None and doc["error"]
