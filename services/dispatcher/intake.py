"""Consumed requests into windows: the dispatcher's consuming loop.

``Intake.take(records)`` takes one fetched chunk (both engines deliver one partition's records
per call, in offset order) and, per request: tracks its offset (a redelivered offset is
ignored), skips it if the ledger already has it in a dispatch (a replay after a crash),
validates it (an invalid request becomes a dead letter), and adds it to its window (a
duplicate custom_id in the open window is dropped). Windows it cuts go to ``enqueue``.

The per-request work is one synchronous loop, so a chunk costs a few attribute lookups per
request. It awaits only to publish a dead letter or queue a cut window (the queue is bounded:
that await is the dispatcher's backpressure), and after each await it checks readiness and
staleness again, because a rebalance may have happened meanwhile. A request counts as done
(``OffsetTracker.done``) only once nothing more is owed for it: a dropped duplicate and a
replayed request at once, a dead letter once acknowledged, a windowed request once its batch
is published (``dispatcher.py``).

Two ways through a chunk, with the same outcome: the usual chunk (one partition, ascending
offsets, none seen before, none in a dispatch of the ledger) has its offsets tracked and the
ledger checked once, and is windowed in one call (``Windows.add_chunk``); any other chunk
(redeliveries, a replay, several partitions) goes request by request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.offsets import OffsetTracker
from batchpipe.services.dispatcher.records import (
    Incoming,
    Record,
    as_incoming,
    attempt_of,
    key_name_of,
    offsets_of_one_partition,
)
from batchpipe.services.dispatcher.validate import Invalid, Row, validate_row
from batchpipe.services.dispatcher.window import Window, Windows
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

# Records handled per synchronous stretch (~2-3 ms): between stretches the event loop runs its
# other tasks (a dispatch awaits ~20 times: ledger writes, create, publish, commit), which a
# whole 5,000-record chunk would hold up for ~20 ms per await.
SLICE = 500

Stale = Callable[[], bool]


def never_stale() -> bool:
    return False


class Intake:
    def __init__(
        self,
        *,
        windows: Windows,
        offsets: OffsetTracker,
        ledger: Ledger,
        metrics: Metrics,
        ready: asyncio.Event,
        generation: Callable[[], int],
        dead_letter: Callable[[Incoming, Invalid], Awaitable[None]],
        enqueue: Callable[[Window, int], Awaitable[None]],
        check: Callable[[Row], Invalid | None] | None = None,
    ) -> None:
        self.windows = windows
        # the provider's own refusal of a valid line (e.g. untranslatable for Anthropic)
        self._check = check
        self.offsets = offsets
        self.ledger = ledger
        self.metrics = metrics
        self.ready = ready
        self._generation = generation
        self._dead_letter = dead_letter
        self._enqueue = enqueue
        self.consumed = 0  # not yet added to the counter (the timer does, once per tick)

    async def take(self, records: Sequence[Record], is_stale: Stale = never_stale) -> None:
        """Take a chunk of consumed requests (in offset order per partition)."""
        for start in range(0, len(records), SLICE):
            if start:
                await asyncio.sleep(0)
            part = records[start : start + SLICE]
            offsets = offsets_of_one_partition(part)
            if offsets is None or not await self._take_run(part, offsets, is_stale):
                await self._take_each(part, is_stale)

    async def _take_run(
        self, records: Sequence[Record], offsets: list[int], is_stale: Stale
    ) -> bool:
        """The usual chunk. False, with nothing changed, when the chunk is not one (then
        ``_take_each`` takes it)."""
        if not self.ready.is_set():
            await self.ready.wait()
        if is_stale():
            return True
        generation = self._generation()
        topic, partition = records[0].topic, records[0].partition
        tp = (topic, partition)
        if self.ledger.state.covers_any(tp, offsets[0], offsets[-1]):
            return False
        if not self.offsets.seen_run(tp, offsets):
            return False
        self.consumed += len(offsets)
        max_bytes = self.windows.max_line_bytes
        rows: list[Row | Invalid] = [validate_row(r.value, max_bytes) for r in records]
        check = self._check
        if check is not None:
            rows = [(check(row) or row) if type(row) is tuple else row for row in rows]
        attempts: list[int] | None = None
        key_names: list[str | None] | None = None
        if any(r.headers for r in records):
            attempts = [attempt_of(r.headers) for r in records]
            key_names = [key_name_of(r.headers) for r in records]
        dropped, cuts = self.windows.add_chunk(topic, partition, offsets, rows, attempts, key_names)
        for offset, custom_id in dropped:
            log.info("request.duplicate_dropped", custom_id=custom_id)
            self.offsets.done(tp, offset)
        if dropped:
            self.metrics.duplicates.inc(len(dropped))
        invalid = [
            (record, row) for record, row in zip(records, rows, strict=True) if type(row) is Invalid
        ]
        for record, reason in invalid:
            await self._dead_letter(as_incoming(record), reason)
            if generation != self._generation():
                return True  # revoked: everything buffered was dropped
            self.offsets.done(tp, record.offset)
        for window in cuts:
            await self._enqueue(window, generation)
        return True

    async def _take_each(self, records: Sequence[Record], is_stale: Stale) -> None:
        """Any chunk (several partitions, redeliveries, replayed requests), request by
        request."""
        n = len(records)
        i = 0
        max_bytes = self.windows.max_line_bytes
        skipped = duplicates = 0
        try:
            while i < n:
                if not self.ready.is_set():
                    await self.ready.wait()
                if is_stale():
                    return
                generation = self._generation()
                # bound after every await: a rebalance replaces the ledger's state
                seen = self.offsets.seen
                done = self.offsets.done
                covering = self.ledger.state.covering
                add = self.windows.add
                consumed = 0
                pending: Record | None = None
                action: Invalid | Sequence[Window] = ()
                while i < n:  # synchronous: nothing else runs until an await below
                    record = records[i]
                    i += 1
                    tp = (record.topic, record.partition)
                    offset = record.offset
                    if not seen(tp, offset):
                        continue
                    consumed += 1
                    if covering(tp, offset) is not None:
                        skipped += 1
                        done(tp, offset)
                        continue
                    row = validate_row(record.value, max_bytes)
                    if self._check is not None and type(row) is tuple:
                        row = self._check(row) or row
                    if isinstance(row, Invalid):
                        pending, action = record, row
                        break
                    custom_id, endpoint, model, line = row
                    headers = record.headers
                    cut = add(
                        endpoint,
                        model,
                        custom_id,
                        line,
                        (tp[0], tp[1], offset),
                        attempt_of(headers) if headers else 0,
                        key_name_of(headers) if headers else None,
                    )
                    if cut is None:
                        duplicates += 1
                        log.info("request.duplicate_dropped", custom_id=custom_id)
                        done(tp, offset)
                    elif cut:
                        action = cut
                        break
                self.consumed += consumed
                if isinstance(action, Invalid):
                    assert pending is not None
                    await self._dead_letter(as_incoming(pending), action)
                    if generation == self._generation():
                        self.offsets.done((pending.topic, pending.partition), pending.offset)
                else:
                    for window in action:
                        await self._enqueue(window, generation)
        finally:
            if skipped:
                self.metrics.skipped.inc(skipped)
            if duplicates:
                self.metrics.duplicates.inc(duplicates)
