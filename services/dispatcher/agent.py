"""The dispatcher's core: consumed request -> window -> ledger -> OpenAI batch -> commit.

``Dispatcher`` holds the state of one worker and is driven by the Faust app (``app.py``) or
the aiokafka runner: ``handle_many()`` for each fetched chunk of one partition (``handle()``
for a single message; same outcome), ``tick()`` from a timer (time cuts fire with an idle
stream), ``on_revoked()`` / ``on_assigned()`` from the rebalance signals, and ``run_submitter()``
as a background task. It knows nothing of Faust beyond a ``commit(offsets)`` callable.

Acks and commits (the rules that make it lose nothing):

- Faust acks are OFF for the requests topic (``acks=False``), so neither ``Stream.take()``'s
  ``finally`` nor an exception in the agent nor Faust's gap-prone ``_new_offset`` can commit
  anything. The dispatcher commits itself, through ``OffsetTracker``: per partition, only up to
  the lowest offset that is not done (done = in a published batch, dead-lettered with the
  broker's ack, a dropped duplicate, or skipped because the ledger has it). Windows per
  (endpoint, model) may finish in any order; the commit never passes a buffered request.
- Nothing raises out of ``handle()``: input errors become dead letters, Kafka and OpenAI errors
  are retried in place (the agent then simply waits: backpressure). A bug that escapes anyway
  ends the process (exit 70) instead of leaving a worker that consumes nothing.
- Up to ``DISPATCHER_MAX_IN_FLIGHT`` windows are submitted at once, taken from a small queue;
  while every slot is busy, ``handle()`` waits on the full queue, so consumption stops
  (bounded memory) and resumes by itself. Dispatches finish in any order; commits are
  serialized so the committed offsets only move forward.
- On revocation every open and queued window is dropped (the next owner re-reads them from the
  committed offset), every in-flight dispatch finishes (or is abandoned if ``create`` was not
  attempted yet), and the watermark is committed once more.

Fault injection (TEST ONLY): ``BATCHPIPE_DISPATCHER_CRASH_AT`` (``Settings.dispatcher_crash_at``)
= ``after_ledger`` | ``after_upload`` | ``after_create`` | ``after_publish`` | ``before_commit``
makes the worker ``os._exit(137)`` at that point of its first dispatch. Unset in production.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import openai
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from openai import AsyncOpenAI, OpenAI
from openai.types import Batch

from batchpipe.services.dispatcher.dead_letters import Invalid, classify, classify_fast, dead_letter
from batchpipe.services.dispatcher.jsonl import write_jsonl_async
from batchpipe.services.dispatcher.ledger import (
    METADATA_KEY,
    Ledger,
    LedgerEntry,
    coverage_of_lines,
    dispatch_id_for,
    find_batches,
)
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.offsets import OffsetTracker
from batchpipe.services.dispatcher.submit import Aborted, Submitter
from batchpipe.services.dispatcher.token_budget import (
    MODEL_KEY,
    TOKENS_KEY,
    enqueued_tokens,
    estimate_tokens,
    max_window_bytes,
    model_tag,
)
from batchpipe.services.dispatcher.window import TP, Window, Windows
from batchpipe.shared.contracts import BatchRecord, attempt_from_headers, encode, key_bytes
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


CommitFn = Callable[[dict[TP, int]], Awaitable[bool]]


def freeze_startup_heap() -> None:
    """Take every object alive after start-up (modules, clients, the app) out of the garbage
    collector's scans (``gc.freeze``). The consuming loop makes many objects that live a while
    (fetched records, window positions), which triggers full collections; without this each
    of them also walks the ~130,000 start-up objects of openai, pydantic and faust. In paired
    bench runs the worker's CPU per 100,000 requests fell from 1.89 s to 1.54 s
    (bench/README.md, Dispatcher)."""
    gc.freeze()


SLICE = 500  # records handled per synchronous stretch of the consuming loop (~2-3 ms)
GIL_SWITCH_SECONDS = 0.001
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit


def shorten_gil_switch() -> None:
    """Hand the GIL between threads every 1 ms instead of 5 ms. The consuming loop is
    CPU-bound, and the other threads wait for it at every hand-off: Faust's consumer thread
    (its aiokafka driver fetches in a thread of its own and returns records through
    ``call_thread``), the upload thread and the JSONL writer. Paired bench runs (3 each):
    Faust engine 0.487 -> 0.515 of the raw consumer (medians), aiokafka engine 0.485 -> 0.524."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def keep_freed_memory() -> None:
    """Keep the memory of submitted windows in the process for the next windows (glibc only).

    A window holds ~50,000 consumed values of ~1 KB. By default glibc gives freed heap back to
    the OS, so every later window faults its pages in again (~0.6 us per 1 KB value, on the
    consuming loop); a trim threshold of 1 GiB keeps it. Fixing the trim threshold also fixes
    the mmap threshold (normally adaptive) at 128 KiB, which would put every 8 MiB upload read
    and JSONL join in a fresh mmap, faulted in and unmapped each time (worker CPU per 100,000
    requests rose from ~0.9 s to ~1.1 s): blocks up to 32 MiB come from the heap instead.
    RSS stays at its peak (the windows in memory at once) instead of falling between
    windows."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator's defaults stay


def crash_point(settings: Settings, name: str) -> None:
    """Test-only fault injection: exit abruptly (like ``kill -9``) at ``name`` if asked to."""
    if settings.dispatcher_crash_at == name:
        log.warning("dispatcher.crash_injected", at=name)
        os._exit(137)


class Record(Protocol):
    """What ``handle_many`` reads of a consumed message (aiokafka's ``ConsumerRecord`` and
    ``Incoming`` both qualify)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


