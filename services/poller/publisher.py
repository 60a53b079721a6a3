"""Exactly-once publication of a batch's results: one transactional producer per partition.

- Each assigned partition of ``batches`` gets a ``PartitionPublisher``: a transactional
  producer with the stable ``transactional_id`` ``batchpipe-poller.<batches topic>.<partition>``.
  Whoever owns the partition next (a restart, another instance after a rebalance) starts a
  producer with the same id, which fences the old one and aborts its open transaction.
- A batch's emissions (``results.py``: a deterministic sequence) are published in chunks of
  ``POLLER_TXN_MAX_MESSAGES``. Each chunk is ONE transaction holding the chunk's messages and
  the batch's ``Progress`` record on the state topic (``state_topic.py``). The last chunk's
  record says ``done`` and the same transaction commits the ``batches`` offset
  (``send_offsets_to_transaction``) up to the lowest batch of that partition still in flight.
- On assignment the producer is started first (fencing), then the partition's progress is read
  back to its end: finished batches are skipped when ``batches`` replays them, half-published
  ones resume after ``emitted``. A ``read_committed`` consumer of ``results`` therefore sees
  every custom_id exactly once.
- Records that need no work (finished, duplicate, unreadable and dead-lettered) advance the
  committed offset in a small transaction of their own (``commit_skipped``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from batchpipe.services.poller.record_batcher import RecordBatcher
from batchpipe.services.poller.results import Emission
from batchpipe.services.poller.state_topic import progress_value, read_progress, state_partition_of
from batchpipe.shared.contracts import key_bytes
from batchpipe.shared.kafka import make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


def group_id(settings: Settings) -> str:
    """The poller's consumer group on ``batches`` (one per batches topic)."""
    return f"batchpipe-poller.{settings.batches_topic}"


def transactional_id(settings: Settings, partition: int) -> str:
    return f"batchpipe-poller.{settings.batches_topic}.{partition}"


@dataclass
class PartitionOffsets:
    """Which offsets of one ``batches`` partition are still in flight (pure bookkeeping).

    The committable offset is the lowest in-flight offset, or one past the highest seen."""

    in_flight: dict[int, str] = field(default_factory=dict)
    next_offset: int = 0
    committed: int = -1

    def track(self, offset: int, batch_id: str) -> None:
        self.in_flight[offset] = batch_id
        self.next_offset = max(self.next_offset, offset + 1)

    def skip(self, offset: int) -> None:
        """An offset that needs no work (already done, or unreadable and dead-lettered)."""
        self.in_flight.pop(offset, None)
        self.next_offset = max(self.next_offset, offset + 1)

    def committable(self, finishing: int | None = None) -> int:
        """The offset to commit once ``finishing`` (if given) is done."""
        pending = [o for o in self.in_flight if o != finishing]
        return min(pending) if pending else self.next_offset


