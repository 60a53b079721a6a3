"""The poller process: consume ``batches``, follow each batch, publish its results exactly once.

The wiring of the step modules, plus reading ``batches`` records:

- at start the poller ensures its state topic (``shared.topics.poller_state_spec``);
- the ``batches`` consumer (group ``batchpipe-poller.<topic>``, read_committed, no auto
  commit) feeds ``poll.Follower``; a rebalance listener gives each assigned partition a
  ``publisher.PartitionPublisher`` (transactional producer + progress) before any of its
  records is handled (records fetched earlier are read again); an unreadable record is
  dead-lettered;
- ``Follower`` retrieves batches at the allowed pace and, when one is finished, this module
  streams its emissions (``results.py``) through the partition's publisher;
- ``/status``, ``/healthz``, ``/readyz`` and ``/metrics`` are served on ``POLLER_HTTP_PORT``,
  and ``POST /webhooks/openai`` when ``OPENAI_WEBHOOK_SECRET`` is set (``webhooks.py``: a
  batch's end event makes its owner retrieve it at once); what the published results cost is
  counted by ``costs.PollerCosts`` (``/status``'s ``costs``), the requests waiting to be
  batched by ``lag.RequestsLag`` (``/status``'s ``requests_waiting``);
- ``/`` is the status page: ``static/index.html`` with its CSS and JS under ``/static/``,
  which render ``/status`` and fetch it again every second or two (no build step, nothing
  loaded from elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError
from fastapi import FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from batchpipe.services.poller.costs import PollerCosts
from batchpipe.services.poller.lag import RequestsLag
from batchpipe.services.poller.poll import Follower, Tracked
from batchpipe.services.poller.publisher import CrashAfter, PartitionPublisher, group_id
from batchpipe.services.poller.results import Emission, emissions
from batchpipe.services.poller.schedule import PollSchedule, RetrievePacer, TokenBucket
from batchpipe.services.poller.sizing import MessageLimits
from batchpipe.services.poller.status import PollerMetrics, status_snapshot
from batchpipe.services.poller.webhooks import Webhooks
from batchpipe.shared.contracts import BatchRecord, DeadLetter, decode, encode, now_unix
from batchpipe.shared.costs import prices_of
from batchpipe.shared.kafka import (
    ensure_topics,
    group_instance_id,
    make_consumer,
    topic_exists,
)
from batchpipe.shared.logs import get_logger
from batchpipe.shared.ops_http import json_response, ops_router
from batchpipe.shared.providers.base import BatchOutcome
from batchpipe.shared.providers.registry import Providers, make_providers
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import batch_nudges_spec, poller_state_spec

log = get_logger(__name__)

SERVICE = "poller"
STATIC = Path(__file__).with_name("static")
UNREADABLE_BATCH_RECORD = "unreadable_batch_record"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, poller: Poller) -> None:
        self.poller = poller

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.poller.release([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.poller.acquire([tp.partition for tp in assigned])


class Poller:
    """One poller instance (start with ``run()``; stop by setting ``stopping``)."""

    def __init__(self, settings: Settings, providers: Providers | None = None) -> None:
        self.settings = settings
        self.providers = providers or make_providers(settings)
        self.publishers: dict[int, PartitionPublisher] = {}
        self.crash = CrashAfter(settings.poller_crash_after_results)
        schedule = PollSchedule(settings.poll_interval_seconds)
        bucket = TokenBucket(settings.poll_max_rps)
        self.follower = Follower(
            self.providers,
            RetrievePacer(schedule, bucket),
            self._finished,
            concurrency=settings.poller_retrieve_concurrency,
            on_retrieve=lambda outcome: self.metrics.retrieves.labels(outcome).inc(),
        )
        self.metrics = PollerMetrics(lambda: list(self.follower.tracked.values()))
        self.costs = PollerCosts(self.metrics.registry, prices_of(settings))
        self.webhooks = (
            None
            if settings.openai_webhook_secret is None
            else Webhooks(settings, self.follower.hurry, self.metrics.registry)
        )
        self.requests_lag = RequestsLag(settings)
        self.stopping = asyncio.Event()
        self.ready = False
        self.assigned = False  # a first partition assignment (possibly empty) went through
        self._state_partitions = settings.topic_partitions
        self._consumer: AIOKafkaConsumer | None = None

    # --- partitions ---------------------------------------------------------------------
    async def acquire(self, partitions: list[int]) -> None:
        new = [
            PartitionPublisher(self.settings, p, self._state_partitions, self.crash)
            for p in partitions
            if p not in self.publishers
        ]
        await asyncio.gather(*(publisher.start() for publisher in new))
        for publisher in new:
            self.publishers[publisher.partition] = publisher
        self.assigned = True
        log.info("partitions.assigned", partitions=sorted(self.publishers))

    async def release(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.follower.forget_partition(partition)
            publisher = self.publishers.pop(partition, None)
            if publisher is not None:
                async with publisher.lock:  # let a running transaction finish first
                    pass
                await publisher.stop()
        log.info("partitions.revoked", partitions=sorted(partitions))

    # --- batches ------------------------------------------------------------------------
    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, records in fetched.items():
                publisher = self.publishers.get(tp.partition)
                if publisher is None:
                    # Fetched while the partition's publisher is still starting (aiokafka
                    # fetches during the assignment callback): read these records again later.
                    with contextlib.suppress(IllegalStateError, AssertionError):
                        consumer.seek(tp, records[0].offset)
                    continue
                dead: list[tuple[str, bytes | None, bytes]] = []
                skipped = False
                for msg in records:
                    try:
                        record = decode(BatchRecord, msg.value or b"")
                    except ValueError as exc:
                        letter = DeadLetter.of(
                            source_topic=tp.topic,
                            partition=tp.partition,
                            offset=msg.offset,
                            key=msg.key,
                            value=msg.value,
                            reason=f"unreadable batch record: {exc}"[:2000],
                            service=SERVICE,
                        )
                        dead.append((self.settings.dead_letters_topic, msg.key, encode(letter)))
                        log.error(
                            "batch_record.dead_lettered",
                            partition=tp.partition,
                            offset=msg.offset,
                            error=str(exc)[:300],
                        )
                        publisher.offsets.skip(msg.offset)
                        continue
                    batch_id = record.batch_id
                    if batch_id in publisher.done or batch_id in self.follower.tracked:
                        publisher.offsets.skip(msg.offset)  # finished, or a duplicate record
                        skipped = True
                        continue
                    publisher.offsets.track(msg.offset, batch_id)
                    resumed = batch_id in publisher.progress
                    self.follower.follow(
                        Tracked(record=record, partition=tp.partition, offset=msg.offset),
                        delay=0.0 if resumed else None,
                    )
                    if self.webhooks is not None:
                        self.webhooks.following(batch_id)
                if dead or skipped:
                    await publisher.commit_skipped(dead)
                    self.metrics.count_dead_letters(UNREADABLE_BATCH_RECORD, len(dead))

    async def _finished(self, tracked: Tracked, outcome: BatchOutcome) -> None:
        publisher = self.publishers.get(tracked.partition)
        if publisher is None:
            return  # partition revoked meanwhile: its new owner follows the batch
        record = tracked.record
        stream = emissions(
            record,
            outcome,
            self.providers.get(record.provider),
            max_attempts=self.settings.max_attempts,
            now=now_unix(),
            limits=MessageLimits.from_settings(self.settings),
        )
        await publisher.publish(
            record.batch_id,
            tracked.offset,
            outcome.status,
            stream,
            lambda chunk: self._count(record, chunk),
        )
        self.metrics.batches_finished.labels(outcome.status).inc()
        if outcome.finished_at:
            self.metrics.publish_lag.observe(max(0.0, time.time() - outcome.finished_at))

    def _count(self, record: BatchRecord, chunk: list[Emission]) -> None:
        self.metrics.count_chunk(record.model, chunk)
        self.costs.count(record, chunk)

    # --- HTTP ---------------------------------------------------------------------------
    def http_app(self) -> FastAPI:
        async def kafka_ready() -> bool:
            return await topic_exists(self.settings, self.settings.batches_topic)

        async def started() -> bool:
            return self.ready and self.assigned

        checks = {"kafka": kafka_ready, "consumer": started}
        app = FastAPI(title="batchpipe poller", docs_url=None, redoc_url=None, openapi_url=None)
        if self.webhooks is not None:
            webhooks = self.webhooks

            async def nudges_ready() -> bool:
                return webhooks.ready.is_set()

            checks["webhooks"] = nudges_ready
            app.include_router(webhooks.router())
        app.include_router(ops_router(checks, self.metrics.registry))

        @app.get("/status", summary="In-flight batches and totals")
        async def status() -> Response:
            doc = status_snapshot(self.follower.tracked, self.metrics)
            doc["requests_waiting"] = self.requests_lag.snapshot()
            doc["costs"] = self.costs.snapshot()
            return json_response(doc)

        @app.get("/", summary="The status page", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
        return app

    # --- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until ``stopping`` is set; then stop cleanly (open transactions are aborted,
        progress already committed is kept)."""
        settings = self.settings
        own = [poller_state_spec(settings)]
        if self.webhooks is not None:
            own.append(batch_nudges_spec(settings))
        await ensure_topics(settings, own)
        self._state_partitions = await self._partition_count(settings.poller_state_topic)
        consumer = make_consumer(
            settings,
            group_id=group_id(settings),
            max_poll_interval_ms=600_000,
            group_instance_id=group_instance_id(settings.poller_group_instance_id),
        )
        consumer.subscribe([settings.batches_topic], listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        self.ready = True
        follow = asyncio.create_task(self.follower.run(), name="poller-follow")
        consume = asyncio.create_task(self._consume(consumer), name="poller-consume")
        stop = asyncio.create_task(self.stopping.wait(), name="poller-stop")
        tasks = {follow, consume, stop}
        if self.webhooks is not None:
            tasks.add(asyncio.create_task(self.webhooks.run(), name="poller-webhooks"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.ready = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()
            for partition in list(self.publishers):
                await self.publishers.pop(partition).stop()
            await self.providers.close()
            await self.requests_lag.close()
            log.info("poller.stopped")

    async def _partition_count(self, topic: str) -> int:
        consumer = make_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            for _ in range(50):
                await consumer.topics()  # refreshes the metadata
                parts = consumer.partitions_for_topic(topic)
                if parts:
                    return len(parts)
                await asyncio.sleep(0.1)
            return self.settings.topic_partitions
        finally:
            await consumer.stop()
