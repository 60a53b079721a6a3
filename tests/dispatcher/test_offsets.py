"""The commit watermark: out-of-order completion never commits past a pending request."""

from __future__ import annotations

import random
from collections import defaultdict
from types import SimpleNamespace

from batchpipe.services.dispatcher.ledger import to_ranges
from batchpipe.services.dispatcher.offsets import OffsetTracker

TP = ("requests", 0)


def test_out_of_order_windows_do_not_pass_a_buffered_request() -> None:
    t = OffsetTracker()
    for o in range(10):
        assert t.seen(TP, o)
    # window B (offsets 5..9, another model) finishes before window A (0..4)
    for o in range(5, 10):
        t.done(TP, o)
    assert t.watermark(TP) == 0
    assert t.committable() == {TP: 0}
    # even with offset 0 done and 1 still pending (Faust's off-by-one case)
    t.done(TP, 0)
    assert t.committable() == {TP: 1}
    t.committed({TP: 1})
    for o in range(2, 5):
        t.done(TP, o)
    assert t.watermark(TP) == 1  # 1 is still pending
    assert t.committable() == {}
    t.done(TP, 1)
    assert t.committable() == {TP: 10}


def test_first_offset_not_zero_and_redelivery_ignored() -> None:
    t = OffsetTracker()
    assert t.seen(TP, 42)
    assert not t.seen(TP, 42)
    assert not t.seen(TP, 41)
    assert t.committable() == {TP: 42}
    t.done(TP, 42)
    assert t.committable() == {TP: 43}
    t.committed({TP: 43})
    assert t.committable() == {}


def test_partitions_are_independent_and_forgettable() -> None:
    t = OffsetTracker()
    t.seen(("r", 0), 0)
    t.seen(("r", 1), 0)
    t.done(("r", 1), 0)
    assert t.committable() == {("r", 0): 0, ("r", 1): 1}
    t.forget([("r", 0), ("r", 1)])
    assert t.committable() == {}
    t.done(("r", 0), 0)  # late completion of a revoked partition: ignored
    assert t.pending_count() == 0


def test_a_run_of_offsets_is_seen_at_once_or_not_at_all() -> None:
    t = OffsetTracker()
    assert t.seen_run(TP, [3, 4, 6])  # (a gap: compaction or a transaction marker)
    assert t.pending_count(TP) == 3 and t.watermark(TP) == 3
    assert not t.seen_run(TP, [6, 7])  # 6 was seen: nothing is taken
    assert t.pending_count(TP) == 3
    assert not t.seen(TP, 5) and t.seen(TP, 7)
    for o in (3, 4, 6, 7):
        t.done(TP, o)
    assert t.committable() == {TP: 8}


def test_done_ranges_matches_done_one_by_one() -> None:
    """Windows of several models finishing in any order: marking a window's coverage done
    range by range (the fast path pops the head run) gives the same watermark as offset by
    offset, after every window."""
    rng = random.Random(7)
    for _ in range(200):
        offsets = list(range(rng.randrange(1, 60)))
        models = [rng.randrange(3) for _ in offsets]
        windows = [[o for o, m in zip(offsets, models, strict=True) if m == k] for k in range(3)]
        rng.shuffle(windows)
        by_range, one_by_one = OffsetTracker(), OffsetTracker()
        assert by_range.seen_run(TP, offsets)
        for o in offsets:
            assert one_by_one.seen(TP, o)
        for window in windows:
            flat = to_ranges(window)
            by_range.done_ranges((TP, flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
            one_by_one.done_many((TP[0], TP[1], o) for o in window)
            assert by_range.watermark(TP) == one_by_one.watermark(TP)
            assert by_range.pending_count() == one_by_one.pending_count()
        assert by_range.committable() == {TP: len(offsets)}


# --- why faust acks are off for the requests topic ---------------------------------------


def faust_new_offset(acked: list[int], committed: int | None) -> int | None:
    """Run faust-streaming's own Consumer._new_offset on a minimal consumer state."""
    from faust.transport.consumer import Consumer

    fake = SimpleNamespace(
        _acked={"tp": list(acked)},
        _gap=defaultdict(_EmptyTree),
        _committed_offset={"tp": committed},
        _acked_index=defaultdict(set),
    )
    result: int | None = Consumer._new_offset(fake, "tp")  # type: ignore[arg-type]
    return result


class _EmptyTree:
    def __bool__(self) -> bool:
        return False


def test_faust_commits_past_an_unacked_offset() -> None:
    """Documented faust-streaming 0.15 behaviour the dispatcher must not rely on: acked
    offsets that are not contiguous with the committed one are still committed."""
    # nothing committed yet for the partition: 0..4 buffered (unacked), 5..9 acked
    assert faust_new_offset(list(range(5, 10)), None) == 10
    # committed = 10 (next to read), offset 10 unacked, 11..12 acked: off by one
    assert faust_new_offset([11, 12], 10) == 13
