"""Webhooks with two pollers on the real broker and the emulator sending its signed events:
every event goes to poller B, and the batches poller A owns are published as promptly as B's
(the nudge crosses over the nudges topic) while the poll interval is 300 s; an event that
arrives before its batch's record is applied when the record is read; an event for an unknown
batch is acknowledged and changes nothing; a lost event only waits for the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from batchpipe.devtools.emulator.webhooks import batch_event, new_secret, signed_headers
from batchpipe.devtools.local_kafka import free_port
from batchpipe.services.poller.app import Poller
from batchpipe.services.poller.webhooks import WEBHOOK_PATH
from batchpipe.shared.contracts import BatchRecord, key_bytes
from batchpipe.shared.ops_http import serve_in_background
from batchpipe.shared.partitioner import partition_of
from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import Settings
from tests.support import read_until

from .harness import (
    committed_consumer,
    create_batch,
    lines_for,
    poller_settings,
    publish_batches,
    results_of,
)

pytestmark = pytest.mark.timeout(180)

SECRET = new_secret()
LINES = 4


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Poller]:
    """A poller with its HTTP port, as ``batchpipe poller`` runs it."""
    poller = Poller(settings)
    server, serving_task = await serve_in_background(
        poller.http_app(), "127.0.0.1", settings.poller_http_port
    )
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        poller.stopping.set()
        await asyncio.wait_for(task, 30)
        server.should_exit = True
        await serving_task


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(0.05)


def owner(batch_id: str, pollers: dict[str, Poller], partitions: int) -> str:
    partition = partition_of(key_bytes(batch_id), list(range(partitions)))
    return next(name for name, p in pollers.items() if partition in p.publishers)


async def ended(emulator: Any, batch_id: str, timeout: float = 30.0) -> float:
    """When the batch ended, asked of the emulator's own route (no retrieve call counted)."""
    deadline = time.monotonic() + timeout
    while (at := emulator.ended_at(batch_id)) is None:
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        await asyncio.sleep(0.05)
    return float(at)


def nudges(poller: Poller, effect: str) -> float:
    value = poller.metrics.registry.get_sample_value(
        "poller_webhook_nudges_total", {"effect": effect}
    )
    return value or 0.0


