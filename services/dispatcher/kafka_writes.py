"""Every write the dispatcher makes to Kafka, each retried until Kafka accepts it.

Three kinds: a dead letter (``dead-letters``), a batch record (``batches``) and a ledger entry
(the dispatch ledger). Each is awaited until the broker acknowledges it, with backoff between
attempts, never dropped: the caller counts the request done, or moves the dispatch to its next
step, only after the write is durable. While Kafka refuses, the worker waits (and consumption
stops behind it), which is the backpressure the dispatcher wants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from batchpipe.services.dispatcher.backoff import Backoff
from batchpipe.services.dispatcher.dead_letters import dead_letter
from batchpipe.services.dispatcher.ledger import Ledger, LedgerEntry
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.records import Incoming
from batchpipe.services.dispatcher.validate import Invalid
from batchpipe.shared.contracts import BatchRecord, encode, key_bytes
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


class KafkaWrites:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        ledger: Ledger,
        metrics: Metrics,
        backoff: Backoff,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.ledger = ledger
        self.metrics = metrics
        self.backoff = backoff

    async def dead_letter(self, record: Incoming, invalid: Invalid) -> None:
        """Publish the dead letter of an invalid request (acknowledged when this returns)."""
        letter = dead_letter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            invalid=invalid,
        )
        await self._send(self.settings.dead_letters_topic, encode(letter), record.key)
        self.metrics.dead_letters.labels(invalid.reason).inc()
        log.info(
            "request.dead_lettered",
            reason=invalid.reason,
            partition=record.partition,
            offset=record.offset,
        )

    async def batch_record(self, entry: LedgerEntry, *, submitted_at: int) -> None:
        """Publish the ``batches`` record of a created batch (keyed by its batch id)."""
        assert entry.batch_id is not None
        record = BatchRecord(
            batch_id=entry.batch_id,
            provider=entry.provider,
            input_file_id=entry.file_id,
            endpoint=entry.endpoint,
            model=entry.model,
            request_count=entry.request_count,
            dispatch_id=entry.dispatch_id,
            attempts=entry.attempts,
            input_bytes=entry.input_bytes,
            window_opened_at=entry.window_opened_at,
            submitted_at=submitted_at,
            api_key=entry.api_key,
        )
        await self._send(self.settings.batches_topic, encode(record), key_bytes(entry.batch_id))

    async def ledger_entry(self, entry: LedgerEntry) -> None:
        """Write a dispatch's state to the ledger."""
        await self.until_accepted(lambda: self.ledger.write(entry), "ledger.write_retry")

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        await self.until_accepted(
            lambda: self.producer.send_and_wait(topic, value, key=key),
            "kafka.send_retry",
            topic=topic,
        )

    async def until_accepted(
        self, call: Callable[[], Awaitable[object]], event: str, **fields: Any
    ) -> None:
        """Await ``call`` again (with backoff) until Kafka takes it."""
        attempt = 0
        while True:
            try:
                await call()
                return
            except KafkaError as exc:
                log.warning(event, attempt=attempt, error=repr(exc), **fields)
                await self.backoff.sleep(attempt)
                attempt += 1
