"""Windowing: group valid request lines into batches, one open window per (endpoint, model,
API key name).

The key name (header ``batchpipe-key``, stamped by ingest; None when absent) is part of the
group so that a batch's requests all come from one key: its ``BatchRecord`` names the key in
one field (small for 50,000 requests) and the poller attributes every result without a
per-request map. The price is smaller batches when several keys send the same model at once.

Pure and synchronous (no Kafka, no I/O): the intake feeds it lines, the timer asks it for due
windows, and it hands back ``Window`` objects that are ready to submit. A window is cut when

- it holds ``max_requests`` lines,
- adding the next line would make its JSONL exceed ``max_bytes`` (the window is cut *first*,
  the line opens the next window), counting the exact bytes of each line plus its ``\\n``,

(both per group: ``limits(model)`` gives a group's own, e.g. its provider's, never above the
settings' ``max_requests`` / ``max_bytes``),
- ``max_wait`` seconds have passed since its first request (``due()``, by the injectable clock).

A line whose ``custom_id`` is already in the open window of its group is a duplicate: it is
dropped and counted, never sent twice. Every window remembers the Kafka position
``(topic, partition, offset)`` of every request it holds (dropped duplicates are reported back
to the caller so their offsets can be released).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from batchpipe.services.dispatcher.records import TP, Position

GroupKey = tuple[str, str, str | None]  # (endpoint, model, API key name)
CutReason = Literal["count", "bytes", "time", "flush"]
Clock = Callable[[], float]


@dataclass(slots=True)
class Window:
    """The requests of one future batch. ``lines`` are the exact JSONL lines without their
    ``\\n`` (usually the consumed values themselves); ``nbytes`` is the file's size."""

    endpoint: str
    model: str
    opened_at: float  # clock time of the first request (for the time limit)
    opened_at_unix: float  # wall time of the first request (for the BatchRecord)
    lines: list[bytes] = field(default_factory=list)
    # the Kafka position of each line: its (topic, partition), one shared tuple per fetched
    # chunk, and its offset (no tuple made per request: 50,000 of them per window kept the
    # garbage collector busy)
    tps: list[TP] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    custom_ids: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)  # only attempts > 0
    api_key: str | None = None  # the name of the ingest API key of every line (None: none)
    nbytes: int = 0
    cut_reason: CutReason | None = None
    cut_at: float | None = None

    @property
    def count(self) -> int:
        return len(self.lines)

    def age(self) -> float:
        """Seconds between the first request and the cut (0 while open)."""
        return 0.0 if self.cut_at is None else max(0.0, self.cut_at - self.opened_at)

    @property
    def positions(self) -> list[Position]:
        """``(topic, partition, offset)`` of each line, in order."""
        return [(t, p, o) for (t, p), o in zip(self.tps, self.offsets, strict=True)]

    def add_position(self, position: Position) -> None:
        self.tps.append((position[0], position[1]))
        self.offsets.append(position[2])

    def covered(self) -> dict[TP, list[int]]:
        """The offsets this window holds, per (topic, partition), ascending."""
        out: dict[TP, list[int]] = {}
        for tp, offset in zip(self.tps, self.offsets, strict=True):
            out.setdefault(tp, []).append(offset)
        for offsets in out.values():
            offsets.sort()
        return out

    def release_lines(self) -> None:
        """Drop the encoded lines once they are on disk (memory is not held twice)."""
        self.lines = []


