"""The dispatch ledger: durable, exactly-once submission of windows as provider batches.

Why: the providers' batch APIs take no idempotency key, so a replayed window (after ``kill -9``, a
rebalance, a retried ``batches.create``) would otherwise bill the same requests twice.

What: a compacted Kafka topic (``BATCHPIPE_DISPATCHER_LEDGER_TOPIC``, default
``<requests topic>.dispatch-ledger``, one partition, key = ``dispatch_id``). Each record is the
latest state of one dispatch::

    planned -> uploaded(file_id) -> created(batch_id) -> published      (or -> abandoned)

and carries the *coverage* of the dispatch: the exact Kafka offsets, per (topic, partition), of
the requests in the window (as ranges). ``dispatch_id`` is a deterministic hash of those
positions and custom_ids, and is how the provider finds the batch again (OpenAI: in the
batch's ``metadata.batchpipe_dispatch_id``). The entry also names the provider, so a
reconciliation asks the one that got the window even if the routes changed meanwhile.

The protocol (``agent.py`` drives it):

1. ``planned`` is written (acks=all) BEFORE the file is uploaded; ``uploaded`` and ``created``
   after each step; the batch record is published to ``batches``; then ``published``; only then
   do the window's offsets count as done and get committed.
2. On start and after every rebalance the worker reads the whole ledger back, then *reconciles*
   every unfinished entry (state planned/uploaded/created) that covers one of its partitions
   against its provider: a batch the provider finds for the dispatch id (``find``; by batch
   id when it is known) is re-published (same batch id, so the poller sees the same key
   again) and the entry becomes ``published``; if the provider has no such batch, no batch
   was created, and the entry becomes ``abandoned``. Reconciliation never
   creates a batch.
3. While consuming, a request whose (topic, partition, offset) is covered by a ledger entry
   that is not abandoned is *skipped* (it is already in a batch). Replayed streams re-form
   windows differently (time cuts!), so coverage is per offset, not per window boundary.
   Once the group's committed offsets have passed every request of a finished entry, no replay
   can reach it: the worker that owns all of its partitions tombstones it (compaction).
4. The provider's ``create`` never retries; after any failure the worker looks the dispatch
   up (``find``) before trying again, so a create that reached the provider but
   whose answer was lost is never repeated.
5. Before the rebalance completes (Faust's ``on_partitions_revoked`` is awaited, and aiokafka's
   eager protocol revokes before anyone is assigned), the old owner finishes its in-flight
   dispatch, or abandons it if ``create`` was not attempted yet, so two owners never race.

``LedgerState`` is the pure in-memory view (with a per-partition interval index for coverage
lookups); ``Ledger`` adds the Kafka reads and writes.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from batchpipe.services.dispatcher.records import TP, Position
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import LEDGER_MAX_MESSAGE_BYTES, dispatcher_ledger_spec, ledger_topic

log = get_logger(__name__)

State = Literal["planned", "uploaded", "created", "published", "abandoned"]
UNFINISHED: frozenset[str] = frozenset({"planned", "uploaded", "created"})


class LedgerEntry(BaseModel):
    """The latest state of one dispatch (internal to the dispatcher, not a topic contract)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dispatch_id: str
    state: State
    provider: str = "openai"
    endpoint: str
    model: str
    request_count: int
    input_bytes: int
    window_opened_at: float
    attempts: dict[str, int] = Field(default_factory=dict)
    api_key: str | None = None  # the window's API key name (BatchRecord.api_key)
    # "topic:partition" -> flat list [start0, end0, start1, end1, ...] (inclusive ranges)
    coverage: dict[str, list[int]]
    file_id: str | None = None
    batch_id: str | None = None
    create_attempted: bool = False
    planned_at: float
    updated_at: float
    worker: str = ""

    def with_state(self, state: State, **changes: Any) -> LedgerEntry:
        return self.model_copy(update={"state": state, "updated_at": time.time(), **changes})

    def tps(self) -> set[TP]:
        return {_parse_tp(k) for k in self.coverage}

    def ranges(self) -> Iterable[tuple[TP, int, int]]:
        for key, flat in self.coverage.items():
            tp = _parse_tp(key)
            for i in range(0, len(flat), 2):
                yield tp, flat[i], flat[i + 1]


