"""ingest's group commit without a broker: POSTs in flight share record batches, a POST is
answered only when every batch holding one of its records is acknowledged, and anything
short of that (a failed batch, a timeout, a backlog) is ``Unavailable``."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from batchpipe.services.ingest.publish import (
    MAX_BACKLOG_BATCHES,
    GroupCommit,
    Publisher,
    Unavailable,
)
from batchpipe.shared.partitioner import partition_of
from tests.conftest import make_test_settings


class FakeProducer:
    """``create_batch``/``send_batch``/``partitions_for`` of aiokafka's producer; every handed
    batch waits in ``sent`` for the test to acknowledge (or fail) it."""

    def __init__(self, partitions: int = 2) -> None:
        self.partitions = set(range(partitions))
        self.sent: list[tuple[int, BatchBuilder, asyncio.Future[Any]]] = []
        self.ticks: list[int] = []  # the loop iteration of each send_batch
        self.tick = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16 * 1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        assert batch.closed()  # handed over closed: its size is final
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, batch, future))
        self.ticks.append(self.tick)
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    def ack_all(self, error: BaseException | None = None) -> None:
        for _, _, future in self.sent:
            if not future.done():
                future.set_exception(error) if error else future.set_result(None)


def publisher(timeout: float = 5.0) -> tuple[Publisher, FakeProducer]:
    settings = make_test_settings("127.0.0.1:1").model_copy(
        update={"ingest_publish_timeout_seconds": timeout}
    )
    pub = Publisher(settings)
    fake = FakeProducer()
    pub._producer = fake
    pub._group = GroupCommit(fake, settings.requests_topic)
    return pub, fake


def records(prefix: str, n: int) -> deque[tuple[bytes, bytes]]:
    return deque((f"{prefix}-{i}".encode(), b'{"x":1}') for i in range(n))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_posts_in_flight_share_batches_and_wait_for_every_ack() -> None:
    pub, fake = publisher()
    first = asyncio.create_task(pub.publish(records("a", 20)))
    await settle()
    assert len(fake.sent) == 2  # one batch per partition, handed over at once
    # While those are in flight, two more POSTs fill the next batches together.
    second = asyncio.create_task(pub.publish(records("b", 20)))
    third = asyncio.create_task(pub.publish(records("c", 20)))
    await settle()
    assert len(fake.sent) == 2 and not first.done()
    fake.ack_all()
    await first
    await settle()
    assert len(fake.sent) == 4 and not second.done() and not third.done()
    handed = [b for _, b, _ in fake.sent[2:]]
    assert sum(b.record_count() for b in handed) == 40  # b's and c's records, together
    fake.ack_all()
    await asyncio.gather(second, third)
    for partition, batch, _ in fake.sent:  # each record on its key's partition
        assert batch.record_count() > 0 and partition in (0, 1)
    assert partition_of(b"a-0", [0, 1]) in {p for p, _, _ in fake.sent[:2]}


async def test_a_failed_batch_is_unavailable_for_its_posts_only() -> None:
    pub, fake = publisher()
    first = asyncio.create_task(pub.publish(records("a", 10)))
    await settle()
    fake.sent[0][2].set_exception(RuntimeError("broker said no"))
    fake.sent[1][2].set_result(None)
    with pytest.raises(Unavailable, match="RuntimeError"):
        await first
    second = asyncio.create_task(pub.publish(records("b", 10)))
    await settle()
    fake.ack_all()
    await second


async def test_no_ack_in_time_is_unavailable() -> None:
    pub, fake = publisher(timeout=0.05)
    with pytest.raises(Unavailable, match="did not acknowledge within"):
        await pub.publish(records("a", 5))
    fake.ack_all()


async def test_a_backlog_refuses_new_posts_at_once() -> None:
    pub, fake = publisher()
    # Nothing is acknowledged: full batches pile up behind the first ones.
    big = deque((f"k{i}".encode(), b"v" * 4000) for i in range(4 * (MAX_BACKLOG_BATCHES + 4)))
    stuck = asyncio.create_task(pub.publish(big))
    await settle()
    with pytest.raises(Unavailable, match="not keeping up"):
        await pub.publish(records("late", 1))
    fake.ack_all()
    for _ in range(200):
        await settle()
        fake.ack_all()
        if stuck.done():
            break
    await stuck


async def test_not_connected_is_unavailable() -> None:
    pub = Publisher(make_test_settings("127.0.0.1:1"))
    with pytest.raises(Unavailable, match="not connected"):
        await pub.publish(records("a", 1))


async def test_partitions_whose_turn_came_together_are_handed_over_together() -> None:
    pub, fake = publisher()
    loop = asyncio.get_running_loop()

    def count() -> None:  # one increment per loop iteration
        fake.tick += 1
        loop.call_soon(count)

    loop.call_soon(count)
    first = asyncio.create_task(pub.publish(records("a", 20)))
    await settle()
    second = asyncio.create_task(pub.publish(records("b", 20)))
    await settle()
    fake.ack_all()
    await first
    await settle()
    assert len(fake.sent) == 4
    # Both partitions' next batches left in one iteration: one produce request, not two.
    assert fake.ticks[0] == fake.ticks[1] and fake.ticks[2] == fake.ticks[3]
    fake.ack_all()
    await second
