"""A batch's original request lines, kept in Kafka for providers that keep no input file.

OpenAI and Azure keep a batch's input file, so a retried request's original line is read back
from it. Anthropic takes the requests inline and keeps nothing a client can read back, so its
provider stages a window here instead (``<requests topic>.batch-inputs``, created on first
use from ``shared.topics.batch_inputs_spec``, kept 31 days: longer than a batch plus its
results live): the lines in the
``requests`` topic's shape, in order, in chunks of at most ``CHUNK_BYTES`` (a longer line is a
chunk of its own), keyed by the dispatch id. ``write`` returns a reference
``<topic>:<partition>:<first offset>:<last offset>:<dispatch id>``, which the dispatch ledger
records as the window's staged input (like an uploaded file id) and the ``batches`` record
carries as its ``input_file_id``; ``read`` streams the lines back from it.

Invariants: a reference's range holds every chunk of its dispatch (chunks of other dispatches
on the same partition may sit between them and are skipped by key); the lines come back
byte for byte and in order; a write that failed half-way leaves chunks nobody refers to
(harmless: they expire).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaProducer, TopicPartition

from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import MAX_REQUEST_SIZE, batch_inputs_spec, batch_inputs_topic

CHUNK_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class InputRef:
    topic: str
    partition: int
    first: int
    last: int
    dispatch_id: str

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first}:{self.last}:{self.dispatch_id}"

    @classmethod
    def parse(cls, text: str) -> InputRef:
        dispatch_id, last, first, partition, topic = _rsplit(text)
        return cls(topic, int(partition), int(first), int(last), dispatch_id)


def _rsplit(text: str) -> tuple[str, str, str, str, str]:
    head, dispatch_id = text.rsplit(":", 1)
    head, last = head.rsplit(":", 1)
    head, first = head.rsplit(":", 1)
    topic, partition = head.rsplit(":", 1)
    return dispatch_id, last, first, partition, topic


def chunks(lines: Iterable[bytes], limit: int = CHUNK_BYTES) -> Iterable[bytes]:
    """Lines joined by ``\\n`` into values of at most ``limit`` bytes (a longer line alone)."""
    part: list[bytes] = []
    size = 0
    for line in lines:
        if part and size + len(line) + 1 > limit:
            yield b"\n".join(part)
            part, size = [], 0
        part.append(line)
        size += len(line) + 1
    if part:
        yield b"\n".join(part)


class InputStore:
    """Writes and reads staged windows (one producer, started on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = batch_inputs_topic(settings)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                await ensure_topics(self.settings, [batch_inputs_spec(self.settings)])
                producer = make_producer(
                    self.settings, max_request_size=MAX_REQUEST_SIZE + 1024 * 1024
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def write(self, dispatch_id: str, lines: Iterable[bytes]) -> InputRef:
        """Store the lines; the reference once every chunk is acknowledged (acks=all)."""
        producer = await self._started()
        key = dispatch_id.encode()
        sent = [await producer.send(self.topic, value, key=key) for value in chunks(lines)]
        if not sent:
            sent = [await producer.send(self.topic, b"", key=key)]
        done = await asyncio.gather(*sent)
        partitions = {m.partition for m in done}
        assert len(partitions) == 1, "one key, one partition"
        return InputRef(
            self.topic,
            done[0].partition,
            min(m.offset for m in done),
            max(m.offset for m in done),
            dispatch_id,
        )

    async def read(self, ref: InputRef) -> AsyncIterator[bytes]:
        """The stored lines of ``ref``, in order."""
        consumer = make_consumer(self.settings, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(ref.topic, ref.partition)
            consumer.assign([tp])
            consumer.seek(tp, ref.first)
            key = ref.dispatch_id.encode()
            position = ref.first
            while position <= ref.last:
                fetched = await consumer.getmany(tp, timeout_ms=1000)
                for record in fetched.get(tp, []):
                    position = record.offset + 1
                    if record.offset > ref.last:
                        break
                    if record.key == key and record.value:
                        for line in record.value.split(b"\n"):
                            yield line
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
