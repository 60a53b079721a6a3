"""Integration harness: real broker + emulator, batches created with the official SDK, the
poller running in-process (or as a subprocess), results read with read_committed consumers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from openai import AsyncOpenAI

from batchpipe.devtools.local_kafka import free_port
from batchpipe.services.poller.app import Poller
from batchpipe.shared.contracts import BatchRecord, ResultMessage, decode, encode, key_bytes
from batchpipe.shared.kafka import ensure_topics, make_consumer
from batchpipe.shared.settings import Settings
from tests.conftest import make_test_settings

from .helpers import request_line

TERMINAL = {"completed", "failed", "expired", "cancelled"}


async def poller_settings(bootstrap: str, emulator: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_base_url": emulator.base_url,
        "openai_api_key": emulator.api_key,
        "poll_interval_seconds": 0.3,
        "poll_max_rps": 100.0,
        "poller_state_topic": f"poller-state-{uuid.uuid4().hex[:12]}",
        "poller_http_port": free_port(),
        "openai_max_retries": 2,
    }
    values.update(overrides)
    settings = make_test_settings(bootstrap, **values)
    await ensure_topics(settings)
    return settings


def lines_for(prefix: str, count: int) -> list[dict[str, Any]]:
    return [request_line(f"{prefix}-{i}", f"question {i} of {prefix}") for i in range(count)]


async def create_batch(
    client: AsyncOpenAI,
    lines: Sequence[dict[str, Any] | bytes],
    *,
    attempts: dict[str, int] | None = None,
) -> BatchRecord:
    content = b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )
    uploaded = await client.files.create(file=("input.jsonl", content), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return BatchRecord(
        batch_id=batch.id,
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_count=len(lines),
        dispatch_id=f"test-{uuid.uuid4().hex[:8]}",
        attempts=attempts or {},
        input_bytes=len(content),
        window_opened_at=time.time(),
        submitted_at=batch.created_at,
    )


async def wait_ended(client: AsyncOpenAI, batch_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch.status
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not end within {timeout}s")


async def publish_batches(
    producer: AIOKafkaProducer,
    settings: Settings,
    records: Sequence[BatchRecord],
    partition: int | None = None,
) -> None:
    for record in records:
        await producer.send(
            settings.batches_topic,
            encode(record),
            key=key_bytes(record.batch_id),
            partition=partition,
        )
    await producer.flush()


@contextlib.asynccontextmanager
async def running_poller(settings: Settings, timeout: float = 30.0) -> AsyncIterator[Poller]:
    poller = Poller(settings)
    task = asyncio.create_task(poller.run())
    deadline = time.monotonic() + timeout
    while len(poller.publishers) < settings.topic_partitions:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "poller did not get its partitions"
        await asyncio.sleep(0.05)
    try:
        yield poller
    finally:
        poller.stopping.set()
        await asyncio.wait_for(task, 30)


async def committed_consumer(settings: Settings, *topics: str, **kw: Any) -> AIOKafkaConsumer:
    consumer = make_consumer(settings, *topics, group_id=None, **kw)
    await consumer.start()
    return consumer


def results_of(records: Sequence[Any], topic: str) -> list[ResultMessage]:
    return [decode(ResultMessage, r.value) for r in records if r.topic == topic]
