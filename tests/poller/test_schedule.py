"""schedule.py: jittered due times and the global retrieve rate cap, on a fake clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from batchpipe.services.poller.schedule import PollSchedule, RetrievePacer, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_caps_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock=clock)
    granted = sum(bucket.try_acquire() == 0.0 for _ in range(100))
    assert granted == 5  # the burst
    wait = bucket.try_acquire()
    assert wait == pytest.approx(0.2)
    clock.now += wait
    assert bucket.try_acquire() == 0.0


def test_schedule_orders_by_due_time_and_removes_lazily() -> None:
    clock = FakeClock()
    schedule = PollSchedule(10, clock=clock, rng=random.Random(1))
    schedule.add("a", delay=5)
    schedule.add("b", delay=1)
    schedule.add("c", delay=3)
    schedule.remove("c")
    assert schedule.pop_due() is None
    assert schedule.seconds_until_due() == pytest.approx(1)
    clock.now += 10
    assert [schedule.pop_due(), schedule.pop_due(), schedule.pop_due()] == ["b", "a", None]
    assert len(schedule) == 0 and schedule.seconds_until_due() is None


def test_reschedule_is_jittered_around_the_interval() -> None:
    clock = FakeClock()
    schedule = PollSchedule(60, jitter=0.2, clock=clock, rng=random.Random(2))
    delays = []
    for i in range(200):
        due = schedule.reschedule(f"b{i}")
        delays.append(due - clock.now)
    assert min(delays) >= 48 and max(delays) <= 72
    assert max(delays) - min(delays) > 10  # really spread


def simulate(
    batches: int, interval: float, rps: float, seconds: float
) -> tuple[Counter[int], Counter[str]]:
    """Drive the pacer like Follower.run does, on a fake clock: retrieves per second, per batch."""
    clock = FakeClock()
    pacer = RetrievePacer(
        PollSchedule(interval, clock=clock, rng=random.Random(3)), TokenBucket(rps, clock=clock)
    )
    for i in range(batches):
        pacer.schedule.add(f"batch-{i}")
    per_second: Counter[int] = Counter()
    per_batch: Counter[str] = Counter()
    start = clock.now
    while clock.now - start < seconds:
        batch_id, wait = pacer.next()
        if batch_id is None:
            assert wait is not None
            clock.now += max(wait, 1e-4)
            continue
        per_second[int(clock.now - start)] += 1
        per_batch[batch_id] += 1
        pacer.schedule.reschedule(batch_id)
    return per_second, per_batch


def test_ten_thousand_batches_stay_within_the_cap_and_none_starves() -> None:
    per_second, per_batch = simulate(10_000, interval=60, rps=20, seconds=1200)
    # Never more than the cap in any second (the bucket's burst is one second's worth).
    assert max(per_second.values()) <= 20 + 20
    windows = [sum(per_second[s + k] for k in range(10)) for s in range(0, 1190)]
    assert max(windows) <= 20 * 10 + 20
    # Saturated: the cap is used, and every batch was retrieved at least twice in 20 minutes
    # (10,000 batches / 20 rps = one round every 500 s).
    assert sum(per_second.values()) >= 20 * 1200 * 0.95
    assert len(per_batch) == 10_000
    assert min(per_batch.values()) >= 2


def test_few_batches_are_retrieved_every_interval() -> None:
    per_second, per_batch = simulate(100, interval=10, rps=20, seconds=300)
    # Under the cap each batch is retrieved about every 10 s (jittered ±20%).
    assert all(24 <= n <= 38 for n in per_batch.values())
    assert max(per_second.values()) <= 40
