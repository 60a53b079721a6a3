"""poll.Follower without Kafka: whatever a retrieve raises, the batch stays followed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from batchpipe.services.poller.poll import Follower, Tracked
from batchpipe.services.poller.schedule import PollSchedule, RetrievePacer, TokenBucket
from batchpipe.shared.providers.base import BatchOutcome
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import Providers

from .helpers import record

pytestmark = pytest.mark.timeout(20)


class FlakyBatches:
    """``client.batches`` whose first retrieves raise ``errors`` in turn, then completes."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def retrieve(self, batch_id: str) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return SimpleNamespace(
            id=batch_id,
            status="completed",
            completed_at=1_700_000_100,
            output_file_id="file-out",
            error_file_id=None,
            errors=None,
            request_counts=SimpleNamespace(total=3, completed=3, failed=0),
        )


@pytest.mark.parametrize(
    "error", [RuntimeError("an SDK or parsing bug"), ValueError("unexpected response")]
)
async def test_an_unexpected_retrieve_error_reschedules_instead_of_dropping(
    error: BaseException,
) -> None:
    batches = FlakyBatches(error)
    finished: list[tuple[str, BatchOutcome]] = []
    done = asyncio.Event()

    async def on_finished(tracked: Tracked, outcome: BatchOutcome) -> None:
        finished.append((tracked.record.batch_id, outcome))
        done.set()

    outcomes: list[str] = []
    pacer = RetrievePacer(PollSchedule(0.05, jitter=0.0), TokenBucket(100.0))
    follower = Follower(
        Providers.single(OpenAIProvider(cast(Any, SimpleNamespace(batches=batches)))),
        pacer,
        on_finished,
        concurrency=2,
        on_retrieve=outcomes.append,
    )
    follower.follow(Tracked(record("batch_x"), partition=0, offset=0), delay=0.0)
    runner = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert batches.calls == 2
    assert outcomes == ["error", "ok"]
    assert [(b, o.status) for b, o in finished] == [("batch_x", "completed")]
    assert "batch_x" not in follower.tracked
