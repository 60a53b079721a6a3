"""When to retrieve each in-flight batch: jittered per-batch due times and a global rate cap.

Pure (no I/O, injectable clock and random source), so it is unit-tested with a fake clock:

- ``PollSchedule`` keeps one due time per batch in a heap. A batch is due ``interval`` seconds
  (± ``jitter``) after its last retrieve, so 10,000 batches added at once spread out instead of
  being retrieved in lock-step.
- ``TokenBucket`` caps ``batches.retrieve`` calls per second for the whole process
  (``POLL_MAX_RPS``). With more batches than ``rps * interval`` the effective interval simply
  stretches; the cap is never exceeded and no batch is starved (the heap serves the most
  overdue batch first).
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self) -> float:
        """Take one token and return 0.0, or return the seconds to wait until one is free."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    batch_id: str = field(compare=False)


class PollSchedule:
    """Due times of the batches being followed; the most overdue batch comes first."""

    def __init__(
        self,
        interval: float,
        *,
        jitter: float = 0.2,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ):
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.jitter = min(max(jitter, 0.0), 0.9)
        self._clock = clock
        self._rng = rng or random.Random()
        self._heap: list[_Entry] = []
        self._due: dict[str, _Entry] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._due

    def jittered(self, seconds: float) -> float:
        spread = seconds * self.jitter
        return max(0.0, seconds + self._rng.uniform(-spread, spread))

    def add(self, batch_id: str, *, delay: float | None = None) -> float:
        """Follow ``batch_id`` (or move its due time): due after ``delay`` (default: a random
        point within the first interval, which spreads a burst of new batches). Returns it."""
        if delay is None:
            delay = self._rng.uniform(0.0, self.interval)
        self._seq += 1
        entry = _Entry(self._clock() + delay, self._seq, batch_id)
        self._due[batch_id] = entry
        heapq.heappush(self._heap, entry)
        return entry.due

    def reschedule(self, batch_id: str, *, delay: float | None = None) -> float:
        """Due again one jittered interval (or ``delay``) from now."""
        return self.add(batch_id, delay=self.jittered(self.interval) if delay is None else delay)

    def remove(self, batch_id: str) -> None:
        self._due.pop(batch_id, None)  # its heap entry is skipped lazily

    def _top(self) -> _Entry | None:
        while self._heap:
            top = self._heap[0]
            if self._due.get(top.batch_id) is top:
                return top
            heapq.heappop(self._heap)
        return None

    def seconds_until_due(self) -> float | None:
        """Seconds until the next batch is due (0 if overdue), None when nothing is followed."""
        top = self._top()
        return None if top is None else max(0.0, top.due - self._clock())

    def pop_due(self) -> str | None:
        """The most overdue batch, taken out of the schedule (re-add it after the retrieve)."""
        top = self._top()
        if top is None or top.due > self._clock():
            return None
        heapq.heappop(self._heap)
        del self._due[top.batch_id]
        return top.batch_id


class RetrievePacer:
    """Schedule + token bucket: ``next()`` says which batch to retrieve now, or how long to wait."""

    def __init__(self, schedule: PollSchedule, bucket: TokenBucket):
        self.schedule = schedule
        self.bucket = bucket

    def next(self) -> tuple[str | None, float | None]:
        """``(batch_id, None)`` to retrieve now; ``(None, seconds)`` to wait (None: idle)."""
        wait = self.schedule.seconds_until_due()
        if wait is None or wait > 0:
            return None, wait
        wait_token = self.bucket.try_acquire()
        if wait_token > 0:
            return None, wait_token
        return self.schedule.pop_due(), None