class Windows:
    """The open windows, keyed by (endpoint, model, API key name)."""

    def __init__(
        self,
        *,
        max_requests: int,
        max_bytes: int,
        max_wait: float,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        limits: Callable[[str], tuple[int, int]] | None = None,
        max_line_bytes: int | None = None,
    ) -> None:
        if max_requests < 1 or max_bytes < 1 or max_wait <= 0:
            raise ValueError("window limits must be positive")
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        # the largest line any window takes (validated before a line is windowed): no larger
        # than the smallest model's byte limit, so that every valid line fits its window
        self.max_line_bytes = max_bytes if max_line_bytes is None else max_line_bytes
        self._limits = limits
        self._group_limits: dict[str, tuple[int, int]] = {}
        self.max_wait = max_wait
        self._clock = clock
        self._wall = wall_clock
        self._open: dict[GroupKey, Window] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        return sum(w.count for w in self._open.values())

    def limits_of(self, model: str) -> tuple[int, int]:
        """``(max_requests, max_bytes)`` of ``model``'s windows (cached per model)."""
        found = self._group_limits.get(model)
        if found is None:
            requests, nbytes = self.max_requests, self.max_bytes
            if self._limits is not None:
                own_requests, own_bytes = self._limits(model)
                requests, nbytes = min(requests, own_requests), min(nbytes, own_bytes)
            found = self._group_limits[model] = (requests, nbytes)
        return found

    @property
    def open_windows(self) -> list[Window]:
        return list(self._open.values())

    def add(
        self,
        endpoint: str,
        model: str,
        custom_id: str,
        line: bytes,
        position: Position,
        attempt: int = 0,
        api_key: str | None = None,
    ) -> Sequence[Window] | None:
        """Add one request's line: the windows this cut (0, 1 or 2; usually an empty tuple,
        no object built), or None for a duplicate (dropped and counted)."""
        size = len(line) + 1
        max_requests, max_bytes = self.limits_of(model)
        if size > max_bytes:
            raise ValueError(f"line of {size} bytes exceeds max_bytes={max_bytes}")
        key = (endpoint, model, api_key)
        window = self._open.get(key)
        cut: Sequence[Window] = ()
        if window is not None:
            if custom_id in window.custom_ids:
                self.duplicates += 1
                return None
            if window.nbytes + size > max_bytes:
                cut = [self._cut(key, "bytes")]
                window = None
        if window is None:
            window = Window(
                endpoint=endpoint,
                model=model,
                opened_at=self._clock(),
                opened_at_unix=self._wall(),
                api_key=api_key,
            )
            self._open[key] = window
        lines = window.lines
        lines.append(line)
        window.add_position(position)
        window.custom_ids.add(custom_id)
        if attempt > 0:
            window.attempts[custom_id] = attempt
        window.nbytes += size
        if len(lines) >= max_requests:
            cut = [*cut, self._cut(key, "count")]
        return cut

    def add_chunk(
        self,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        lines: Sequence[tuple[str, str, str, bytes] | object],
        attempts: Sequence[int] | None = None,
        key_names: Sequence[str | None] | None = None,
    ) -> tuple[list[tuple[int, str]], list[Window]]:
        """``add`` for a fetched chunk of one partition: ``lines[i]`` is the
        ``(custom_id, endpoint, model, line)`` of ``offsets[i]``, or anything else (not a
        tuple: an invalid request) to skip; ``attempts[i]`` and ``key_names[i]`` its attempt
        and API key name (None: all 0 and None). Same windows, cuts and duplicates as calling
        ``add`` for each in turn, with the group's window looked up only when the group
        changes. Returns the dropped duplicates ``(offset, custom_id)`` and the cut windows,
        in order."""
        duplicates: list[tuple[int, str]] = []
        cuts: list[Window] = []
        open_ = self._open
        key: GroupKey = ("", "", None)
        max_requests, max_bytes = self.max_requests, self.max_bytes
        window: Window | None = None
        tp = (topic, partition)
        for i, item in enumerate(lines):
            if type(item) is not tuple:
                continue
            custom_id, endpoint, model, line = item
            size = len(line) + 1
            api_key = key_names[i] if key_names is not None else None
            if window is None or model != key[1] or endpoint != key[0] or api_key != key[2]:
                key = (endpoint, model, api_key)
                window = open_.get(key)
                max_requests, max_bytes = self.limits_of(model)
            if size > max_bytes:
                raise ValueError(f"line of {size} bytes exceeds max_bytes={max_bytes}")
            if window is not None:
                if custom_id in window.custom_ids:
                    self.duplicates += 1
                    duplicates.append((offsets[i], custom_id))
                    continue
                if window.nbytes + size > max_bytes:
                    cuts.append(self._cut(key, "bytes"))
                    window = None
            if window is None:
                window = open_[key] = Window(
                    endpoint=endpoint,
                    model=model,
                    opened_at=self._clock(),
                    opened_at_unix=self._wall(),
                    api_key=api_key,
                )
            window.lines.append(line)
            window.tps.append(tp)
            window.offsets.append(offsets[i])
            window.custom_ids.add(custom_id)
            if attempts is not None and attempts[i] > 0:
                window.attempts[custom_id] = attempts[i]
            window.nbytes += size
            if len(window.lines) >= max_requests:
                cuts.append(self._cut(key, "count"))
                window = None
        return duplicates, cuts

    def due(self) -> list[Window]:
        """Cut and return every window whose first request is ``max_wait`` seconds old."""
        now = self._clock()
        keys = [k for k, w in self._open.items() if now - w.opened_at >= self.max_wait]
        return [self._cut(k, "time") for k in keys]

    def next_due_in(self) -> float | None:
        """Seconds until the oldest open window is due (None when nothing is open)."""
        if not self._open:
            return None
        now = self._clock()
        return max(0.0, min(w.opened_at + self.max_wait - now for w in self._open.values()))

    def flush(self) -> list[Window]:
        """Cut every open window (used by tests and benchmarks)."""
        return [self._cut(k, "flush") for k in list(self._open)]

    def drop_partitions(self, tps: Iterable[TP]) -> list[Position]:
        """Remove every request of these partitions from the open windows (on revocation:
        the partitions' next owner reads them again). Returns the dropped positions."""
        gone = set(tps)
        dropped: list[Position] = []
        for key, window in list(self._open.items()):
            if gone.isdisjoint(window.tps):
                continue
            kept = Window(
                endpoint=window.endpoint,
                model=window.model,
                opened_at=window.opened_at,
                opened_at_unix=window.opened_at_unix,
                api_key=window.api_key,
            )
            for line, tp, offset in zip(window.lines, window.tps, window.offsets, strict=True):
                if tp in gone:
                    dropped.append((tp[0], tp[1], offset))
                    continue
                custom_id = _custom_id_of(line)
                kept.lines.append(line)
                kept.tps.append(tp)
                kept.offsets.append(offset)
                kept.custom_ids.add(custom_id)
                if custom_id in window.attempts:
                    kept.attempts[custom_id] = window.attempts[custom_id]
                kept.nbytes += len(line) + 1
            if kept.lines:
                self._open[key] = kept
            else:
                del self._open[key]
        return dropped

    def _cut(self, key: GroupKey, reason: CutReason) -> Window:
        window = self._open.pop(key)
        window.cut_reason = reason
        window.cut_at = self._clock()
        return window


def _custom_id_of(line: bytes) -> str:
    import orjson

    value = orjson.loads(line)
    return str(value["custom_id"])
