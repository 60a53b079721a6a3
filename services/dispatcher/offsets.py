"""Which consumed offsets may be committed: a contiguous "done" watermark per partition.

Pure. Every consumed request is ``seen`` (in offset order, per partition) and later ``done``:
its batch record was published, or its dead letter acknowledged, or it was a dropped duplicate,
or the ledger shows it is already in a batch. ``committable()`` gives, per partition, the offset
to commit: the lowest offset that is *not* done yet (or one past the last seen).

This is what Faust's own ack bookkeeping does not guarantee here: windows per
(endpoint, model) finish out of order, and faust-streaming 0.15's
``Consumer._new_offset`` commits past an unacked offset in two cases (the first acked offset is
exactly one above the committed one, or nothing was committed yet for the partition). So the
dispatcher disables Faust acks for the requests topic and commits this watermark itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from batchpipe.services.dispatcher.records import TP


class _Partition:
    __slots__ = ("done", "last_seen", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # seen, ascending
        self.done: set[int] = set()  # subset of pending that is done (out of order)
        self.last_seen: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._committed: dict[TP, int] = {}

    def seen(self, tp: TP, offset: int) -> bool:
        """Track a consumed offset; False if it was already seen (a redelivery to ignore)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if part.last_seen is not None and offset <= part.last_seen:
            return False
        part.last_seen = offset
        part.pending.append(offset)
        return True

    def seen_run(self, tp: TP, offsets: list[int]) -> bool:
        """``seen`` for ascending ``offsets`` at once (a plain fetch): all or nothing, False if
        the first of them was seen already (then track them one by one)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if part.last_seen is not None and offsets[0] <= part.last_seen:
            return False
        part.last_seen = offsets[-1]
        part.pending.extend(offsets)
        return True

    def done(self, tp: TP, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None:
            return  # the partition was revoked meanwhile
        pending = part.pending
        if pending and pending[0] == offset and not part.done:
            pending.popleft()  # the usual case: done in order, nothing else waiting
            return
        part.done.add(offset)
        while pending and pending[0] in part.done:
            part.done.discard(pending.popleft())

    def done_many(self, positions: Iterable[tuple[str, int, int]]) -> None:
        for topic, partition, offset in positions:
            self.done((topic, partition), offset)

    def done_ranges(self, ranges: Iterable[tuple[TP, int, int]]) -> None:
        """``done`` for every offset of the inclusive ranges ``(tp, first, last)`` (a window's
        coverage). The usual case, a range that is the oldest pending run of its partition
        with nothing done out of order, is popped without looking at each offset."""
        for tp, first, last in ranges:
            part = self._parts.get(tp)
            if part is None:
                continue
            pending = part.pending
            count = last - first + 1
            # pending is strictly ascending: if it starts at ``first`` and its count-th
            # entry is ``last``, its head is exactly first..last
            if (
                not part.done
                and pending
                and pending[0] == first
                and len(pending) >= count
                and pending[count - 1] == last
            ):
                if count == len(pending):
                    pending.clear()
                else:
                    for _ in range(count):
                        pending.popleft()
                continue
            for offset in range(first, last + 1):
                self.done(tp, offset)

    def watermark(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        if part is None or part.last_seen is None:
            return None
        return part.pending[0] if part.pending else part.last_seen + 1

    def committable(self) -> dict[TP, int]:
        """Offsets to commit now: only partitions whose watermark moved since the last call
        to ``committed``."""
        out: dict[TP, int] = {}
        for tp in self._parts:
            mark = self.watermark(tp)
            if mark is not None and mark > self._committed.get(tp, -1):
                out[tp] = mark
        return out

    def committed(self, offsets: dict[TP, int]) -> None:
        self._committed.update(offsets)

    def committed_offsets(self) -> dict[TP, int]:
        """What was committed successfully, per partition."""
        return dict(self._committed)

    def pending_count(self, tp: TP | None = None) -> int:
        parts = [self._parts[tp]] if tp is not None and tp in self._parts else []
        if tp is None:
            parts = list(self._parts.values())
        return sum(len(p.pending) for p in parts)

    def partitions(self) -> set[TP]:
        """Every partition with tracked offsets."""
        return set(self._parts)

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop partitions (revoked): their next owner starts from the committed offset."""
        for tp in tps:
            self._parts.pop(tp, None)
            self._committed.pop(tp, None)
