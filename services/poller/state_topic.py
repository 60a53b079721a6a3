"""The poller's state topic: one compacted ``Progress`` record per batch (key: the batch id).

A record says how many of the batch's emissions are committed (``emitted``) and whether the
batch is finished (``done``). The publisher writes it inside the transaction that commits
those emissions, so a ``read_committed`` reader sees exactly as much progress as there are
committed results. ``batches`` partition p keeps its records in state partition
p mod (state partitions); each record names its batches partition, so a state partition that
serves several batches partitions (a state topic with fewer partitions) is filtered on reading.
The topic's spec is ``shared.topics.poller_state_spec``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict

from batchpipe.shared.contracts import decode, encode
from batchpipe.shared.kafka import make_consumer
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


def state_partition_of(batches_partition: int, state_partitions: int) -> int:
    return batches_partition % max(1, state_partitions)


def progress_value(
    batch_id: str, batches_partition: int, offset: int, emitted: int, done: bool, status: str
) -> bytes:
    return encode(
        Progress(
            batch_id=batch_id,
            emitted=emitted,
            done=done,
            batch_status=status,
            batches_partition=batches_partition,
            batches_offset=offset,
            updated_at=time.time(),
        )
    )


@dataclass
class PartitionProgress:
    """What the state topic says about the batches of one ``batches`` partition."""

    batches_partition: int
    done: set[str] = field(default_factory=set)
    emitted: dict[str, int] = field(default_factory=dict)  # unfinished: emissions committed

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one state record (a ``None`` value is a tombstone)."""
        if key is None:
            return
        batch_id = key.decode("utf-8", errors="replace")
        if value is None:
            self.done.discard(batch_id)
            self.emitted.pop(batch_id, None)
            return
        try:
            record = decode(Progress, value)
        except ValueError:
            log.error("state.unreadable", batch_id=batch_id)
            return
        if record.batches_partition != self.batches_partition:
            return  # another batches partition sharing this state partition
        if record.done:
            self.done.add(batch_id)
            self.emitted.pop(batch_id, None)
        else:
            self.emitted[batch_id] = record.emitted


async def read_progress(
    settings: Settings, batches_partition: int, state_partition: int, wait_seconds: float = 60.0
) -> PartitionProgress:
    """Read ``state_partition`` from the beginning to its end (read_committed)."""
    progress = PartitionProgress(batches_partition)
    tp = TopicPartition(settings.poller_state_topic, state_partition)
    consumer = make_consumer(settings, group_id=None)
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
                progress.apply(record.key, record.value)
    finally:
        await consumer.stop()
    log.info(
        "state.loaded",
        partition=batches_partition,
        done=len(progress.done),
        in_progress=len(progress.emitted),
    )
    return progress
