"""Each contract produced and consumed through the shared helpers on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from batchpipe.shared.contracts import (
    BatchRecord,
    DeadLetter,
    RequestLine,
    ResultMessage,
    attempt_from_headers,
    attempt_headers,
    decode,
    encode,
    key_bytes,
)
from batchpipe.shared.kafka import ensure_topics, make_admin, topic_exists
from batchpipe.shared.settings import Settings
from tests.conftest import ConsumerFactory, ProducerFactory
from tests.support import drain

LINE = RequestLine(
    custom_id="req-1",
    url="/v1/chat/completions",
    body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
)


async def test_ensure_topics_is_idempotent_and_uses_the_partition_count(
    settings: Settings,
) -> None:
    assert await ensure_topics(settings) == []
    admin: AIOKafkaAdminClient = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([settings.requests_topic])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 3
    assert await topic_exists(settings, settings.requests_topic)
    assert not await topic_exists(settings, "no-such-topic-" + uuid.uuid4().hex)


async def test_request_line_with_attempt_header_round_trips(
    settings: Settings, producer_factory: ProducerFactory, consumer_factory: ConsumerFactory
) -> None:
    producer = await producer_factory()
    await producer.send_and_wait(
        settings.requests_topic,
        encode(LINE),
        key=key_bytes(LINE.custom_id),
        headers=attempt_headers(2),
    )
    consumer = await consumer_factory(settings.requests_topic)
    [record] = await drain(consumer, 1)
    assert record.key == b"req-1"
    assert decode(RequestLine, record.value) == LINE
    assert attempt_from_headers(record.headers) == 2


async def test_batches_results_and_dead_letters_round_trip(
    settings: Settings, producer_factory: ProducerFactory, consumer_factory: ConsumerFactory
) -> None:
    batch = BatchRecord(
        batch_id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_count=2,
        dispatch_id="d1",
        attempts={"req-2": 1},
        input_bytes=400,
        window_opened_at=1.0,
        submitted_at=2,
    )
    result = ResultMessage(
        custom_id="req-1",
        status="failed",
        batch_id="batch_1",
        error={"code": "rate_limit_exceeded", "message": "slow down"},
        attempts=3,
        model="gpt-4o-mini",
        submitted_at=2,
        completed_at=3,
    )
    dead = DeadLetter.of(
        source_topic=settings.requests_topic,
        partition=0,
        offset=5,
        key=b"k",
        value=b"{oops",
        reason="not JSON",
        service="dispatcher",
    )
    producer = await producer_factory()
    await producer.send_and_wait(settings.batches_topic, encode(batch), key=b"batch_1")
    await producer.send_and_wait(settings.results_topic, encode(result), key=b"req-1")
    await producer.send_and_wait(settings.dead_letters_topic, encode(dead), key=b"k")
    consumer = await consumer_factory(
        settings.batches_topic, settings.results_topic, settings.dead_letters_topic
    )
    records = {r.topic: r for r in await drain(consumer, 3)}
    assert decode(BatchRecord, records[settings.batches_topic].value) == batch
    assert decode(ResultMessage, records[settings.results_topic].value) == result
    assert decode(DeadLetter, records[settings.dead_letters_topic].value) == dead


async def test_read_committed_sees_committed_transactions_only(
    settings: Settings, producer_factory: ProducerFactory, consumer_factory: ConsumerFactory
) -> None:
    producer = await producer_factory(transactional_id=f"test-{uuid.uuid4().hex}")
    async with producer.transaction():
        await producer.send(settings.results_topic, b'{"n": "committed"}', key=b"a")
    await producer.begin_transaction()
    await producer.send(settings.results_topic, b'{"n": "aborted"}', key=b"b")
    await producer.abort_transaction()
    async with producer.transaction():
        await producer.send(settings.results_topic, b'{"n": "after"}', key=b"c")

    committed = await consumer_factory(settings.results_topic)
    seen = [r.value for r in await drain(committed, 2, settle=1.0)]
    # keys a and c may land on different partitions, so only the set is ordered-free
    assert sorted(seen) == [b'{"n": "after"}', b'{"n": "committed"}']

    uncommitted = await consumer_factory(settings.results_topic, isolation_level="read_uncommitted")
    everything = [r.value for r in await drain(uncommitted, 3, settle=0.5)]
    assert b'{"n": "aborted"}' in everything


@pytest.mark.parametrize("count", [200])
async def test_idempotent_producer_keeps_per_key_order(
    settings: Settings,
    producer_factory: ProducerFactory,
    consumer_factory: ConsumerFactory,
    count: int,
) -> None:
    producer = await producer_factory()
    futures = [
        await producer.send(settings.requests_topic, str(i).encode(), key=b"same-key")
        for i in range(count)
    ]
    for future in futures:
        await future
    consumer = await consumer_factory(settings.requests_topic)
    values = [int(r.value) for r in await drain(consumer, count, settle=0.5)]
    assert values == list(range(count))


async def test_concurrent_ensure_topics_report_one_creation(settings: Settings) -> None:
    """Racing creators: one reports the creation (aiokafka returns errors, not raises)."""
    from batchpipe.shared.topics import TopicSpec

    spec = TopicSpec(f"race-{uuid.uuid4().hex[:12]}", 3, 1, {})
    created = await asyncio.gather(*(ensure_topics(settings, [spec]) for _ in range(3)))
    assert sorted(created) == [[], [], [spec.name]]
