"""publisher.py: offset bookkeeping; kill -9 in the middle of a result stream, then restart: a
read_committed consumer sees every custom_id exactly once, and the batch that was still in
flight at the crash is followed again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batchpipe.services.poller.publisher import PartitionOffsets
from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import settings_env
from tests.support import read_until

from .harness import (
    committed_consumer,
    create_batch,
    lines_for,
    poller_settings,
    publish_batches,
    running_poller,
    wait_ended,
)

pytestmark = pytest.mark.timeout(150)

BIG = 1000
CHUNK = 300
CRASH_AFTER = 700


def test_offsets_advance_only_past_finished_batches() -> None:
    offsets = PartitionOffsets()
    offsets.track(10, "a")
    offsets.track(11, "b")
    offsets.track(12, "c")
    assert offsets.committable() == 10
    assert offsets.committable(finishing=11) == 10  # b done first: a still holds the offset
    offsets.skip(11)
    assert offsets.committable(finishing=10) == 12
    offsets.skip(10)
    offsets.skip(13)  # an already-finished record, re-read on replay
    assert offsets.committable() == 12
    assert offsets.committable(finishing=12) == 14


def start_poller_process(settings: Any, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), **extra}
    batchpipe = Path(sys.executable).parent / "batchpipe"
    with log.open("ab") as out:
        return subprocess.Popen([str(batchpipe), "poller"], env=env, stdout=out, stderr=out)


async def test_kill_9_mid_stream_then_restart_is_exactly_once(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any, tmp_path: Path
) -> None:
    settings = await poller_settings(
        kafka_bootstrap, emulator, poller_txn_max_messages=CHUNK, log_format="json"
    )
    client = make_openai(settings)
    big = await create_batch(client, lines_for("big", BIG))
    assert await wait_ended(client, big.batch_id) == "completed"
    emulator.set_faults(processing_seconds=120.0)  # still in progress when the poller dies
    slow = await create_batch(client, lines_for("slow", 50))
    emulator.set_faults(processing_seconds=0.5)
    await publish_batches(await producer_factory(), settings, [big, slow])

    log = tmp_path / "poller.log"
    proc = start_poller_process(
        settings, log, BATCHPIPE_POLLER_CRASH_AFTER_RESULTS=str(CRASH_AFTER)
    )
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 137, log.read_text()[-3000:]
    assert "poller.crash_injected" in log.read_text()
    retrieved_slow = (await client.batches.retrieve(slow.batch_id)).status
    assert retrieved_slow not in ("completed", "failed", "expired", "cancelled")
    await client.batches.cancel(slow.batch_id)  # ends it (cancelled) within a few seconds

    # The crash left results on the broker in an open (never committed) transaction.
    dirty = await committed_consumer(
        settings, settings.results_topic, isolation_level="read_uncommitted"
    )
    before = await read_until(dirty, lambda rs: len(rs) >= CRASH_AFTER, timeout=20)
    assert len(before) >= CRASH_AFTER

    # Restart (same transactional ids: the open transaction is aborted) and read committed.
    clean = await committed_consumer(settings, settings.results_topic)
    async with running_poller(settings) as poller:
        got = await read_until(clean, lambda rs: len(rs) >= BIG + 50, timeout=60, settle=2.0)
        assert not poller.follower.tracked
        # It resumed after the last committed chunk instead of starting the file again.
        assert poller.metrics.published_total == BIG - (CRASH_AFTER // CHUNK) * CHUNK + 50
    ids = Counter(r.key.decode() for r in got)
    assert len(got) == BIG + 50 and set(ids.values()) == {1}, ids.most_common(3)
    assert {k.split("-")[0] for k in ids} == {"big", "slow"}

    # A plain (read_uncommitted) consumer does see the replayed duplicates.
    dirty_all = await read_until(dirty, lambda rs: len(before) + len(rs) >= BIG + 50, timeout=20)
    dirty_ids = Counter(r.key.decode() for r in [*before, *dirty_all])
    assert max(dirty_ids.values()) == 2 and sum(dirty_ids.values()) > BIG + 50

    # Nothing is left to do: a third poller run finds both batches finished.
    async with running_poller(settings) as poller:
        await asyncio.sleep(1.5)
        assert not poller.follower.tracked
    extra = await read_until(clean, lambda rs: True, settle=1.0)
    assert extra == []
    await dirty.stop()
    await clean.stop()
    await client.close()


async def test_restart_skips_batches_finished_behind_an_unfinished_one(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any
) -> None:
    """Offsets of ``batches`` only advance to the lowest unfinished batch; a batch finished
    after it is re-read on restart and skipped thanks to the state topic, not published twice."""
    settings = await poller_settings(kafka_bootstrap, emulator)
    client = make_openai(settings)
    emulator.set_faults(processing_seconds=120.0)
    slow = await create_batch(client, lines_for("slow", 5))
    emulator.set_faults(processing_seconds=0.3)
    fast = await create_batch(client, lines_for("fast", 5))
    assert await wait_ended(client, fast.batch_id) == "completed"
    await publish_batches(await producer_factory(), settings, [slow, fast], partition=0)
    results = await committed_consumer(settings, settings.results_topic)

    async with running_poller(settings) as poller:
        first = await read_until(results, lambda rs: len(rs) >= 5, timeout=20, settle=0.5)
        assert {r.key.decode().split("-")[0] for r in first} == {"fast"}
        assert slow.batch_id in poller.follower.tracked
        assert poller.publishers[0].offsets.committed == 0  # held back by the slow batch

    await client.batches.cancel(slow.batch_id)  # ends it (cancelled) within a few seconds
    async with running_poller(settings) as poller:
        assert fast.batch_id in poller.publishers[0].done
        second = await read_until(results, lambda rs: len(rs) >= 5, timeout=30, settle=1.0)
        assert poller.publishers[0].offsets.committed == 2
    keys = Counter(r.key.decode() for r in [*first, *second])
    assert len(keys) == 10 and set(keys.values()) == {1}
    await results.stop()
    await client.close()
