"""Committing the requests topic's offsets, and pruning the ledger behind them.

The committed offset of a partition is ``OffsetTracker``'s watermark: the lowest offset that
is not done yet (in a published batch, dead-lettered, a dropped duplicate, or skipped because
the ledger has it), so a commit never passes a buffered request. Commits are serialized
(dispatches finish concurrently and the timer commits too), so the committed offsets only move
forward, and only partitions this worker owns are committed. A failed commit only means a
replay, which the ledger turns into skips.

Once every partition of a ledger entry is committed past it, no replay can reach it: it is
tombstoned, so the compacted ledger stays small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.dispatcher.offsets import OffsetTracker
from batchpipe.services.dispatcher.records import TP
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

CommitFn = Callable[[dict[TP, int]], Awaitable[bool]]


class Committer:
    def __init__(
        self,
        offsets: OffsetTracker,
        ledger: Ledger,
        commit: CommitFn,
        assigned: Callable[[], set[TP]],
    ) -> None:
        self.offsets = offsets
        self.ledger = ledger
        self._commit = commit
        self._assigned = assigned  # the partitions this worker owns now
        self._lock = asyncio.Lock()

    async def commit(self) -> None:
        """Commit the watermark of every owned partition that moved."""
        async with self._lock:
            assigned = self._assigned()
            offsets = {tp: o for tp, o in self.offsets.committable().items() if tp in assigned}
            if not offsets:
                return
            try:
                if not await self._commit(offsets):
                    return
            except Exception as exc:  # a failed commit only means a replay (the ledger skips)
                log.warning("dispatcher.commit_failed", error=repr(exc))
                return
            self.offsets.committed(offsets)
            await self._prune()

    async def _prune(self) -> None:
        """Tombstone ledger entries that no replay can reach any more (all their partitions are
        ours and committed past them)."""
        assigned = self._assigned()
        committed = {tp: o for tp, o in self.offsets.committed_offsets().items() if tp in assigned}
        for dispatch_id in self.ledger.state.prunable(committed):
            try:
                await self.ledger.forget(dispatch_id)
            except KafkaError as exc:
                log.warning("ledger.prune_failed", error=repr(exc))
                return
