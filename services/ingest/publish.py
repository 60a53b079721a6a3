"""Publish step of ingest: put the lines of one POST on the requests topic, all acked or none.

``Publisher`` owns the one shared idempotent ``acks=all`` producer of the process. It connects
in the background (the HTTP server starts even while Kafka is down, and reports not ready), and
``publish`` sends every line of one POST without awaiting each one (``send()`` for all, then
the delivery futures together) under one deadline. Anything short of every ack within it —
not connected, a timeout, a Kafka error — raises ``Unavailable``: the caller answers 503.
Some lines of such a POST may still reach Kafka; a client retries with the same custom_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from batchpipe.shared.contracts import RequestLine, encode, key_bytes
from batchpipe.shared.kafka import make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.partitioner import partition_of
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import MAX_REQUEST_SIZE

log = get_logger(__name__)

# Producer tuning for many small lines at once: batches of up to 512 KiB per partition (the
# default, 16 KiB, holds ~50 lines); the shared producer's 5 ms linger is kept (2 ms measured
# no better).
PRODUCER_OVERRIDES: Final[dict[str, Any]] = {"max_batch_size": 512 * 1024}
# A POST's sends yield to the event loop after this many records.
YIELD_EVERY: Final = 1000
# A record costs this much beyond its key and value (batch framing, headers): items larger
# than the producer's limit minus this are refused before anything is sent.
RECORD_OVERHEAD: Final = 16 * 1024
MAX_VALUE_BYTES: Final = MAX_REQUEST_SIZE - RECORD_OVERHEAD


class Unavailable(Exception):
    """Kafka did not acknowledge every line in time; ``reason`` is short and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Encoded:
    """One line as it goes on the topic: key ``custom_id``, value the JSON line."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class EncodeProblem:
    """Line ``index`` cannot go on the topic: too large, or not serialisable (too deep)."""

    index: int
    reason: str
    too_large: bool


def encode_lines(lines: Sequence[RequestLine]) -> tuple[list[Encoded], list[EncodeProblem]]:
    """Serialise every line (``contracts.encode``); also list the lines that cannot be sent."""
    encoded: list[Encoded] = []
    problems: list[EncodeProblem] = []
    for index, line in enumerate(lines):
        try:
            value = encode(line)
        except (ValueError, TypeError) as exc:  # e.g. nesting deeper than the serialiser allows
            problems.append(EncodeProblem(index, f"item cannot be serialised: {exc}", False))
            continue
        if len(value) > MAX_VALUE_BYTES:
            reason = f"item is {len(value)} bytes; at most {MAX_VALUE_BYTES}"
            problems.append(EncodeProblem(index, reason, True))
            continue
        encoded.append(Encoded(key_bytes(line.custom_id), value))
    return encoded, problems


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
            self._producer = producer
            log.info("ingest.producer.connected", attempt=attempt, topic=self._topic)
            return

    async def publish(self, records: Sequence[Encoded]) -> None:
        """Send every record and wait for all acks within the publish timeout, or raise
        ``Unavailable``. Sends are not awaited one by one: all are queued, then awaited."""
        producer = self._producer
        if producer is None:
            raise Unavailable("not connected to Kafka yet")
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._timeout):
                send = producer.send
                topic = self._topic
                partitions = sorted(await producer.partitions_for(topic))
                for i, record in enumerate(records, 1):
                    partition = partition_of(record.key, partitions)
                    futures.append(
                        await send(topic, value=record.value, key=record.key, partition=partition)
                    )
                    if not i % YIELD_EVERY:  # a big POST lets the other requests move on
                        await asyncio.sleep(0)
                if futures:
                    await asyncio.wait(futures)
        except TimeoutError:
            _consume_later(futures)
            raise Unavailable(f"Kafka did not acknowledge within {self._timeout:g}s") from None
        except Exception as exc:  # KafkaError and anything else the producer raises
            _consume_later(futures)
            log.warning("ingest.publish.failed", error=type(exc).__name__, detail=str(exc))
            raise Unavailable(f"Kafka error: {type(exc).__name__}") from None
        failed = [f for f in futures if f.cancelled() or f.exception() is not None]
        if failed:
            first = failed[0].exception() if not failed[0].cancelled() else TimeoutError()
            log.warning(
                "ingest.publish.failed",
                error=type(first).__name__,
                detail=str(first),
                failed=len(failed),
                sent=len(futures),
            )
            raise Unavailable(f"Kafka error: {type(first).__name__}")


def _consume_later(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Retrieve the outcome of abandoned delivery futures (no 'never retrieved' warnings)."""

    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()

    for future in futures:
        future.add_done_callback(done)


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), 5.0)