def _tp_key(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"


def _parse_tp(key: str) -> TP:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


def to_ranges(offsets: Sequence[int]) -> list[int]:
    """Ascending, distinct offsets -> flat inclusive ranges ``[s0, e0, s1, e1, ...]``."""
    if not offsets:
        return []
    if offsets[-1] - offsets[0] == len(offsets) - 1:  # the usual case: one run
        return [offsets[0], offsets[-1]]
    flat: list[int] = []
    for offset in offsets:
        if flat and offset == flat[-1] + 1:
            flat[-1] = offset
        else:
            flat.extend((offset, offset))
    return flat


_TP_OF = itemgetter(0)
_OFFSET_OF = itemgetter(1)


def coverage_of(positions: Iterable[Position]) -> dict[str, list[int]]:
    """Positions -> ``{"topic:partition": [s0, e0, s1, e1, ...]}`` (sorted inclusive ranges)."""
    positions = list(positions)
    return coverage_of_lines([(t, p) for t, p, _ in positions], [o for _, _, o in positions])


def coverage_of_lines(tps: Sequence[TP], offsets: Sequence[int]) -> dict[str, list[int]]:
    """``coverage_of`` for parallel (topic, partition) and offset lists (a ``Window``'s)."""
    per_tp: dict[TP, list[int]] = {}
    # (lines come in runs of one partition, a fetch at a time: grouped in C)
    for tp, run in groupby(zip(tps, offsets, strict=True), key=_TP_OF):
        listed = per_tp.get(tp)
        if listed is None:
            listed = per_tp[tp] = []
        listed.extend(map(_OFFSET_OF, run))
    # (a window's offsets are distinct and come in consumption order, ascending per
    # partition: the sort is a linear pass; the set makes ``to_ranges``' one-run check exact
    # even if that ever failed)
    return {_tp_key(tp): to_ranges(sorted(set(o))) for tp, o in sorted(per_tp.items())}


def dispatch_id_for(coverage: Mapping[str, Sequence[int]]) -> str:
    """Deterministic id of a window from its coverage (``coverage_of``): the same requests
    give the same id. The Kafka positions identify the requests (their custom_ids included),
    so hashing the ranges is enough, and cheap for a 50,000-line window."""
    digest = hashlib.sha256()
    for key in sorted(coverage):
        digest.update(key.encode() + b"\x00")
        digest.update(",".join(map(str, coverage[key])).encode() + b"\n")
    return "dsp_" + digest.hexdigest()[:32]


class LedgerState:
    """In-memory ledger: entries by id, and an index (topic, partition) -> covering ranges."""

    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        # per tp: sorted starts, and parallel (end, dispatch_id)
        self._starts: dict[TP, list[int]] = {}
        self._spans: dict[TP, list[tuple[int, str]]] = {}

    def apply(self, entry: LedgerEntry | None, dispatch_id: str | None = None) -> None:
        """Apply a record (``None`` = tombstone of ``dispatch_id``)."""
        key = entry.dispatch_id if entry is not None else dispatch_id
        if key is None:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self._unindex(old)
        if entry is not None:
            self.entries[key] = entry
            if entry.state != "abandoned":
                self._index(entry)

    def _index(self, entry: LedgerEntry) -> None:
        for tp, start, end in entry.ranges():
            starts = self._starts.setdefault(tp, [])
            spans = self._spans.setdefault(tp, [])
            i = bisect.bisect_right(starts, start)
            starts.insert(i, start)
            spans.insert(i, (end, entry.dispatch_id))

    def _unindex(self, entry: LedgerEntry) -> None:
        for tp, start, _end in entry.ranges():
            starts = self._starts.get(tp)
            spans = self._spans.get(tp)
            if not starts or spans is None:
                continue
            lo = bisect.bisect_left(starts, start)
            hi = bisect.bisect_right(starts, start)
            for i in range(lo, hi):
                if spans[i][1] == entry.dispatch_id:
                    del starts[i]
                    del spans[i]
                    break

    def covering(self, tp: TP, offset: int) -> str | None:
        """The dispatch (not abandoned) that holds this request, if any."""
        starts = self._starts.get(tp)
        if not starts:
            return None
        spans = self._spans[tp]
        # ranges of live dispatches never overlap: a request is in at most one of them
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0 and spans[i][0] >= offset:
            return spans[i][1]
        return None

    def covers_any(self, tp: TP, first: int, last: int) -> bool:
        """Whether a dispatch (not abandoned) holds any request in ``first..last``."""
        starts = self._starts.get(tp)
        if not starts:
            return False
        # ranges never overlap, so their ends ascend with their starts: the last range that
        # starts at or before ``last`` is the only one that may reach ``first``
        i = bisect.bisect_right(starts, last) - 1
        return i >= 0 and self._spans[tp][i][0] >= first

    def prunable(self, committed: Mapping[TP, int], limit: int = 100) -> list[str]:
        """Finished entries whose every request lies below the committed offsets given (so no
        replay can reach them again): safe to tombstone."""
        out: list[str] = []
        for entry in self.entries.values():
            if entry.state in UNFINISHED:
                continue
            if all(end < committed.get(tp, -1) for tp, _start, end in entry.ranges()):
                out.append(entry.dispatch_id)
                if len(out) >= limit:
                    break
        return out

    def unfinished(self, tps: Iterable[TP] | None = None) -> list[LedgerEntry]:
        wanted = set(tps) if tps is not None else None
        return [
            e
            for e in self.entries.values()
            if e.state in UNFINISHED and (wanted is None or e.tps() & wanted)
        ]


def encode_entry(entry: LedgerEntry) -> bytes:
    return orjson.dumps(entry.model_dump(mode="json"))


def decode_entry(value: bytes) -> LedgerEntry:
    return LedgerEntry.model_validate(orjson.loads(value))


class Ledger:
    """The ledger topic: ``load()`` reads it to its end, ``write()`` appends (acks=all)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = ledger_topic(settings)
        self.state = LedgerState()
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await ensure_topics(self.settings, [dispatcher_ledger_spec(self.settings)])
        self._producer = make_producer(self.settings, max_request_size=LEDGER_MAX_MESSAGE_BYTES)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def write(self, entry: LedgerEntry) -> None:
        assert self._producer is not None, "Ledger.start() first"
        await self._producer.send_and_wait(
            self.topic, encode_entry(entry), key=entry.dispatch_id.encode()
        )
        self.state.apply(entry)

    async def forget(self, dispatch_id: str) -> None:
        """Tombstone an entry (compaction then removes it)."""
        assert self._producer is not None, "Ledger.start() first"
        await self._producer.send_and_wait(self.topic, None, key=dispatch_id.encode())
        self.state.apply(None, dispatch_id)

    async def load(self) -> LedgerState:
        """Read the whole ledger (to the end offset at call time) into a fresh state."""
        state = LedgerState()
        consumer = make_consumer(
            self.settings,
            group_id=None,
            isolation_level="read_committed",
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.value is None:
                        state.apply(None, record.key.decode() if record.key else None)
                    else:
                        try:
                            state.apply(decode_entry(record.value))
                        except ValueError:
                            log.warning("ledger.bad_record", offset=record.offset)
        finally:
            await consumer.stop()
        self.state = state
        return state