class CrashAfter:
    """Test-only fault injection: exit the process abruptly after N results were sent."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.sent = 0

    async def sent_one(self, batcher: RecordBatcher) -> None:
        if self.limit is None:
            return
        self.sent += 1
        if self.sent >= self.limit:
            await asyncio.gather(*await batcher.submit())  # the half transaction is on the broker
            log.warning("poller.crash_injected", results_sent=self.sent)
            os._exit(137)


class PartitionPublisher:
    """Owns one ``batches`` partition: its transactional producer, offsets and progress."""

    def __init__(
        self, settings: Settings, partition: int, state_partitions: int, crash: CrashAfter
    ) -> None:
        self.settings = settings
        self.partition = partition
        self.tp = TopicPartition(settings.batches_topic, partition)
        self.state_partition = state_partition_of(partition, state_partitions)
        self.offsets = PartitionOffsets()
        self.progress: dict[str, int] = {}  # batch id -> emissions committed (unfinished)
        self.done: set[str] = set()  # batches finished
        self.lock = asyncio.Lock()
        self._crash = crash
        self.producer = make_producer(
            settings,
            transactional_id=transactional_id(settings, partition),
            transaction_timeout_ms=settings.poller_transaction_timeout_ms,
            linger_ms=10,
            # a batch of several records never exceeds the results topic's limit (a record
            # alone is sized against it by ``sizing.py``)
            max_batch_size=min(512 * 1024, settings.results_max_message_bytes),
        )

    async def start(self) -> None:
        """Start the producer (fences older incarnations), then read back this partition's
        progress to its end."""
        await self.producer.start()
        loaded = await read_progress(self.settings, self.partition, self.state_partition)
        self.done, self.progress = loaded.done, loaded.emitted

    async def stop(self) -> None:
        await self.producer.stop()

    async def _commit(
        self,
        futures: list[asyncio.Future[Any]],
        batch_id: str,
        offset: int,
        emitted: int,
        *,
        done: bool,
        status: str,
    ) -> int | None:
        """Add the progress record (and, when done, the offsets) and commit the transaction.
        Returns the committed ``batches`` offset when done."""
        producer = self.producer
        futures.append(
            await producer.send(
                self.settings.poller_state_topic,
                progress_value(batch_id, self.partition, offset, emitted, done, status),
                key=key_bytes(batch_id),
                partition=self.state_partition,
            )
        )
        commit_offset = None
        if done:
            commit_offset = self.offsets.committable(finishing=offset)
            await producer.send_offsets_to_transaction(
                {self.tp: commit_offset}, group_id(self.settings)
            )
        await asyncio.gather(*futures)  # every message acknowledged before the commit
        await producer.commit_transaction()
        return commit_offset

    async def publish(
        self,
        batch_id: str,
        offset: int,
        status: str,
        stream: AsyncIterator[Emission],
        on_chunk: Callable[[list[Emission]], None],
    ) -> int:
        """Publish ``stream`` exactly once (resuming after committed progress); mark the batch
        done and advance the offsets in the last transaction. Returns messages published now."""
        async with self.lock:
            if batch_id in self.done:
                self.offsets.skip(offset)
                return 0
            start = self.progress.get(batch_id, 0)
            chunk_size = self.settings.poller_txn_max_messages
            producer = self.producer
            index = 0
            published = 0
            chunk: list[Emission] = []
            batcher = RecordBatcher(producer)
            in_txn = False
            try:
                async for emission in stream:
                    if index < start:
                        index += 1
                        continue
                    if not in_txn:
                        await producer.begin_transaction()
                        in_txn = True
                    topic = (
                        self.settings.results_topic
                        if emission.kind == "result"
                        else self.settings.requests_topic
                    )
                    await batcher.add(topic, emission.key, emission.value, emission.headers)
                    chunk.append(emission)
                    index += 1
                    await self._crash.sent_one(batcher)
                    if len(chunk) >= chunk_size:
                        await self._commit(
                            await batcher.submit(),
                            batch_id,
                            offset,
                            index,
                            done=False,
                            status=status,
                        )
                        in_txn = False
                        self.progress[batch_id] = index
                        published += len(chunk)
                        on_chunk(chunk)
                        chunk = []
                if not in_txn:
                    await producer.begin_transaction()
                    in_txn = True
                committed = await self._commit(
                    await batcher.submit(), batch_id, offset, index, done=True, status=status
                )
                in_txn = False
            except BaseException:
                if in_txn:
                    await self._abort()
                raise
            published += len(chunk)
            on_chunk(chunk)
            self.progress.pop(batch_id, None)
            self.done.add(batch_id)
            self.offsets.skip(offset)
            self.offsets.committed = committed if committed is not None else self.offsets.committed
            log.info(
                "batch.results_committed",
                batch_id=batch_id,
                partition=self.partition,
                emitted=index,
                resumed_from=start,
                committed_offset=committed,
            )
            return published

    async def _abort(self) -> None:
        try:
            await self.producer.abort_transaction()
        except (KafkaError, Exception) as exc:  # fatal (e.g. fenced): the producer is unusable
            log.error("txn.abort_failed", partition=self.partition, error=repr(exc))

    async def commit_skipped(
        self, dead_letters: list[tuple[str, bytes | None, bytes]] | None = None
    ) -> None:
        """Advance the committed offset past skipped records (and publish their dead letters)
        in a small transaction of its own. ``dead_letters``: (topic, key, value)."""
        async with self.lock:
            target = self.offsets.committable()
            if target <= self.offsets.committed and not dead_letters:
                return
            producer = self.producer
            await producer.begin_transaction()
            try:
                futures = [
                    await producer.send(topic, value, key=key)
                    for topic, key, value in dead_letters or []
                ]
                await producer.send_offsets_to_transaction(
                    {self.tp: target}, group_id(self.settings)
                )
                await asyncio.gather(*futures)
                await producer.commit_transaction()
            except BaseException:
                await self._abort()
                raise
            self.offsets.committed = target
