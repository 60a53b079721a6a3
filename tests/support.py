"""Small helpers shared by tests: read messages until a condition holds, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

Records = list[ConsumerRecord[bytes, bytes]]


async def read_until(
    consumer: AIOKafkaConsumer,
    done: Callable[[Records], bool],
    *,
    timeout: float = 30.0,
    settle: float = 0.0,
) -> Records:
    """Read records until ``done(records)`` is true (or fail after ``timeout``); then keep
    reading for ``settle`` seconds so that a test can see extra, unwanted records too."""
    records: Records = []
    deadline = time.monotonic() + timeout
    while not done(records):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"condition not met within {timeout}s; got {len(records)}")
        batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
        for part in batch.values():
            records.extend(part)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        batch = await consumer.getmany(timeout_ms=200)
        for part in batch.values():
            records.extend(part)
        await asyncio.sleep(0)
    return records


async def drain(
    consumer: AIOKafkaConsumer, count: int, *, timeout: float = 20.0, settle: float = 0.0
) -> Records:
    """Read ``count`` records (or fail after ``timeout``), then ``settle`` seconds more."""
    return await read_until(consumer, lambda rs: len(rs) >= count, timeout=timeout, settle=settle)
