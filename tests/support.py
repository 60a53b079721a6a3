"""Small helpers shared by tests: read a known number of messages with a deadline."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


async def drain(
    consumer: AIOKafkaConsumer, count: int, *, timeout: float = 20.0, settle: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records (or fail after ``timeout``); then keep reading for ``settle``
    seconds so that a test can see extra, unwanted records (duplicates) too."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(records)} of {count} records within {timeout}s")
        batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
        for part in batch.values():
            records.extend(part)
    end = time.monotonic() + settle
    while time.monotonic() < end:
        batch = await consumer.getmany(timeout_ms=200)
        for part in batch.values():
            records.extend(part)
        await asyncio.sleep(0)
    return records
