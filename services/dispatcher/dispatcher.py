"""The dispatcher's core: consumed request -> window -> ledger -> batch -> commit.

``Dispatcher`` holds the state of one worker and wires its parts together; the engines
(``app.py`` for Faust, ``kafka_runner.py`` for plain aiokafka, both through ``worker.py``)
drive it: ``handle_many()`` for each fetched chunk of one partition (``intake.py``),
``tick()`` from a timer (time cuts fire with an idle stream; commits), ``on_revoked()`` /
``on_assigned()`` from the rebalance signals, and ``run_submitter()`` as a background task.
It knows nothing of either engine beyond a ``commit(offsets)`` callable.

The rules that make it lose nothing:

- The engines never ack or commit the requests topic themselves. The dispatcher commits
  through ``commits.py``, per partition only up to the lowest offset that is not done
  (``offsets.py``). Windows per (endpoint, model) may finish in any order; the commit never
  passes a buffered request.
- Nothing raises out of ``handle_many()``: input errors become dead letters, Kafka and
  provider errors are retried in place (the consuming loop then simply waits: backpressure).
  A bug that escapes anyway ends the process (exit 70) instead of leaving a worker that
  consumes nothing.
- Up to ``DISPATCHER_MAX_IN_FLIGHT`` windows are submitted at once (``dispatch.py``), taken
  from a small queue; while every slot is busy, the intake waits on the full queue, so
  consumption stops (bounded memory) and resumes by itself.
- On revocation every open and queued window is dropped (the next owner re-reads them from the
  committed offset), every in-flight dispatch finishes (or is abandoned if ``create`` was not
  attempted yet), and the watermark is committed once more. On assignment the ledger is read
  back and reconciled (``reconcile.py``) before anything is consumed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence

import orjson
from aiokafka import AIOKafkaProducer

from batchpipe.services.dispatcher.backoff import Backoff
from batchpipe.services.dispatcher.commits import CommitFn, Committer
from batchpipe.services.dispatcher.dispatch import DispatchSteps
from batchpipe.services.dispatcher.intake import Intake, Stale, never_stale
from batchpipe.services.dispatcher.kafka_writes import KafkaWrites
from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.offsets import OffsetTracker
from batchpipe.services.dispatcher.reconcile import reconcile
from batchpipe.services.dispatcher.records import TP, Record
from batchpipe.services.dispatcher.submit import Submitter
from batchpipe.services.dispatcher.token_budget import TokenBudget, max_window_bytes
from batchpipe.services.dispatcher.validate import Invalid, Row
from batchpipe.services.dispatcher.window import Window, Windows
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import BatchProvider, Limits
from batchpipe.shared.providers.registry import Providers, UnknownProvider
from batchpipe.shared.settings import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, Settings

log = get_logger(__name__)

IN_DOUBT_RECHECK_SECONDS = 10.0
_UNSEEN = object()


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        ledger: Ledger,
        providers: Providers,
        commit: CommitFn,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = 1,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.ledger = ledger
        self.providers = providers
        self.metrics = metrics = metrics or Metrics()
        self.backoff = backoff = Backoff(retry_base_delay, retry_max_delay)
        # windows: the setting, else each model's provider's default window size; never
        # above the provider's limit (``limits_of`` takes the smaller)
        max_bytes = settings.batch_max_bytes or MAX_BATCH_BYTES
        if settings.dispatcher_max_enqueued_tokens is not None:  # one window always fits
            max_bytes = min(max_bytes, max_window_bytes(settings.dispatcher_max_enqueued_tokens))
        by_default = settings.batch_max_bytes is None

        def own_bytes(limits: Limits) -> int:
            return limits.window_bytes if by_default else limits.max_bytes

        self.windows = Windows(
            max_requests=settings.batch_max_requests or MAX_BATCH_REQUESTS,
            max_bytes=max_bytes,
            max_wait=settings.batch_max_wait_seconds,
            clock=clock,
            limits=lambda model: (
                (limits := providers.limits_for(model)).max_requests,
                own_bytes(limits),
            ),
            # one byte limit for every line (validated before it is windowed): the smallest
            # window's
            max_line_bytes=min(max_bytes, *(own_bytes(p.limits) for p in providers)),
        )
        self.offsets = OffsetTracker()
        self.submitter = Submitter(
            base_delay=retry_base_delay,
            max_delay=retry_max_delay,
            on_retry=lambda step, _exc: metrics.retries.labels(step).inc(),
        )
        self.writes = KafkaWrites(
            settings, producer=producer, ledger=ledger, metrics=metrics, backoff=backoff
        )
        self.budget = TokenBudget(
            providers,
            budget=settings.dispatcher_max_enqueued_tokens,
            check_seconds=settings.dispatcher_token_check_seconds,
            metrics=metrics,
            backoff=backoff,
        )
        self.steps = DispatchSteps(
            settings,
            ledger=ledger,
            providers=providers,
            submitter=self.submitter,
            budget=self.budget,
            writes=self.writes,
            metrics=metrics,
            aborting=lambda: self.aborting,
            clock=clock,
        )
        self.committer = Committer(self.offsets, ledger, commit, lambda: self.assigned)
        self.queue: asyncio.Queue[tuple[int, Window]] = asyncio.Queue(maxsize=queue_size)
        self.assigned: set[TP] = set()
        self.ready = asyncio.Event()
        self.intake = Intake(
            windows=self.windows,
            offsets=self.offsets,
            ledger=ledger,
            metrics=metrics,
            ready=self.ready,
            generation=lambda: self._generation,
            dead_letter=self.writes.dead_letter,
            enqueue=self._enqueue,
            check=self._provider_check,
        )
        # model -> the provider that may refuse its lines, None if none does (cached)
        self._refusers: dict[str, BatchProvider | Invalid | None] = {}
        # set while partitions are being revoked: dispatches that have not attempted
        # ``create`` yet give up
        self.aborting = False
        self._generation = 0
        self._idle = asyncio.Event()  # set while no dispatch is in flight
        self._idle.set()
        self._in_flight = 0
        self._dispatches: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._in_doubt: set[str] = set()  # dispatches a reconciliation left in doubt
        self._in_doubt_next = 0.0

    def _provider_check(self, row: Row) -> Invalid | None:
        """Dead-letter what the model's provider cannot run (``BatchProvider.refusal``), or a
        model routed to a provider this process has no credentials for."""
        _custom_id, url, model, line = row
        refuser = self._refusers.get(model, _UNSEEN)
        if refuser is _UNSEEN:
            refuser = self._refusers[model] = self._refuser_of(model)
        if refuser is None or isinstance(refuser, Invalid):
            return refuser
        assert isinstance(refuser, BatchProvider)
        reason = type(refuser).refusal(self.settings, url, lambda: orjson.loads(line)["body"])
        return None if reason is None else Invalid(f"{refuser.name}_refused", reason)

    def _refuser_of(self, model: str) -> BatchProvider | Invalid | None:
        name = self.providers.name_for(model)
        try:
            provider = self.providers.get(name)
        except UnknownProvider as exc:
            return Invalid("provider_not_configured", str(exc))
        return provider if provider.checks_lines() else None

    @property
    def generation(self) -> int:
        """Incremented by every revocation: work begun before it is stale."""
        return self._generation

    # --- consuming ----------------------------------------------------------------------

    async def handle_many(self, records: Sequence[Record], is_stale: Stale = never_stale) -> None:
        """Take one fetched chunk of consumed requests; never raises for bad input or
        unreachable services."""
        try:
            await self.intake.take(records, is_stale)
        except Exception:
            log.exception("dispatcher.bug", count=len(records))
            os._exit(70)

    async def tick(self) -> None:
        """Cut the windows that are due and commit (runs from a timer, with or without new
        requests)."""
        self.flush_metrics()
        if not self.ready.is_set():
            return
        await self.recheck_in_doubt()
        generation = self._generation
        for window in self.windows.due():
            await self._enqueue(window, generation)
        await self.commit_now()

    def flush_metrics(self) -> None:
        """Add the requests consumed since the last call to the counter (cheaper than per
        request) and set the buffered gauge."""
        if self.intake.consumed:
            self.metrics.consumed.inc(self.intake.consumed)
            self.intake.consumed = 0
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
            attempt = 0
            while True:
                try:
                    await self.dispatch(window, generation)
                    break
                except Exception:
                    # Unexpected: the ledger makes a retry resume where it stopped.
                    log.exception("dispatch.unexpected_error", attempt=attempt)
                    await self.backoff.sleep(attempt)
                    attempt += 1
        finally:
            slots.release()
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)
            if self._in_flight == 0:
                self._idle.set()

    async def dispatch(self, window: Window, generation: int | None = None) -> str | None:
        """Submit one window exactly once, then count its requests done (unless its
        partitions were revoked meanwhile) and commit; returns the batch id (None if
        abandoned)."""
        entry = await self.steps.run(window)
        if entry is None:
            return None
        if generation is None or generation == self._generation:
            self.offsets.done_ranges(entry.ranges())
        await self.commit_now()
        return entry.batch_id

    async def commit_now(self) -> None:
        await self.committer.commit()

    # --- rebalancing --------------------------------------------------------------------

    async def on_revoked(self, revoked: Iterable[TP]) -> None:
        """Before the partitions move: drop what is buffered, finish what is in flight."""
        revoked = set(revoked)
        self.ready.clear()
        self._generation += 1
        self.aborting = True
        dropped = len(self.windows)
        tracked = self.offsets.partitions()
        self.windows.drop_partitions({*revoked, *self.assigned, *tracked})
        while not self.queue.empty():
            _gen, window = self.queue.get_nowait()
            dropped += window.count
        await self._idle.wait()
        self.aborting = False
        await self.commit_now()
        self.offsets.forget(self.offsets.partitions())
        self.assigned = set()
        self.metrics.buffered.set(0)
        log.info("dispatcher.revoked", partitions=len(revoked), dropped_requests=dropped)

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
                await self.backoff.sleep(attempt)
                attempt += 1
        self.ready.set()
        log.info("dispatcher.assigned", partitions=sorted(self.assigned))

    async def recheck_in_doubt(self) -> None:
        """Reconcile again the dispatches left ``in_doubt`` (from the timer, at most every
        ``IN_DOUBT_RECHECK_SECONDS``): each ends ``republished`` or ``abandoned`` once its
        provider can tell."""
        if not self._in_doubt or self._clock() < self._in_doubt_next:
            return
        self._in_doubt_next = self._clock() + IN_DOUBT_RECHECK_SECONDS
        try:
            await self.reconcile(self.assigned, only=set(self._in_doubt))
        except Exception as exc:
            log.warning("ledger.in_doubt_recheck_failed", error=repr(exc))

    async def reconcile(self, tps: Iterable[TP], only: set[str] | None = None) -> dict[str, str]:
        """Settle the ledger's unfinished dispatches of ``tps`` (``reconcile.py``)."""
        outcome = await reconcile(
            self.ledger.state,
            tps,
            providers=self.providers,
            steps=self.steps,
            writes=self.writes,
            metrics=self.metrics,
            only=only,
        )
        self._in_doubt = {d for d, result in outcome.items() if result == "in_doubt"}
        return outcome