async def test_two_pollers_every_event_to_one_owner_of_each_batch_acts_promptly(
    kafka_bootstrap: str, emulator_factory: Any, producer_factory: Any
) -> None:
    port_b = free_port()
    emulator = emulator_factory(
        processing_seconds=4.0,
        webhook_url=f"http://127.0.0.1:{port_b}{WEBHOOK_PATH}",
        webhook_secret=SECRET,
        webhook_retry_delays=[0.0, 0.5, 1.0, 2.0],
    )
    base = await poller_settings(
        kafka_bootstrap,
        emulator,
        poll_interval_seconds=300.0,
        openai_webhook_secret=SecretStr(SECRET),
    )
    settings_a = base.model_copy(update={"poller_http_port": free_port()})
    settings_b = base.model_copy(update={"poller_http_port": port_b})
    client = make_openai(base)
    producer = await producer_factory()
    consumer = await committed_consumer(base, base.results_topic)
    parts = base.topic_partitions
    async with serving(settings_a) as a:
        await until(lambda: len(a.publishers) == parts, 30, "A did not get the partitions")
        async with serving(settings_b) as b:
            pollers = {"A": a, "B": b}
            await until(
                lambda: (
                    a.publishers and b.publishers and len(a.publishers) + len(b.publishers) == parts
                ),
                45,
                "the partitions were not shared between A and B",
            )
            await until(lambda: a.webhooks is not None and a.webhooks.ready.is_set(), 10, "A")
            await until(lambda: b.webhooks is not None and b.webhooks.ready.is_set(), 10, "B")
            # batches until A owns two and B one (every event is delivered to B)
            records: list[BatchRecord] = []
            owners: dict[str, str] = {}
            created = 0
            for i in range(40):
                record = await create_batch(client, lines_for(f"w{i}", LINES))
                created += 1
                who = owner(record.batch_id, pollers, parts)
                if list(owners.values()).count(who) >= (2 if who == "A" else 1):
                    continue
                owners[record.batch_id] = who
                records.append(record)
                if len(records) == 3:
                    break
            assert sorted(owners.values()) == ["A", "A", "B"]
            await publish_batches(producer, base, records)
            ends = {record.batch_id: await ended(emulator, record.batch_id) for record in records}
            got = await read_until(
                consumer, lambda rs: len(rs) >= LINES * len(records), timeout=30, settle=1.0
            )
            seen_at = time.time()
            results = results_of(got, base.results_topic)
            assert len(results) == LINES * len(records) == len({r.custom_id for r in results})
            # far sooner than the 300 s poll interval, whichever instance owns the batch
            assert seen_at - max(ends.values()) < 20
            assert nudges(a, "hurried") >= 2  # A hurried its two batches from B's nudges
            stats = emulator.stats()
            await until(
                lambda: emulator.stats()["webhooks"]["delivered"] == created, 20, "deliveries"
            )
            # about one retrieve per batch: the one its event caused (a first poll, jittered
            # over the 300 s interval, may come before the batch ends)
            assert stats["calls"]["openai.batches.retrieve"] <= 2 * len(records)

            # an event before its batch's record: remembered from the nudge by the owner
            early = await create_batch(client, lines_for("early", LINES))
            await ended(emulator, early.batch_id)
            who = owner(early.batch_id, pollers, parts)
            await until(
                lambda: emulator.stats()["webhooks"]["delivered"] == created + 1, 10, "event"
            )
            memory = pollers[who].webhooks
            assert memory is not None
            await until(lambda: early.batch_id in memory.recent, 10, "the owner learnt no event")
            published = time.time()
            await publish_batches(producer, base, [early])
            late = await read_until(consumer, lambda rs: len(rs) >= LINES, timeout=20)
            assert {r.batch_id for r in results_of(late, base.results_topic)} == {early.batch_id}
            assert time.time() - published < 15

            # an unknown batch: acknowledged, nothing retrieved, nothing published
            before = emulator.stats()["calls"]["openai.batches.retrieve"]
            body = batch_event("batch_unknown_to_everyone", "completed")
            async with httpx.AsyncClient() as http:
                for poller_settings_ in (settings_a, settings_b):
                    answer = await http.post(
                        f"http://127.0.0.1:{poller_settings_.poller_http_port}{WEBHOOK_PATH}",
                        content=body,
                        headers=signed_headers(
                            SECRET, f"wh_unknown_{poller_settings_.poller_http_port}", body
                        ),
                    )
                    assert answer.status_code == 200, answer.text
                forged = await http.post(
                    f"http://127.0.0.1:{port_b}{WEBHOOK_PATH}",
                    content=body,
                    headers=signed_headers(new_secret(), "wh_forged", body),
                )
                assert forged.status_code == 400
            await asyncio.sleep(1.5)
            extra = (await consumer.getmany(timeout_ms=500)).values()
            assert not [r for part in extra for r in part]
            assert emulator.stats()["calls"]["openai.batches.retrieve"] == before
            assert not a.follower.tracked and not b.follower.tracked
    await consumer.stop()
    await client.close()


async def test_a_lost_webhook_only_waits_for_the_next_poll(
    kafka_bootstrap: str, emulator_factory: Any, producer_factory: Any
) -> None:
    port = free_port()
    emulator = emulator_factory(
        processing_seconds=1.0,
        webhook_url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        webhook_secret=SECRET,
        webhook_drop_rate=1.0,
    )
    settings = await poller_settings(
        kafka_bootstrap,
        emulator,
        poll_interval_seconds=3.0,
        poller_http_port=port,
        openai_webhook_secret=SecretStr(SECRET),
    )
    client = make_openai(settings)
    producer = await producer_factory()
    consumer = await committed_consumer(settings, settings.results_topic)
    async with serving(settings) as poller:
        await until(lambda: len(poller.publishers) == settings.topic_partitions, 30, "partitions")
        record = await create_batch(client, lines_for("lost", LINES))
        await publish_batches(producer, settings, [record])
        got = await read_until(consumer, lambda rs: len(rs) >= LINES, timeout=30)
        assert {r.custom_id for r in results_of(got, settings.results_topic)} == {
            f"lost-{i}" for i in range(LINES)
        }
    stats = emulator.stats()["webhooks"]
    assert stats["dropped"] == 1 and stats["delivered"] == 0
    await consumer.stop()
    await client.close()
