"""ledger.py's pure parts: ranges and coverage, dispatch ids, the state's index, pruning."""

from __future__ import annotations

from batchpipe.services.dispatcher.ledger import (
    LedgerEntry,
    LedgerState,
    State,
    coverage_of,
    decode_entry,
    dispatch_id_for,
    encode_entry,
    to_ranges,
)


def test_ranges_and_coverage() -> None:
    assert to_ranges([1, 2, 3, 7, 9, 10]) == [1, 3, 7, 7, 9, 10]
    assert to_ranges([5, 6, 7]) == [5, 7] and to_ranges([4]) == [4, 4] and to_ranges([]) == []
    cov = coverage_of([("t", 1, 5), ("t", 0, 2), ("t", 0, 3), ("t", 1, 4)])
    assert cov == {"t:0": [2, 3], "t:1": [4, 5]}


def test_dispatch_id_is_deterministic_and_order_free() -> None:
    def dispatch_id(*positions: tuple[str, int, int]) -> str:
        return dispatch_id_for(coverage_of(positions))

    a = dispatch_id(("t", 0, 1), ("t", 1, 5), ("t", 0, 2))
    b = dispatch_id(("t", 1, 5), ("t", 0, 2), ("t", 0, 1))  # consumed in another order
    others = {
        dispatch_id(("t", 0, 1), ("t", 1, 6), ("t", 0, 2)),  # one other offset
        dispatch_id(("t", 0, 1), ("t", 1, 5)),  # one request less
        dispatch_id(("t", 0, 1), ("t", 2, 5), ("t", 0, 2)),  # another partition
        dispatch_id(("u", 0, 1), ("u", 1, 5), ("u", 0, 2)),  # another topic
        dispatch_id(("t", 0, 1), ("t", 1, 5), ("t", 0, 3)),  # a gap: ranges 1-1, 3-3
    }
    assert a == b and a.startswith("dsp_") and a not in others and len(others) == 5


def entry(dispatch_id: str, positions: list[tuple[str, int, int]], state: State) -> LedgerEntry:
    return LedgerEntry(
        dispatch_id=dispatch_id,
        state=state,
        endpoint="/v1/chat/completions",
        model="m",
        request_count=len(positions),
        input_bytes=1,
        window_opened_at=0.0,
        coverage=coverage_of(positions),
        planned_at=0.0,
        updated_at=0.0,
    )


def test_ledger_state_covering_transitions_and_tombstones() -> None:
    s = LedgerState()
    e1 = entry("d1", [("t", 0, 0), ("t", 0, 1), ("t", 0, 5)], "planned")
    e2 = entry("d2", [("t", 0, 2), ("t", 0, 3), ("t", 1, 0)], "published")
    s.apply(e1)
    s.apply(e2)
    assert [s.covering(("t", 0), o) for o in range(7)] == ["d1", "d1", "d2", "d2", None, "d1", None]
    assert s.covering(("t", 1), 0) == "d2" and s.covering(("t", 2), 0) is None
    assert [e.dispatch_id for e in s.unfinished([("t", 0)])] == ["d1"]
    assert s.unfinished([("t", 1)]) == []
    s.apply(e1.with_state("abandoned"))  # abandoned: its requests are free again
    assert s.covering(("t", 0), 0) is None and s.unfinished() == []
    s.apply(None, "d2")
    assert s.covering(("t", 0), 2) is None and "d2" not in s.entries
    assert decode_entry(encode_entry(e2)) == e2


def test_ledger_state_covers_any_matches_covering_over_every_range() -> None:
    s = LedgerState()
    s.apply(entry("d1", [("t", 0, 0), ("t", 0, 1), ("t", 0, 5), ("t", 0, 9)], "planned"))
    s.apply(entry("d2", [("t", 0, 2), ("t", 0, 3), ("t", 1, 0)], "published"))
    for tp in [("t", 0), ("t", 1), ("t", 2)]:
        for first in range(-1, 12):
            for last in range(first, 12):
                expected = any(s.covering(tp, o) is not None for o in range(first, last + 1))
                assert s.covers_any(tp, first, last) == expected, (tp, first, last)


def test_prunable_entries_lie_entirely_below_the_committed_offsets() -> None:
    s = LedgerState()
    s.apply(entry("done", [("t", 0, 0), ("t", 1, 4)], "published"))
    s.apply(entry("gone", [("t", 0, 1)], "abandoned"))
    s.apply(entry("open", [("t", 0, 2)], "created"))
    s.apply(entry("late", [("t", 0, 3), ("t", 1, 9)], "published"))
    assert sorted(s.prunable({("t", 0): 10, ("t", 1): 5})) == ["done", "gone"]
    assert s.prunable({("t", 0): 10}) == ["gone"]  # partition 1 not ours / not committed
