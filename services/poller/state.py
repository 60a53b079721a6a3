"""Exactly-once publication of a batch's results: transactions, progress records, offsets.

Design (see README, "Poller / results guarantees"):

- One transactional producer per assigned partition of ``batches``, with the stable
  ``transactional_id`` ``batchpipe-poller.<batches topic>.<partition>``. Whoever owns the
  partition next (a restart, another instance after a rebalance) starts a producer with the same
  id, which fences the old one and aborts its open transaction.
- A batch's emissions (``results.py``: a deterministic sequence) are published in chunks of
  ``POLLER_TXN_MAX_MESSAGES``. Each chunk is ONE transaction holding the chunk's messages and a
  ``Progress`` record (``emitted`` = messages published so far) on the compacted state topic,
  keyed by batch id, in the state partition that mirrors the batches partition. The last chunk's
  record says ``done`` and the same transaction commits the ``batches`` offset
  (``send_offsets_to_transaction``) up to the lowest batch of that partition still in flight.
- On assignment the producer is started first (fencing), then the partition's state is read
  back (read_committed) to its end: finished batches are skipped when ``batches`` replays them,
  half-published ones resume after ``emitted``. A killed poller's half-open transaction is
  aborted, so a ``read_committed`` consumer of ``results`` sees every custom_id exactly once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict

from batchpipe.services.poller.produce import RecordBatcher
from batchpipe.services.poller.results import Emission
from batchpipe.shared.contracts import decode, encode, key_bytes
from batchpipe.shared.kafka import make_consumer, make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


class Progress(BaseModel):
    """Value of a state-topic record (key: batch id). Internal to the poller."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="poller-state")

    batch_id: str
    emitted: int
    done: bool
    batch_status: str
    batches_partition: int
    batches_offset: int
    updated_at: float


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
        self.state_partition = partition % max(1, state_partitions)
        self.offsets = PartitionOffsets()
        self.progress: dict[str, int] = {}
        self.done: set[str] = set()
        self.lock = asyncio.Lock()
        self._crash = crash
        self.producer = make_producer(
            settings,
            transactional_id=transactional_id(settings, partition),
            transaction_timeout_ms=settings.poller_transaction_timeout_ms,
            linger_ms=10,
            max_batch_size=512 * 1024,
        )

    async def start(self) -> None:
        """Start the producer (fences older incarnations), then read back this partition's
        state to its end."""
        await self.producer.start()
        await self._load_state()

    async def stop(self) -> None:
        await self.producer.stop()

    async def _load_state(self, wait_seconds: float = 60.0) -> None:
        tp = TopicPartition(self.settings.poller_state_topic, self.state_partition)
        consumer = make_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            deadline = time.monotonic() + wait_seconds
            while await consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"state partition {tp} not read within {wait_seconds}s")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    self._apply_state(record.key, record.value)
        finally:
            await consumer.stop()
        log.info(
            "state.loaded",
            partition=self.partition,
            done=len(self.done),
            in_progress=len(self.progress),
        )

    def _apply_state(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        batch_id = key.decode("utf-8", errors="replace")
        if value is None:
            self.done.discard(batch_id)
            self.progress.pop(batch_id, None)
            return
        try:
            record = decode(Progress, value)
        except ValueError:
            log.error("state.unreadable", batch_id=batch_id)
            return
        if record.batches_partition != self.partition:
            return  # another batches partition sharing this state partition
        if record.done:
            self.done.add(batch_id)
            self.progress.pop(batch_id, None)
        else:
            self.progress[batch_id] = record.emitted

    def _progress_value(
        self, batch_id: str, offset: int, emitted: int, done: bool, status: str
    ) -> bytes:
        return encode(
            Progress(
                batch_id=batch_id,
                emitted=emitted,
                done=done,
                batch_status=status,
                batches_partition=self.partition,
                batches_offset=offset,
                updated_at=time.time(),
            )
        )

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
                self._progress_value(batch_id, offset, emitted, done, status),
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
