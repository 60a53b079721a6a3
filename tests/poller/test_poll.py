"""poll.py, on the real broker + emulator: many batches followed within the POLL_MAX_RPS cap,
and failed retrieves never drop a batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from batchpipe.shared.providers.openai import make_openai
from tests.support import read_until

from .harness import (
    committed_consumer,
    create_batch,
    lines_for,
    poller_settings,
    publish_batches,
    results_of,
    running_poller,
)

pytestmark = pytest.mark.timeout(120)


async def test_hundred_batches_followed_within_the_rate_cap(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any
) -> None:
    rps = 20.0
    settings = await poller_settings(
        kafka_bootstrap, emulator, poll_interval_seconds=0.5, poll_max_rps=rps
    )
    client = make_openai(settings)
    emulator.set_faults(processing_seconds=4.0)
    batches = await asyncio.gather(
        *(create_batch(client, lines_for(f"b{i}", 2)) for i in range(100))
    )
    producer = await producer_factory()
    await publish_batches(producer, settings, batches)
    results = await committed_consumer(settings, settings.results_topic)
    async with running_poller(settings) as poller:
        retrieves = poller.metrics.retrieves.labels("ok")
        while len(poller.follower.tracked) < 100:
            await asyncio.sleep(0.05)
        start, count0 = time.monotonic(), retrieves._value.get()
        await asyncio.sleep(3.0)
        elapsed, calls = time.monotonic() - start, retrieves._value.get() - count0
        # Uncapped, 100 batches every 0.5 s would be 200 calls/s.
        assert calls <= rps * elapsed + rps, (calls, elapsed)
        assert calls >= rps * elapsed * 0.6, (calls, elapsed)  # and the budget is used
        got = await read_until(results, lambda rs: len(rs) >= 200, timeout=60, settle=0.5)
    assert len({r.key for r in got}) == 200 == len(got)
    await results.stop()
    await client.close()


async def test_retrieve_errors_never_drop_a_batch_and_bad_records_are_dead_lettered(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any
) -> None:
    settings = await poller_settings(kafka_bootstrap, emulator, openai_max_retries=0)
    client = make_openai(settings)
    batch = await create_batch(client, lines_for("flaky", 3))
    producer = await producer_factory()
    await producer.send_and_wait(settings.batches_topic, b"not a batch record", key=b"junk")
    await publish_batches(producer, settings, [batch])
    emulator.set_faults(retrieve_5xx_rate=0.7)  # most retrieves fail, the SDK does not retry
    consumer = await committed_consumer(
        settings, settings.results_topic, settings.dead_letters_topic
    )
    async with running_poller(settings) as poller:
        got = await read_until(consumer, lambda rs: len(rs) >= 4, timeout=40, settle=0.5)
        errors = poller.metrics.retrieves.labels("error")._value.get()
    emulator.set_faults(retrieve_5xx_rate=0.0)
    results = results_of(
        [r for r in got if r.topic == settings.results_topic], settings.results_topic
    )
    assert sorted(r.custom_id for r in results) == ["flaky-0", "flaky-1", "flaky-2"]
    assert {r.status for r in results} == {"succeeded"}
    assert errors >= 1  # transient failures happened and were retried
    dead = [orjson.loads(r.value) for r in got if r.topic == settings.dead_letters_topic]
    assert len(dead) == 1 and dead[0]["source_topic"] == settings.batches_topic
    assert dead[0]["value"] == "not a batch record" and dead[0]["service"] == "poller"
    await consumer.stop()
    await client.close()
