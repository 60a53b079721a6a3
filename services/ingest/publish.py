"""Publish step of ingest: put the records of one POST on the requests topic, all acked or none.

``Publisher`` owns the one shared idempotent ``acks=all`` producer of the process. It connects
in the background (the HTTP server starts even while Kafka is down, and reports not ready).

``publish`` appends a POST's records to Kafka record batches itself — one open batch per
partition, shared by every POST in flight (group commit) — instead of one ``send()`` and one
future per record. A partition's open batch is handed to the producer (``send_batch``) as soon
as the producer can take it: at once when that partition has nothing queued, else when the
batch before it leaves for the broker (aiokafka keeps one queued batch per partition and one
produce request in flight per broker), so the records of POSTs arriving meanwhile travel
together. The partition is Kafka's default for the key (``partition_of``), as ``send()`` would
pick. A POST returns once every batch holding one of its records is acknowledged by all
in-sync replicas, within the publish timeout; anything less — not connected, a timeout, a
Kafka error — raises ``Unavailable`` and the caller answers 503. Some records of such a POST
may still reach Kafka; a client retries with the same custom_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from batchpipe.services.ingest.encode import Record
from batchpipe.shared.kafka import make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.partitioner import partitions_of
from batchpipe.shared.settings import Settings

log = get_logger(__name__)

# Record batches of up to 512 KiB per partition (the default, 16 KiB, holds ~50 lines), and no
# linger: a batch waits only while its partition's previous batch is in flight, and fills then.
# With more batches than this waiting (Kafka slow or away), new POSTs get 503 at once rather
# than queueing ever more in memory (at most about this many x 512 KiB, plus one POST).
MAX_BACKLOG_BATCHES: Final = 64
PRODUCER_OVERRIDES: Final[dict[str, Any]] = {"max_batch_size": 512 * 1024, "linger_ms": 0}


class Unavailable(Exception):
    """Kafka did not acknowledge every line in time; ``reason`` is short and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenBatch:
    """One record batch being filled for one partition, and the future of its delivery."""

    __slots__ = ("builder", "delivered")

    def __init__(self, builder: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.builder = builder
        self.delivered: asyncio.Future[Any] = loop.create_future()


class GroupCommit:
    """The open batches of one producer and topic, per partition, and their submission."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._loop = asyncio.get_running_loop()
        self._open: dict[int, OpenBatch] = {}  # per partition: the batch records join
        self._queues: dict[int, deque[OpenBatch]] = {}  # per partition: not yet handed over
        self._last: dict[int, OpenBatch] = {}  # per partition: the last one handed over
        self._submitters: dict[int, asyncio.Task[None]] = {}

    def append_all(
        self,
        records: deque[Record],
        partitions: Sequence[int],
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> set[OpenBatch]:
        """Move every record (emptying ``records``) into its partition's open batch, each with
        ``headers``; the batches that now hold one of them."""
        touched: set[OpenBatch] = set()
        open_batches = self._open
        extra = list(headers)
        for partition in partitions_of([key for key, _ in records], partitions):
            key, value = records.popleft()
            batch = open_batches.get(partition)
            if (
                batch is None
                or batch.builder.append(key=key, value=value, timestamp=None, headers=extra) is None
            ):
                batch = self._start_batch(partition, key, value, extra)
            touched.add(batch)
        return touched

    def _start_batch(
        self, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> OpenBatch:
        """A new open batch for the partition (the last one is full, closed or missing),
        holding this first record, queued for hand-over."""
        batch = self._open[partition] = OpenBatch(self._producer.create_batch(), self._loop)
        if batch.builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            raise ValueError(f"record of {len(value)} bytes does not fit in a batch")
        queue = self._queues.get(partition)
        if queue is None:
            queue = self._queues[partition] = deque()
        queue.append(batch)
        if partition not in self._submitters:
            self._submitters[partition] = self._loop.create_task(
                self._submit(partition, queue), name=f"ingest-submit-{partition}"
            )
        return batch

    async def _submit(self, partition: int, queue: deque[OpenBatch]) -> None:
        """Hand the partition's batches to the producer, oldest first, each once the one before
        it is acknowledged (or failed), until none is left. A batch is closed only when it is
        handed over, so it collects records for as long as its predecessor is on the wire.
        (The producer sends one request per broker at a time anyway; a batch left open inside
        it would change size after its idempotence sequence number was assigned.)"""
        previous = self._last.get(partition)
        try:
            while queue:
                if previous is not None and not previous.delivered.done():
                    await asyncio.wait([previous.delivered])
                batch = queue.popleft()
                batch.builder.close()
                previous = self._last[partition] = batch
                try:
                    future = await self._producer.send_batch(
                        batch.builder, self._topic, partition=partition
                    )
                except Exception as exc:  # closed producer, queue timeout, unknown partition
                    _settle(batch.delivered, exc)
                    continue
                future.add_done_callback(_forward_to(batch.delivered))
        finally:
            del self._submitters[partition]

    def backlog(self) -> int:
        """Batches filled or filling that are not yet handed to the producer."""
        return sum(len(queue) for queue in self._queues.values())

    async def close(self) -> None:
        """Wait for the batches already handed over or queued to be submitted."""
        if self._submitters:
            await asyncio.gather(*self._submitters.values(), return_exceptions=True)


def _settle(target: asyncio.Future[Any], exc: BaseException) -> None:
    if not target.done():
        target.set_exception(exc)


def _forward_to(target: asyncio.Future[Any]) -> Any:
    def forward(source: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if source.cancelled():
            target.set_exception(TimeoutError("delivery cancelled"))
        elif (exc := source.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(source.result())

    return forward


class Publisher:
    """The process's producer: connected in the background, shared by every request."""

    def __init__(
        self,
        settings: Settings,
        *,
        connect_timeout: float = 10.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 10.0,
        **producer_overrides: Any,
    ) -> None:
        self._settings = settings
        self._topic = settings.requests_topic
        self._timeout = settings.ingest_publish_timeout_seconds
        self._connect_timeout = connect_timeout
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._overrides = {**PRODUCER_OVERRIDES, **producer_overrides}
        self._producer: AIOKafkaProducer | None = None
        self._group: GroupCommit | None = None
        self._connector: asyncio.Task[None] | None = None

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        """Begin connecting in the background (returns at once)."""
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect(), name="ingest-producer-connect")

    async def wait_connected(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the producer to connect; True if connected."""
        if self._connector is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._connector), seconds)
        return self.connected

    async def stop(self) -> None:
        """Stop connecting; flush and stop the producer (pending sends are delivered)."""
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        producer, self._producer = self._producer, None
        group, self._group = self._group, None
        if group is not None:
            await group.close()
        if producer is not None:
            await producer.stop()
            log.info("ingest.producer.stopped")

    async def _connect(self) -> None:
        delay = self._retry_delay
        attempt = 0
        while True:
            attempt += 1
            producer = make_producer(self._settings, **self._overrides)
            try:
                await asyncio.wait_for(producer.start(), self._connect_timeout)
            except asyncio.CancelledError:
                await _quietly_stop(producer)
                raise
            except Exception as exc:  # any start failure: retry (the broker may come later)
                await _quietly_stop(producer)
                log.warning(
                    "ingest.producer.connect_failed",
                    attempt=attempt,
                    error=type(exc).__name__,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            self._group = GroupCommit(producer, self._topic)
            self._producer = producer
            log.info("ingest.producer.connected", attempt=attempt, topic=self._topic)
            return

    async def publish(
        self, records: deque[Record], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Append every record (each with ``headers``) to the shared batches and wait until
        each batch holding one is acknowledged, within the publish timeout; else raise
        ``Unavailable``. ``records`` is emptied as they are appended (a big POST is not held
        twice)."""
        producer, group = self._producer, self._group
        if producer is None or group is None:
            raise Unavailable("not connected to Kafka yet")
        if group.backlog() > MAX_BACKLOG_BATCHES:
            raise Unavailable("Kafka is not keeping up")
        batches: set[OpenBatch] = set()
        try:
            async with asyncio.timeout(self._timeout):
                partitions = sorted(await producer.partitions_for(self._topic))
                batches = group.append_all(records, partitions, headers)
                done, _ = await asyncio.wait([b.delivered for b in batches])
        except TimeoutError:
            _consume_later(batches)
            raise Unavailable(f"Kafka did not acknowledge within {self._timeout:g}s") from None
        except Exception as exc:  # KafkaError and anything else the producer raises
            _consume_later(batches)
            log.warning("ingest.publish.failed", error=type(exc).__name__, detail=str(exc))
            raise Unavailable(f"Kafka error: {type(exc).__name__}") from None
        failed = [f.exception() for f in done if f.exception() is not None]
        if failed:
            first = failed[0]
            log.warning(
                "ingest.publish.failed",
                error=type(first).__name__,
                detail=str(first),
                failed_batches=len(failed),
                batches=len(batches),
            )
            raise Unavailable(f"Kafka error: {type(first).__name__}")


def _consume_later(batches: set[OpenBatch]) -> None:
    """Retrieve the outcome of abandoned deliveries (no 'never retrieved' warnings)."""

    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()

    for batch in batches:
        batch.delivered.add_done_callback(done)


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 5.0)
