"""Requests waiting to be batched: the dispatcher group's consumer lag on the ``requests`` topic.

Role: the ``requests_waiting`` section of ``GET /status`` (and the status page). The lag is
the sum over the topic's partitions of its end offset (the last stable offset: the clients
read committed) minus the offset the dispatcher group committed there; a partition the group
never committed counts from its log start offset, since that is where the dispatcher would
begin. These are requests not yet in a batch the dispatcher handed over: it commits a
request's offset once its batch's record is on ``batches``, so the requests of a batch being
built or uploaded are counted too.

Why it is safe: the reads (the topic's partitions and the group's offsets through an admin
client, the log start and end offsets through a group-less consumer) run in a background
task, at most once every ``min_interval`` seconds and only while someone asks for the
status, each bounded by ``timeout``. ``snapshot()`` never waits for the broker: it returns
the last value and starts a refresh when that value is stale.

Invariant: any failure (the group's offsets unreadable, an ACL refusal, the broker away)
gives ``waiting: None`` with the error text, never an exception to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from batchpipe.shared.kafka import make_admin, make_consumer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


def lag_of(
    partitions: list[int],
    start: dict[int, int],
    end: dict[int, int],
    committed: dict[int, int],
) -> tuple[int, int]:
    """Total lag and the number of partitions without a committed offset (pure).

    A committed offset ``< 0`` (none) or below the log start counts from the log start; one
    beyond the end (the end moved back, a recreated topic) counts as no lag.
    """
    total = uncommitted = 0
    for p in partitions:
        first, last = start.get(p, 0), end.get(p, 0)
        at = committed.get(p, -1)
        if at < 0:
            uncommitted += 1
        total += max(0, last - max(at, first))
    return total, uncommitted


class RequestsLag:
    """Cached, rate-limited consumer lag of the dispatcher group on the requests topic."""

    def __init__(
        self, settings: Settings, *, min_interval: float = 3.0, timeout: float = 5.0
    ) -> None:
        self.settings = settings
        self.topic = settings.requests_topic
        self.group = settings.dispatcher_group_id
        self.min_interval = min_interval
        self.timeout = timeout
        self.waiting: int | None = None
        self.partitions: int | None = None
        self.uncommitted: int | None = None
        self.error: str | None = "not read yet"
        self.checked_at: float | None = None
        self._asked_at = float("-inf")  # monotonic time of the last refresh started
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    def snapshot(self) -> dict[str, Any]:
        """The last reading (``waiting`` None when unknown); starts a refresh if it is stale."""
        self._maybe_refresh()
        return {
            "topic": self.topic,
            "group": self.group,
            "waiting": self.waiting,
            "partitions": self.partitions,
            "partitions_uncommitted": self.uncommitted,
            "checked_at": None if self.checked_at is None else round(self.checked_at, 3),
            "error": self.error,
        }

    def _maybe_refresh(self) -> None:
        if self._task is not None and not self._task.done():
            return
        now = time.monotonic()
        if now - self._asked_at < self.min_interval:
            return
        self._asked_at = now
        self._task = asyncio.get_running_loop().create_task(
            self.refresh(), name="poller-requests-lag"
        )

    async def refresh(self) -> None:
        """Read the offsets once; record the lag, or ``None`` and the error."""
        try:
            waiting, partitions, uncommitted = await asyncio.wait_for(self._read(), self.timeout)
        except Exception as exc:  # any failure means "unknown", never a failed status page
            self.waiting = self.partitions = self.uncommitted = None
            self.error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
            self.checked_at = time.time()
            log.warning("requests_lag.unreadable", error=self.error)
            await self.close()  # reconnect from scratch next time
            return
        self.waiting, self.partitions, self.uncommitted = waiting, partitions, uncommitted
        self.error = None
        self.checked_at = time.time()

    async def _read(self) -> tuple[int, int, int]:
        if self._consumer is None:
            consumer = make_consumer(self.settings, group_id=None)
            await consumer.start()
            self._consumer = consumer
        if self._admin is None:
            admin = make_admin(self.settings)
            await admin.start()
            self._admin = admin
        consumer, admin = self._consumer, self._admin
        # all topics: naming one in a metadata request could auto-create it on some brokers
        described = await admin.describe_topics(None)
        parts = sorted(
            int(p["partition"])
            for t in described
            if t["topic"] == self.topic and not t["error_code"]
            for p in t["partitions"]
        )
        if not parts:
            raise LookupError(f"topic {self.topic} not found")
        tps = [TopicPartition(self.topic, p) for p in parts]
        start = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        offsets = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        total, uncommitted = lag_of(
            parts,
            {tp.partition: o for tp, o in start.items()},
            {tp.partition: o for tp, o in end.items()},
            {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.topic},
        )
        return total, len(parts), uncommitted

    async def close(self) -> None:
        """Stop the refresh under way and the clients (idempotent)."""
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        consumer, admin = self._consumer, self._admin
        self._consumer = self._admin = None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()