def _attempt(headers: Any) -> int:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return attempt_from_headers(
        [(k if isinstance(k, str) else str(k), v if v is not None else b"") for k, v in items]
    )


def _plain_run(msgs: Sequence[Record]) -> list[int] | None:
    """The offsets of ``msgs`` if they are one partition's records in strictly ascending
    offset order (what a fetch returns), else None."""
    if not msgs:
        return None
    offsets = [m.offset for m in msgs]
    head = msgs[0]
    if (
        len({m.partition for m in msgs}) == 1
        and all(m.topic == head.topic for m in msgs)
        and all(map(int.__lt__, offsets, islice(offsets, 1, None)))
    ):
        return offsets
    return None


def _incoming(msg: Record) -> Incoming:
    if isinstance(msg, Incoming):
        return msg
    headers = msg.headers
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return Incoming(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=tuple(items),
    )


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        ledger: Ledger,
        client: AsyncOpenAI,
        commit: CommitFn,
        metrics: Metrics | None = None,
        upload_client: OpenAI | None = None,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = 1,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.ledger = ledger
        self.client = client
        self._commit = commit
        self.metrics = metrics or Metrics()
        max_bytes = settings.batch_max_bytes
        if settings.dispatcher_max_enqueued_tokens is not None:  # one window always fits
            max_bytes = min(max_bytes, max_window_bytes(settings.dispatcher_max_enqueued_tokens))
        self._clock = clock
        self.windows = Windows(
            max_requests=settings.batch_max_requests,
            max_bytes=max_bytes,
            max_wait=settings.batch_max_wait_seconds,
            clock=clock,
        )
        self.offsets = OffsetTracker()
        self.submitter = Submitter(
            client,
            base_delay=retry_base_delay,
            max_delay=retry_max_delay,
            on_retry=lambda step, _exc: self.metrics.retries.labels(step).inc(),
            upload_client=upload_client,
        )
        self.queue: asyncio.Queue[tuple[int, Window]] = asyncio.Queue(maxsize=queue_size)
        self.assigned: set[TP] = set()
        self.ready = asyncio.Event()
        self._generation = 0
        self._aborting = False
        self._idle = asyncio.Event()  # set while no dispatch is in flight
        self._idle.set()
        self._in_flight = 0
        self._dispatches: set[asyncio.Task[None]] = set()
        self._commit_lock = asyncio.Lock()
        self._budget_lock = asyncio.Lock()
        # windows past the budget check whose batch is not created yet (not in the listing):
        # dispatch id -> (model, tokens), and their sum per model
        self._budget_held: dict[str, tuple[str, int]] = {}
        self._budget_pending: dict[str, int] = {}
        self._tmp = Path(settings.dispatcher_data_dir or tempfile.gettempdir())
        self._retry_base = retry_base_delay
        self._files: dict[str, Path] = {}
        self._consumed = 0
        self._retry_max = retry_max_delay

    @property
    def generation(self) -> int:
        """Incremented by every revocation: work begun before it is stale."""
        return self._generation

    # --- consuming ----------------------------------------------------------------------

    async def handle(self, msg: Incoming, is_stale: Callable[[], bool] = lambda: False) -> None:
        """Process one consumed request; never raises for bad input or unreachable services."""
        try:
            await self._handle(msg, is_stale)
        except Exception:
            log.exception("dispatcher.bug", topic=msg.topic, offset=msg.offset)
            os._exit(70)

    async def _handle(self, msg: Incoming, is_stale: Callable[[], bool]) -> None:
        await self.ready.wait()
        if is_stale():
            return
        generation = self._generation
        tp = (msg.topic, msg.partition)
        if not self.offsets.seen(tp, msg.offset):
            return
        self._consumed += 1  # (added to the counter by tick(): cheaper than per message)
        if self.ledger.state.covering(tp, msg.offset) is not None:
            self.metrics.skipped.inc()
            self.offsets.done(tp, msg.offset)
            return
        result = classify(msg.value, self.windows.max_bytes)
        if isinstance(result, Invalid):
            await self._dead_letter(msg, result)
            if generation == self._generation:
                self.offsets.done(tp, msg.offset)
            return
        added = self.windows.add(
            endpoint=result.endpoint,
            model=result.model,
            custom_id=result.custom_id,
            line=result.line,
            position=(msg.topic, msg.partition, msg.offset),
            attempt=attempt_from_headers(msg.headers),
        )
        if added.duplicate:
            self.metrics.duplicates.inc()
            log.info("request.duplicate_dropped", custom_id=result.custom_id)
            self.offsets.done(tp, msg.offset)
            return
        for window in added.cut:
            await self._enqueue(window, generation)

    async def handle_many(
        self, msgs: Sequence[Record], is_stale: Callable[[], bool] = lambda: False
    ) -> None:
        """``handle`` for a chunk of consumed requests (in offset order per partition), with
        the same outcome as calling it for each in turn: the per-request work is one
        synchronous loop, and it only awaits to publish a dead letter or queue a cut window
        (after which readiness and staleness are checked again, as ``handle`` would)."""
        try:
            await self._handle_many(msgs, is_stale)
        except Exception:
            log.exception("dispatcher.bug", count=len(msgs))
            os._exit(70)

    async def _handle_many(self, msgs: Sequence[Record], is_stale: Callable[[], bool]) -> None:
        # At most SLICE records per synchronous stretch, then the loop runs its other tasks:
        # a dispatch awaits ~20 times (ledger writes, create, publish, commit), and behind a
        # 5,000-record chunk (~20 ms) each await took that long; windows then waited for a
        # free slot.
        for start in range(0, len(msgs), SLICE):
            if start:
                await asyncio.sleep(0)
            part = msgs[start : start + SLICE]
            run = _plain_run(part)
            if run is None or not await self._handle_run(part, run, is_stale):
                await self._handle_each(part, is_stale)

    async def _handle_run(
        self, msgs: Sequence[Record], offsets: list[int], is_stale: Callable[[], bool]
    ) -> bool:
        """The usual chunk: one partition's records, offsets ascending, none seen before and
        none in a dispatch of the ledger (no replay). Offsets are tracked and the ledger
        checked once for the chunk; each request is then only validated, and the chunk
        windowed in one call (``Windows.add_run``). Its dead letters and cut windows are sent
        after that (the offsets tracker takes ``done`` in any order). False, with nothing
        changed, when the chunk is not such a run (``_handle_each`` takes it)."""
        if not self.ready.is_set():
            await self.ready.wait()
        if is_stale():
            return True
        generation = self._generation
        topic, partition = msgs[0].topic, msgs[0].partition
        tp = (topic, partition)
        if self.ledger.state.covers_any(tp, offsets[0], offsets[-1]):
            return False
        if not self.offsets.seen_run(tp, offsets):
            return False
        self._consumed += len(offsets)
        max_bytes = self.windows.max_bytes
        results = [classify_fast(m.value, max_bytes) for m in msgs]
        attempts = (
            [_attempt(m.headers) if m.headers else 0 for m in msgs]
            if any(m.headers for m in msgs)
            else None
        )
        dropped, cuts = self.windows.add_run(topic, partition, offsets, results, attempts)
        for offset, custom_id in dropped:
            log.info("request.duplicate_dropped", custom_id=custom_id)
            self.offsets.done(tp, offset)
        duplicates = len(dropped)
        invalid = [
            (msg, result)
            for msg, result in zip(msgs, results, strict=True)
            if type(result) is Invalid
        ]
        if duplicates:
            self.metrics.duplicates.inc(duplicates)
        for msg, reason in invalid:
            await self._dead_letter(_incoming(msg), reason)
            if generation != self._generation:
                return True  # revoked: everything buffered was dropped
            self.offsets.done(tp, msg.offset)
        for window in cuts:
            await self._enqueue(window, generation)
        return True

    async def _handle_each(self, msgs: Sequence[Record], is_stale: Callable[[], bool]) -> None:
        """``handle_many`` for any chunk (several partitions, redeliveries, replayed requests),
        request by request."""
        n = len(msgs)
        i = 0
        max_bytes = self.windows.max_bytes
        skipped = duplicates = 0
        try:
            while i < n:
                if not self.ready.is_set():
                    await self.ready.wait()
                if is_stale():
                    return
                generation = self._generation
                # bound after every await: a rebalance replaces the ledger's state
                seen = self.offsets.seen
                done = self.offsets.done
                covering = self.ledger.state.covering
                add_line = self.windows.add_line
                consumed = 0
                pending: Record | None = None
                action: Invalid | Sequence[Window] = ()
                while i < n:  # synchronous: nothing else runs until an await below
                    msg = msgs[i]
                    i += 1
                    tp = (msg.topic, msg.partition)
                    offset = msg.offset
                    if not seen(tp, offset):
                        continue
                    consumed += 1
                    if covering(tp, offset) is not None:
                        skipped += 1
                        done(tp, offset)
                        continue
                    result = classify_fast(msg.value, max_bytes)
                    if isinstance(result, Invalid):
                        pending, action = msg, result
                        break
                    custom_id, endpoint, model, line = result
                    headers = msg.headers
                    cut = add_line(
                        endpoint,
                        model,
                        custom_id,
                        line,
                        (tp[0], tp[1], offset),
                        _attempt(headers) if headers else 0,
                    )
                    if cut is None:
                        duplicates += 1
                        log.info("request.duplicate_dropped", custom_id=custom_id)
                        done(tp, offset)
                    elif cut:
                        action = cut
                        break
                self._consumed += consumed
                if isinstance(action, Invalid):
                    assert pending is not None
                    await self._dead_letter(_incoming(pending), action)
                    if generation == self._generation:
                        self.offsets.done((pending.topic, pending.partition), pending.offset)
                else:
                    for window in action:
                        await self._enqueue(window, generation)
        finally:
            if skipped:
                self.metrics.skipped.inc(skipped)
            if duplicates:
                self.metrics.duplicates.inc(duplicates)

    async def tick(self) -> None:
        """Cut the windows that are due (runs from a timer, with or without new requests)."""
        self._flush_metrics()
        if not self.ready.is_set():
            return
        generation = self._generation
        for window in self.windows.due():
            await self._enqueue(window, generation)
        await self.commit_now()

    def _flush_metrics(self) -> None:
        if self._consumed:
            self.metrics.consumed.inc(self._consumed)
            self._consumed = 0
        self.metrics.buffered.set(len(self.windows))

    async def flush(self) -> None:
        """Cut every open window now (tests, benchmarks)."""
        generation = self._generation
        for window in self.windows.flush():
            await self._enqueue(window, generation)

    async def _enqueue(self, window: Window, generation: int) -> None:
        self.metrics.window_age.observe(window.age())
        self.metrics.buffered.set(len(self.windows))
        if self.queue.full():
            self.metrics.blocked.set(1)
            log.info("dispatcher.backpressure", queued=self.queue.qsize())
        await self.queue.put((generation, window))
        self.metrics.blocked.set(0)

    async def _dead_letter(self, msg: Incoming, invalid: Invalid) -> None:
        letter = dead_letter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            invalid=invalid,
        )
        await self._send(self.settings.dead_letters_topic, encode(letter), msg.key)
        self.metrics.dead_letters.labels(invalid.reason).inc()
        log.info(
            "request.dead_lettered",
            reason=invalid.reason,
            partition=msg.partition,
            offset=msg.offset,
        )

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> None:
        await self._until_kafka_accepts(
            lambda: self.producer.send_and_wait(topic, value, key=key),
            "kafka.send_retry",
            topic=topic,
        )

    async def _until_kafka_accepts(
        self, call: Callable[[], Awaitable[object]], event: str, **fields: Any
    ) -> None:
        """Await ``call`` again (with backoff) until Kafka takes it: the worker waits rather
        than lose or skip a write."""
        attempt = 0
        while True:
            try:
                await call()
                return
            except KafkaError as exc:
                log.warning(event, attempt=attempt, error=repr(exc), **fields)
                await self._backoff(attempt)
                attempt += 1

    async def _backoff(self, attempt: int) -> None:
        """Sleep before retry number ``attempt + 1`` (exponential, capped)."""
        await asyncio.sleep(min(self._retry_max, self._retry_base * 2**attempt))

    # --- submitting ---------------------------------------------------------------------

    async def run_submitter(self) -> None:
        """Background task, forever: submit queued windows, up to
        ``DISPATCHER_MAX_IN_FLIGHT`` at once. A window is taken from the queue only when a
        slot is free, so while every slot is busy the queue stays full and consumption
        waits (backpressure)."""
        slots = asyncio.Semaphore(self.settings.dispatcher_max_in_flight)
        try:
            while True:
                await slots.acquire()
                try:
                    generation, window = await self.queue.get()
                except BaseException:
                    slots.release()
                    raise
                if generation != self._generation:
                    slots.release()
                    continue  # its partitions were revoked; the next owner reads them again
                # (no await from get() to here: on_revoked sees the queue or _in_flight)
                self._in_flight += 1
                self.metrics.in_flight.set(self._in_flight)
                self._idle.clear()
                task = asyncio.create_task(self._submit_one(window, generation, slots))
                self._dispatches.add(task)
                task.add_done_callback(self._dispatches.discard)
        finally:
            for task in list(self._dispatches):
                task.cancel()

    async def _submit_one(self, window: Window, generation: int, slots: asyncio.Semaphore) -> None:
        try:
            await self._dispatch_until_done(window, generation)
        finally:
            slots.release()
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)
            if self._in_flight == 0:
                self._idle.set()

    async def _dispatch_until_done(self, window: Window, generation: int) -> None:
        attempt = 0
        while True:
            try:
                await self.dispatch(window, generation)
                return
            except Exception:
                # Unexpected: the ledger makes a retry resume where it stopped.
                log.exception("dispatch.unexpected_error", attempt=attempt)
                await self._backoff(attempt)
                attempt += 1

    async def dispatch(self, window: Window, generation: int | None = None) -> str | None:
        """Submit one window exactly once; returns the batch id (None if abandoned)."""
        started = time.monotonic()
        coverage = coverage_of_lines(window.tps, window.offsets)
        dispatch_id = dispatch_id_for(coverage)
        bound = log.bind(dispatch_id=dispatch_id)
        entry = self.ledger.state.entries.get(dispatch_id)
        if entry is None or entry.state == "abandoned":
            now = time.time()
            entry = LedgerEntry(
                dispatch_id=dispatch_id,
                state="planned",
                endpoint=window.endpoint,
                model=window.model,
                request_count=window.count,
                input_bytes=window.nbytes,
                window_opened_at=window.opened_at_unix,
                attempts=dict(window.attempts),
                coverage=coverage,
                planned_at=now,
                updated_at=now,
                worker=f"{os.uname().nodename}:{os.getpid()}",
            )
            await self._ledger_write(entry)
            bound.info(
                "dispatch.planned",
                endpoint=window.endpoint,
                model=window.model,
                requests=window.count,
                bytes=window.nbytes,
                cut=window.cut_reason,
                # from the cut to here: waiting for a free slot (backpressure) + the ledger
                since_cut=round(self._clock() - window.cut_at, 3) if window.cut_at else None,
            )
            crash_point(self.settings, "after_ledger")
        # on an unexpected error the file is kept for the retry (the lines are gone)
        path: Path | None = self._files.get(dispatch_id)
        if entry.state == "planned":
            step = time.monotonic()
            if path is None:  # a retried dispatch reuses its file: the lines are gone
                path = await write_jsonl_async(window.lines, self._tmp, prefix="batchpipe-")
                self._files[dispatch_id] = path
                window.release_lines()
            written = time.monotonic()
            if not await self._wait_for_token_budget(entry):
                await self._abandon(entry)
                self._forget_file(dispatch_id)
                return None
            budget = time.monotonic()
            try:
                file_id = await self.submitter.upload(path, abort=self._is_aborting)
            except Aborted:
                await self._abandon(entry)
                self._forget_file(dispatch_id)
                return None
            uploaded = time.monotonic()
            entry = entry.with_state("uploaded", file_id=file_id)
            await self._ledger_write(entry)
            bound.info(
                "dispatch.uploaded",
                file_id=file_id,
                write_seconds=round(written - step, 3),
                budget_wait_seconds=round(budget - written, 3),
                upload_seconds=round(uploaded - budget, 3),
            )
            crash_point(self.settings, "after_upload")
        if entry.state == "uploaded":
            assert entry.file_id is not None
            current = entry

            async def lookup() -> Batch | None:
                found = await find_batches(
                    self.client, [dispatch_id], not_before=current.planned_at
                )
                batch: Batch | None = found.get(dispatch_id)
                return batch

            try:
                batch = await self.submitter.create(
                    file_id=entry.file_id,
                    endpoint=entry.endpoint,
                    metadata={
                        METADATA_KEY: dispatch_id,
                        MODEL_KEY: model_tag(entry.model),
                        "batchpipe_requests": str(entry.request_count),
                        TOKENS_KEY: str(estimate_tokens(entry.input_bytes)),
                    },
                    lookup=lookup,
                    abort=self._is_aborting,
                )
            except Aborted:
                await self._abandon(entry)
                self._forget_file(dispatch_id)
                return None
            entry = entry.with_state("created", batch_id=batch.id)
            self._release_budget(dispatch_id)
            await self._ledger_write(entry)
            bound.info("dispatch.created", batch_id=batch.id)
            crash_point(self.settings, "after_create")
        if entry.state == "created":
            assert entry.batch_id is not None and entry.file_id is not None
            await self._publish(entry, submitted_at=int(time.time()))
            crash_point(self.settings, "after_publish")
            entry = entry.with_state("published")
            await self._ledger_write(entry)
            crash_point(self.settings, "before_commit")
        self._forget_file(dispatch_id)
        self.metrics.batches.labels(window.cut_reason or "flush").inc()
        self.metrics.lines.observe(entry.request_count)
        self.metrics.bytes.observe(entry.input_bytes)
        self.metrics.latency.observe(time.monotonic() - started)
        bound.info(
            "batch.submitted",
            batch_id=entry.batch_id,
            requests=entry.request_count,
            bytes=entry.input_bytes,
            cut=window.cut_reason,
        )
        if generation is None or generation == self._generation:
            self.offsets.done_ranges(entry.ranges())
        await self.commit_now()
        return entry.batch_id

    async def _wait_for_token_budget(self, entry: LedgerEntry) -> bool:
        """With ``DISPATCHER_MAX_ENQUEUED_TOKENS``: wait until this window's estimated tokens
        fit next to the model's batches that have not ended (``token_budget.py``) and this
        worker's other windows that passed the check but are not created yet (dispatches run
        concurrently). False if the dispatch is aborted (revocation) meanwhile."""
        budget = self.settings.dispatcher_max_enqueued_tokens
        if budget is None or entry.dispatch_id in self._budget_held:
            return True
        model = entry.model
        needed = estimate_tokens(entry.input_bytes)
        enqueued: int | None
        waiting = False
        attempt = 0
        try:
            while not self._aborting:
                async with self._budget_lock:  # one check at a time: none misses another
                    # read before the listing: a window created meanwhile is then counted
                    # twice (safe), never missed
                    held = self._budget_pending.get(model, 0)
                    try:
                        enqueued = held + await enqueued_tokens(self.client, model)
                    except (openai.APIError, OSError) as exc:
                        log.warning("dispatch.token_budget_check_failed", error=repr(exc))
                        enqueued = None
                    fits = enqueued is not None and enqueued + needed <= budget
                    if fits:
                        self._budget_held[entry.dispatch_id] = (model, needed)
                        self._budget_pending[model] = self._budget_pending.get(model, 0) + needed
                if enqueued is None:
                    await self._backoff(attempt)
                    attempt += 1
                    continue
                if fits:
                    if waiting:
                        log.info(
                            "dispatch.token_budget_free",
                            dispatch_id=entry.dispatch_id,
                            enqueued=enqueued,
                            tokens=needed,
                        )
                    return True
                if not waiting:
                    waiting = True
                    self.metrics.token_waits.inc()
                    self.metrics.token_waiting.inc()
                    log.info(
                        "dispatch.token_budget_wait",
                        dispatch_id=entry.dispatch_id,
                        model=entry.model,
                        enqueued=enqueued,
                        tokens=needed,
                        budget=budget,
                    )
                await asyncio.sleep(self.settings.dispatcher_token_check_seconds)
            return False
        finally:
            if waiting:
                self.metrics.token_waiting.dec()

    def _release_budget(self, dispatch_id: str) -> None:
        """The window's batch now exists (it is in the listing) or never will."""
        held = self._budget_held.pop(dispatch_id, None)
        if held is not None:
            model, tokens = held
            self._budget_pending[model] -= tokens

    def _forget_file(self, dispatch_id: str) -> None:
        path = self._files.pop(dispatch_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def _is_aborting(self) -> bool:
        return self._aborting

    async def _abandon(self, entry: LedgerEntry) -> None:
        self._release_budget(entry.dispatch_id)
        await self._ledger_write(entry.with_state("abandoned"))
        log.info("dispatch.abandoned", dispatch_id=entry.dispatch_id)

    async def _ledger_write(self, entry: LedgerEntry) -> None:
        await self._until_kafka_accepts(lambda: self.ledger.write(entry), "ledger.write_retry")

    async def _publish(self, entry: LedgerEntry, *, submitted_at: int) -> None:
        assert entry.batch_id is not None and entry.file_id is not None
        record = BatchRecord(
            batch_id=entry.batch_id,
            input_file_id=entry.file_id,
            endpoint=entry.endpoint,
            model=entry.model,
            request_count=entry.request_count,
            dispatch_id=entry.dispatch_id,
            attempts=entry.attempts,
            input_bytes=entry.input_bytes,
            window_opened_at=entry.window_opened_at,
            submitted_at=submitted_at,
        )
        await self._send(self.settings.batches_topic, encode(record), key_bytes(entry.batch_id))

    # --- commits ------------------------------------------------------------------------

    async def commit_now(self) -> None:
        # one at a time (dispatches finish concurrently, and the timer commits too): the
        # committed offsets only ever move forward
        async with self._commit_lock:
            offsets = {tp: o for tp, o in self.offsets.committable().items() if tp in self.assigned}
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
        committed = {
            tp: o for tp, o in self.offsets.committed_offsets().items() if tp in self.assigned
        }
        for dispatch_id in self.ledger.state.prunable(committed):
            try:
                await self.ledger.forget(dispatch_id)
            except KafkaError as exc:
                log.warning("ledger.prune_failed", error=repr(exc))
                return

    # --- rebalancing --------------------------------------------------------------------

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Before the partitions move: drop what is buffered, finish what is in flight."""
        revoked = set(revoked)
        self.ready.clear()
        self._generation += 1
        self._aborting = True
        dropped = len(self.windows)
        self.windows.drop_partitions({*revoked, *self.assigned, *self._tracked_tps()})
        while not self.queue.empty():
            _gen, window = self.queue.get_nowait()
            dropped += window.count
        await self._idle.wait()
        self._aborting = False
        await self.commit_now()
        self.offsets.forget(self._tracked_tps())
        self.assigned = set()
        self.metrics.buffered.set(0)
        log.info("dispatcher.revoked", partitions=len(revoked), dropped_requests=dropped)

    def _tracked_tps(self) -> set[TP]:
        return set(self.offsets._parts)

    async def on_assigned(self, assigned: Iterable[TP]) -> None:
        """After the rebalance: read the ledger back and reconcile it, then start consuming."""
        self.assigned = set(assigned)
        attempt = 0
        while True:
            try:
                await self.ledger.load()
                await self.reconcile(self.assigned)
                break
            except Exception as exc:
                log.warning("ledger.reconcile_retry", attempt=attempt, error=repr(exc))
                await self._backoff(attempt)
                attempt += 1
        self.ready.set()
        log.info("dispatcher.assigned", partitions=sorted(self.assigned))

    async def reconcile(self, tps: Iterable[TP]) -> dict[str, str]:
        """Resolve unfinished ledger entries covering ``tps`` against OpenAI: re-publish the
        batch a dispatch created, or mark it abandoned. Never creates a batch."""
        pending = self.ledger.state.unfinished(tps)
        outcome: dict[str, str] = {}
        if not pending:
            return outcome
        found: dict[str, Any] = await find_batches(
            self.client,
            [e.dispatch_id for e in pending],
            not_before=min(e.planned_at for e in pending),
        )
        for entry in pending:
            batch = found.get(entry.dispatch_id)
            if batch is None and entry.batch_id is not None:
                batch = await self.client.batches.retrieve(entry.batch_id)
            if batch is None:
                await self._abandon(entry)
                outcome[entry.dispatch_id] = "abandoned"
            else:
                created = entry.with_state(
                    "created", batch_id=batch.id, file_id=entry.file_id or batch.input_file_id
                )
                await self._publish(created, submitted_at=int(batch.created_at))
                await self._ledger_write(created.with_state("published"))
                outcome[entry.dispatch_id] = "republished"
            self.metrics.reconciled.labels(outcome[entry.dispatch_id]).inc()
            log.info(
                "ledger.reconciled",
                dispatch_id=entry.dispatch_id,
                state=entry.state,
                outcome=outcome[entry.dispatch_id],
                batch_id=getattr(batch, "id", None),
            )
        return outcome
