"""One window's way into a batch: planned -> uploaded -> created -> published, each step in the
ledger before the next begins.

``DispatchSteps.run(window)`` submits a cut window exactly once and returns its ledger entry
once its batch record is published (None if the dispatch was abandoned). Every step's outcome
is written to the ledger before the next step starts, so a worker that dies anywhere leaves an
entry that says how far it got; a retry (or the partitions' next owner, through
``reconcile.py``) resumes from there:

- ``planned``: the window's coverage (its requests' offsets), dispatch id and provider (routed
  by model) are recorded; the JSONL file is written in the provider's line shape; the window
  waits for the token budget; the provider stages the file (OpenAI: uploads it).
- ``uploaded``: the provider creates the batch, tagged with the dispatch id; after a failed
  create the submitter first asks the provider to find the dispatch, so a batch is never
  created twice.
- ``created``: the ``batches`` record is published (at least once; the poller dedupes by
  batch id).
- ``published``: done; the caller may count the requests done and commit.

Until ``create`` is attempted, a revocation aborts the dispatch (``abandoned``: the next
owner windows the requests again). After it, the dispatch always finishes.

Fault injection (TEST ONLY): ``BATCHPIPE_DISPATCHER_CRASH_AT`` (``Settings.dispatcher_crash_at``)
= ``after_ledger`` | ``after_upload`` | ``after_create`` | ``after_publish`` | ``before_commit``
makes the worker ``os._exit(137)`` at that point of its first dispatch. Unset in production.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from batchpipe.services.dispatcher.jsonl import write_jsonl_async
from batchpipe.services.dispatcher.kafka_writes import KafkaWrites
from batchpipe.services.dispatcher.ledger import (
    Ledger,
    LedgerEntry,
    coverage_of_lines,
    dispatch_id_for,
)
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.submit import Aborted, Submitter
from batchpipe.services.dispatcher.token_budget import TokenBudget, estimate_tokens
from batchpipe.services.dispatcher.window import Window
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import (
    TAG_DISPATCH_ID,
    TAG_MODEL,
    TAG_REQUESTS,
    TAG_TOKENS,
    BatchProvider,
    CreateRequest,
    Pending,
    Submission,
)
from batchpipe.shared.providers.files_api import model_tag
from batchpipe.shared.providers.registry import Providers
from batchpipe.shared.settings import Settings

log = get_logger(__name__)

_IDENTITY_LINE = BatchProvider.batch_line


def crash_point(settings: Settings, name: str) -> None:
    """Test-only fault injection: exit abruptly (like ``kill -9``) at ``name`` if asked to."""
    if settings.dispatcher_crash_at == name:
        log.warning("dispatcher.crash_injected", at=name)
        os._exit(137)


class DispatchSteps:
    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        providers: Providers,
        submitter: Submitter,
        budget: TokenBudget,
        writes: KafkaWrites,
        metrics: Metrics,
        aborting: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.providers = providers
        self.submitter = submitter
        self.budget = budget
        self.writes = writes
        self.metrics = metrics
        self._aborting = aborting
        self._clock = clock
        self._tmp = Path(settings.dispatcher_data_dir or tempfile.gettempdir())
        # a dispatch's JSONL file, kept until it is published: a retry after an unexpected
        # error reuses it (the window's lines are released once written)
        self._files: dict[str, Path] = {}

    async def run(self, window: Window) -> LedgerEntry | None:
        """Submit one window exactly once: its published ledger entry, or None if abandoned."""
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
                provider=self.providers.name_for(window.model),
                endpoint=window.endpoint,
                model=window.model,
                request_count=window.count,
                input_bytes=window.nbytes,
                window_opened_at=window.opened_at_unix,
                attempts=dict(window.attempts),
                api_key=window.api_key,
                coverage=coverage,
                planned_at=now,
                updated_at=now,
                worker=f"{os.uname().nodename}:{os.getpid()}",
            )
            await self.writes.ledger_entry(entry)
            bound.info(
                "dispatch.planned",
                provider=entry.provider,
                endpoint=window.endpoint,
                model=window.model,
                requests=window.count,
                bytes=window.nbytes,
                cut=window.cut_reason,
                # from the cut to here: waiting for a free slot (backpressure) + the ledger
                since_cut=round(self._clock() - window.cut_at, 3) if window.cut_at else None,
            )
            crash_point(self.settings, "after_ledger")
        if entry.state == "planned":
            uploaded = await self._upload(window, entry)
            if uploaded is None:
                return None
            entry = uploaded
            crash_point(self.settings, "after_upload")
        if entry.state == "uploaded":
            created = await self._create(entry)
            if created is None:
                return None
            entry = created
            bound.info("dispatch.created", batch_id=entry.batch_id)
            crash_point(self.settings, "after_create")
        if entry.state == "created":
            assert entry.batch_id is not None
            await self.writes.batch_record(entry, submitted_at=int(time.time()))
            crash_point(self.settings, "after_publish")
            entry = entry.with_state("published")
            await self.writes.ledger_entry(entry)
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
        return entry

    async def _upload(self, window: Window, entry: LedgerEntry) -> LedgerEntry | None:
        """planned -> uploaded: write the JSONL file, wait for the token budget, stage it."""
        dispatch_id = entry.dispatch_id
        provider = self.providers.get(entry.provider)
        step = time.monotonic()
        path = self._files.get(dispatch_id)
        if path is None:  # a retried dispatch reuses its file: the lines are gone
            lines = window.lines
            if type(provider).batch_line is not _IDENTITY_LINE:
                lines = [provider.batch_line(line) for line in lines]
            path = await write_jsonl_async(lines, self._tmp, prefix="batchpipe-")
            self._files[dispatch_id] = path
            window.release_lines()
        written = time.monotonic()
        if not await self.budget.wait(dispatch_id, entry.model, entry.input_bytes, self._aborting):
            await self.abandon(entry)
            return None
        budget = time.monotonic()
        try:
            file_id = await self.submitter.upload(provider, path, dispatch_id, abort=self._aborting)
        except Aborted:
            await self.abandon(entry)
            return None
        done = time.monotonic()
        entry = entry.with_state("uploaded", file_id=file_id)
        await self.writes.ledger_entry(entry)
        log.info(
            "dispatch.uploaded",
            dispatch_id=dispatch_id,
            file_id=file_id,
            write_seconds=round(written - step, 3),
            budget_wait_seconds=round(budget - written, 3),
            upload_seconds=round(done - budget, 3),
        )
        return entry

    async def _create(self, entry: LedgerEntry) -> LedgerEntry | None:
        """uploaded -> created: create the batch once (looked up by dispatch id first after
        a failed attempt)."""
        dispatch_id = entry.dispatch_id
        planned_at = entry.planned_at
        provider = self.providers.get(entry.provider)

        async def lookup() -> Submission | Pending | None:
            found = await provider.find(
                [dispatch_id],
                not_before=planned_at,
                staged={dispatch_id: entry.file_id} if entry.file_id else None,
                counts={dispatch_id: entry.request_count},
            )
            return found.get(dispatch_id)

        request = CreateRequest(
            dispatch_id=dispatch_id,
            endpoint=entry.endpoint,
            model=entry.model,
            path=self._files.get(dispatch_id),
            staged=entry.file_id,
            request_count=entry.request_count,
            tags={
                TAG_DISPATCH_ID: dispatch_id,
                TAG_MODEL: model_tag(entry.model),
                TAG_REQUESTS: str(entry.request_count),
                TAG_TOKENS: str(estimate_tokens(entry.input_bytes)),
            },
        )
        try:
            batch = await self.submitter.create(
                provider, request, lookup=lookup, abort=self._aborting
            )
        except Aborted:
            await self.abandon(entry)
            return None
        entry = entry.with_state("created", batch_id=batch.batch_id)
        self.budget.release(dispatch_id)
        await self.writes.ledger_entry(entry)
        return entry

    async def abandon(self, entry: LedgerEntry) -> None:
        """Give a dispatch up before its batch exists: its requests are windowed again."""
        self.budget.release(entry.dispatch_id)
        await self.writes.ledger_entry(entry.with_state("abandoned"))
        self._forget_file(entry.dispatch_id)
        log.info("dispatch.abandoned", dispatch_id=entry.dispatch_id)

    def _forget_file(self, dispatch_id: str) -> None:
        path = self._files.pop(dispatch_id, None)
        if path is not None:
            path.unlink(missing_ok=True)
