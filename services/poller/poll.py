"""Follow every in-flight batch with its provider's ``retrieve`` until it reaches a terminal
status.

One loop asks the ``RetrievePacer`` (schedule.py) which batch is due and whether the global
``POLL_MAX_RPS`` budget allows a call, and runs at most ``POLLER_RETRIEVE_CONCURRENCY``
retrieves at once, each through the provider its record names. A failed retrieve (the
provider's ``retryable`` errors: connection errors, timeouts, 429/5xx left after the SDK's own
retries) only reschedules the batch, so an API outage never drops one; any other exception
from a retrieve does the same and is logged as an error, so a surprise in a response delays a
batch instead of orphaning it. A batch that reached a terminal status is handed to
``on_finished``; if that fails (Kafka down, file download error) the batch is retried after
a short backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from batchpipe.services.poller.schedule import RetrievePacer
from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import BatchOutcome
from batchpipe.shared.providers.registry import Providers

log = get_logger(__name__)

# Delay before a batch whose retrieve or publication failed is tried again (seconds, capped by
# the poll interval).
ERROR_BACKOFF_SECONDS = 2.0
# After a webhook said a batch ended (``hurry``), retrieves that still show it running are
# tried again this many times after ERROR_BACKOFF_SECONDS instead of a whole interval.
HURRY_RETRIES = 3


@dataclass
class Tracked:
    """A batch being followed: where it came from and what its provider last said about it."""

    record: BatchRecord
    partition: int
    offset: int
    first_seen: float = field(default_factory=time.time)
    status: str = "unknown"
    request_counts: dict[str, int] = field(default_factory=dict)
    retrieves: int = 0
    errors: int = 0
    finished_at: int | None = None
    publishing: bool = False


FinishedHandler = Callable[[Tracked, BatchOutcome], Awaitable[None]]


class Follower:
    """Retrieves due batches at the allowed pace; hands finished ones to ``on_finished``."""

    def __init__(
        self,
        providers: Providers,
        pacer: RetrievePacer,
        on_finished: FinishedHandler,
        *,
        concurrency: int,
        on_retrieve: Callable[[str], None] | None = None,
    ) -> None:
        self.providers = providers
        self.pacer = pacer
        self.on_finished = on_finished
        self.on_retrieve = on_retrieve or (lambda outcome: None)
        self.tracked: dict[str, Tracked] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._hurried: dict[str, int] = {}  # batch id -> quick retrieves left (``hurry``)

    def follow(self, tracked: Tracked, *, delay: float | None = None) -> None:
        """Start following a batch (first retrieve after ``delay``, default: jittered)."""
        self.tracked[tracked.record.batch_id] = tracked
        self.pacer.schedule.add(tracked.record.batch_id, delay=delay)
        self._wake.set()
        log.info(
            "batch.following",
            batch_id=tracked.record.batch_id,
            partition=tracked.partition,
            offset=tracked.offset,
        )

    def forget(self, batch_id: str) -> None:
        self.tracked.pop(batch_id, None)
        self._hurried.pop(batch_id, None)
        self.pacer.schedule.remove(batch_id)

    def hurry(self, batch_id: str) -> bool:
        """The provider said the batch ended (a webhook): retrieve it as soon as the rate cap
        allows instead of at its next poll. A retrieve already running, or one that still
        shows the batch running (the provider's read lagging its event), is followed by up to
        ``HURRY_RETRIES`` quick ones. False when this instance does not follow the batch.

        A batch being published, or being retrieved, is not put back in the schedule: it is
        never retrieved twice at once."""
        tracked = self.tracked.get(batch_id)
        if tracked is None:
            return False
        self._hurried[batch_id] = HURRY_RETRIES
        if not tracked.publishing and batch_id in self.pacer.schedule:
            self.pacer.schedule.add(batch_id, delay=0.0)
            self._wake.set()
        return True

    def _next_delay(self, batch_id: str) -> float | None:
        """The delay before the next retrieve of a batch still running (None: an interval)."""
        left = self._hurried.get(batch_id, 0)
        if left <= 0:
            return None
        self._hurried[batch_id] = left - 1
        return min(ERROR_BACKOFF_SECONDS, self.pacer.schedule.interval)

    def forget_partition(self, partition: int) -> list[str]:
        gone = [b for b, t in self.tracked.items() if t.partition == partition]
        for batch_id in gone:
            self.forget(batch_id)
        return gone

    def _again(self, batch_id: str, delay: float | None = None) -> None:
        if batch_id in self.tracked:
            self.pacer.schedule.reschedule(batch_id, delay=delay)
            self._wake.set()

    async def run(self) -> None:
        """Retrieve due batches forever (cancel the task to stop)."""
        try:
            while True:
                batch_id, wait = self.pacer.next()
                if batch_id is None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                if batch_id not in self.tracked:
                    continue
                await self._slots.acquire()
                task = asyncio.create_task(self._retrieve(batch_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _retrieve_failed(
        self, tracked: Tracked, exc: Exception, emit: Callable[..., object]
    ) -> None:
        tracked.errors += 1
        self.on_retrieve("error")
        batch_id = tracked.record.batch_id
        emit("batch.retrieve_failed", batch_id=batch_id, error=repr(exc)[:300])
        self._again(batch_id, min(ERROR_BACKOFF_SECONDS, self.pacer.schedule.interval))

    async def _retrieve(self, batch_id: str) -> None:
        tracked = self.tracked.get(batch_id)
        try:
            if tracked is None:
                return
            tracked.retrieves += 1
            try:
                provider = self.providers.get(tracked.record.provider)
                transient = provider.retryable
                try:
                    progress = await provider.retrieve(batch_id)
                except transient as exc:
                    self._retrieve_failed(tracked, exc, log.warning)
                    return
            except Exception as exc:  # not the API's answer: a bug or a response nobody foresaw
                self._retrieve_failed(tracked, exc, log.error)
                return
            self.on_retrieve("ok")
            tracked.status = progress.status
            if progress.counts:
                tracked.request_counts = dict(progress.counts)
            outcome = progress.outcome
            if outcome is None:
                self._again(batch_id, self._next_delay(batch_id))
                return
        finally:
            self._slots.release()
        tracked.finished_at = outcome.finished_at
        log.info("batch.ended", batch_id=batch_id, status=outcome.status)
        tracked.publishing = True
        try:
            await self.on_finished(tracked, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Kafka or file download trouble: try again later
            tracked.errors += 1
            tracked.publishing = False
            log.error("batch.publish_failed", batch_id=batch_id, error=repr(exc)[:500])
            self._again(batch_id, min(ERROR_BACKOFF_SECONDS * 2, self.pacer.schedule.interval))
            return
        self.forget(batch_id)
