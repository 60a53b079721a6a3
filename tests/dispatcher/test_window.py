"""Unit tests of the windowing step (no Kafka)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from batchpipe.services.dispatcher.window import Window, Windows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def line(custom_id: str, size: int = 0) -> bytes:
    return (b'{"custom_id":"%s","x":"%s"}') % (custom_id.encode(), b"x" * size)


def make(**kw: object) -> tuple[Windows, Clock]:
    clock = Clock()
    values: dict[str, object] = {"max_requests": 3, "max_bytes": 10_000, "max_wait": 60.0}
    values.update(kw)
    return Windows(clock=clock, wall_clock=clock, **values), clock  # type: ignore[arg-type]


def add(w: Windows, cid: str, model: str = "m", offset: int = 0, size: int = 0) -> list[Window]:
    cut = w.add(
        endpoint="/v1/chat/completions",
        model=model,
        custom_id=cid,
        line=line(cid, size),
        position=("t", 0, offset),
    )
    assert cut is not None, "not a duplicate"
    return list(cut)


def test_count_cut_keeps_positions() -> None:
    w, _ = make()
    assert add(w, "a", offset=5) == []
    assert add(w, "b", offset=6) == []
    cut = add(w, "c", offset=9)
    assert len(cut) == 1
    assert cut[0].cut_reason == "count"
    assert cut[0].positions == [("t", 0, 5), ("t", 0, 6), ("t", 0, 9)]
    assert cut[0].covered() == {("t", 0): [5, 6, 9]}
    assert len(w) == 0


def test_fifty_thousand_cap() -> None:
    w, _ = make(max_requests=50_000, max_bytes=200_000_000)
    cuts = []
    for i in range(100_001):
        cuts += add(w, f"r{i}", offset=i)
    assert [c.count for c in cuts] == [50_000, 50_000]
    assert len(w) == 1


def test_bytes_cut_happens_before_the_overflowing_line() -> None:
    size = len(line("a", 100)) + 1  # in the file: the line and its newline
    w, _ = make(max_requests=100, max_bytes=size * 2 + 10)
    assert add(w, "a", size=100, offset=0) == []
    assert add(w, "b", size=100, offset=1) == []
    cut = add(w, "c", size=100, offset=2)
    assert len(cut) == 1 and cut[0].cut_reason == "bytes"
    assert cut[0].nbytes == size * 2 == sum(len(x) + 1 for x in cut[0].lines)
    assert cut[0].nbytes <= w.max_bytes
    assert [o for _, _, o in cut[0].positions] == [0, 1]
    assert len(w) == 1  # "c" opened the next window


def test_exact_bytes_limit_is_allowed() -> None:
    size = len(line("a")) + 1
    w, _ = make(max_requests=100, max_bytes=size * 2)
    add(w, "a")
    assert add(w, "b") == []
    assert len(add(w, "c")) == 1


def test_oversize_line_is_refused() -> None:
    w, _ = make(max_bytes=10)
    with pytest.raises(ValueError):
        add(w, "a", size=100)


def test_time_cut_by_injected_clock() -> None:
    w, clock = make(max_wait=60.0)
    add(w, "a", model="m1")
    clock.now += 30
    add(w, "b", model="m2")
    assert w.due() == []
    assert w.next_due_in() == pytest.approx(30)
    clock.now += 30
    due = w.due()
    assert [x.model for x in due] == ["m1"]
    assert due[0].cut_reason == "time" and due[0].age() == pytest.approx(60)
    clock.now += 30
    assert [x.model for x in w.due()] == ["m2"]
    assert w.next_due_in() is None


def test_groups_by_endpoint_and_model() -> None:
    w, _ = make(max_requests=2)
    assert add(w, "a", model="m1") == []
    assert add(w, "b", model="m2") == []
    cut = add(w, "c", model="m1")
    assert [(x.model, x.count) for x in cut] == [("m1", 2)]
    assert len(w) == 1


def test_duplicate_custom_id_in_window_dropped_and_counted() -> None:
    w, _ = make()
    add(w, "a", offset=0)
    res = w.add(
        endpoint="/v1/chat/completions",
        model="m",
        custom_id="a",
        line=line("a"),
        position=("t", 0, 1),
    )
    assert res is None  # a duplicate: dropped, nothing cut
    assert w.duplicates == 1
    assert len(w) == 1
    # the same custom_id in another group is not a duplicate of this window
    assert (
        w.add(
            endpoint="/v1/embeddings",
            model="m",
            custom_id="a",
            line=line("a"),
            position=("t", 0, 2),
        )
        is not None
    )


def test_attempts_kept_for_resubmissions() -> None:
    w, _ = make(max_requests=2)
    w.add(
        endpoint="/v1/chat/completions",
        model="m",
        custom_id="a",
        line=line("a"),
        position=("t", 0, 0),
        attempt=2,
    )
    cut = w.add(
        endpoint="/v1/chat/completions",
        model="m",
        custom_id="b",
        line=line("b"),
        position=("t", 0, 1),
    )
    assert cut is not None
    assert cut[0].attempts == {"a": 2}


def test_drop_partitions() -> None:
    w, _ = make(max_requests=10)
    w.add(
        endpoint="/v1/chat/completions",
        model="m",
        custom_id="a",
        line=line("a"),
        position=("t", 0, 0),
    )
    w.add(
        endpoint="/v1/chat/completions",
        model="m",
        custom_id="b",
        line=line("b"),
        position=("t", 1, 0),
    )
    w.add(
        endpoint="/v1/chat/completions",
        model="n",
        custom_id="c",
        line=line("c"),
        position=("t", 1, 1),
    )
    dropped = w.drop_partitions({("t", 1)})
    assert sorted(dropped) == [("t", 1, 0), ("t", 1, 1)]
    (left,) = w.flush()
    assert left.custom_ids == {"a"} and left.nbytes == len(line("a")) + 1


def test_add_chunk_is_add_for_each_line_in_turn() -> None:
    """Random chunks (two endpoints, three models, repeated custom_ids, invalid entries,
    attempts, count and bytes cuts, windows left open between chunks): ``add_chunk`` gives
    the same windows, cuts, duplicates and open windows as ``add`` per line."""
    rng = random.Random(3)
    for _ in range(100):
        limits = {"max_requests": rng.randrange(1, 6), "max_bytes": rng.randrange(60, 400)}
        by_line, _ = make(**limits)
        by_run, _ = make(**limits)
        offset = 0
        for _chunk in range(rng.randrange(1, 5)):
            offsets: list[int] = []
            items: list[object] = []
            attempts: list[int] = []
            for _ in range(rng.randrange(1, 30)):
                offsets.append(offset)
                offset += rng.randrange(1, 3)
                attempts.append(rng.choice([0, 0, 0, 2]))
                if rng.random() < 0.1:
                    items.append(object())  # an invalid request: skipped
                    continue
                cid = f"c{rng.randrange(12)}"
                items.append(
                    (
                        cid,
                        rng.choice(["/v1/chat/completions", "/v1/embeddings"]),
                        rng.choice(["m1", "m2", "m3"]),
                        line(cid, rng.randrange(0, 40)),
                    )
                )
            expected_dups: list[tuple[int, str]] = []
            expected_cuts: list[Window] = []
            for o, item, attempt in zip(offsets, items, attempts, strict=True):
                if not isinstance(item, tuple):
                    continue
                cid, endpoint, model, value = item
                cut = by_line.add(endpoint, model, cid, value, ("t", 4, o), attempt)
                if cut is None:
                    expected_dups.append((o, cid))
                else:
                    expected_cuts.extend(cut)
            dups, cuts = by_run.add_chunk("t", 4, offsets, items, attempts)
            assert dups == expected_dups
            assert [_shape(w) for w in cuts] == [_shape(w) for w in expected_cuts]
            assert [_shape(w) for w in by_run.open_windows] == [
                _shape(w) for w in by_line.open_windows
            ]
        assert by_run.duplicates == by_line.duplicates


def _shape(w: Any) -> tuple[Any, ...]:
    return (
        w.endpoint,
        w.model,
        w.lines,
        w.positions,
        w.custom_ids,
        w.attempts,
        w.nbytes,
        w.cut_reason,
    )


def test_window_memory_is_close_to_its_jsonl_size() -> None:
    """A window holds each request once, exact-size: the consumed value itself, or its
    re-encoding copied out of orjson's over-allocated buffer (here every other request lacks
    ``method`` and is re-encoded). The values are "consumed" inside the traced region, sliced
    out of a fetch buffer as aiokafka does, and dropped by the consumer once handled."""
    import tracemalloc

    from batchpipe.services.dispatcher.validate import Valid, validate

    encoded = []
    for i in range(5000):
        request: dict[str, Any] = {
            "custom_id": f"m-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "input": "x" * 900},
        }
        if i % 2:
            del request["method"]
        encoded.append(orjson.dumps(request))
    fetched = b"".join(encoded)
    bounds = []
    start = 0
    for value in encoded:
        bounds.append((start, start + len(value)))
        start += len(value)
    del encoded
    tracemalloc.start()
    try:
        windows = Windows(max_requests=50_000, max_bytes=10**8, max_wait=60)
        for i, (start, end) in enumerate(bounds):
            result = validate(fetched[start:end], 10**8)
            assert isinstance(result, Valid)
            windows.add(
                endpoint=result.endpoint,
                model=result.model,
                custom_id=result.custom_id,
                line=result.line,
                position=("t", 0, i),
            )
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (window,) = windows.flush()
    assert 1.0 * window.nbytes < used < 1.6 * window.nbytes, (used, window.nbytes)


def test_each_model_is_windowed_by_its_own_limits_never_above_the_settings() -> None:
    """A model's provider limits cut its windows (``limits``), both in ``add`` and in
    ``add_chunk``; the settings' limits stay the ceiling."""
    own = {"small": (2, 10_000), "big": (50, 10_000), "tight": (50, 80)}
    w, _ = make(max_requests=3, limits=lambda model: own[model])
    cuts = [c for i in range(4) for c in add(w, f"s{i}", model="small", offset=i)]
    assert [(c.count, c.cut_reason) for c in cuts] == [(2, "count"), (2, "count")]
    cuts = [c for i in range(3) for c in add(w, f"b{i}", model="big", offset=10 + i)]
    assert [(c.count, c.cut_reason) for c in cuts] == [(3, "count")]  # the settings' 3
    assert w.limits_of("tight") == (3, 80)
    rows = [(f"t{i}", "/v1/chat/completions", "tight", line(f"t{i}", 10)) for i in range(3)]
    _dups, cuts = w.add_chunk("t", 1, [20, 21, 22], rows)
    assert [(c.count, c.cut_reason) for c in cuts] == [(2, "bytes")]
    assert len(line("t0", 10)) + 1 == 36  # two fit in 80 bytes, a third does not
