"""The batch lifecycle scheduler: one asyncio task drives every active batch through
validating → in_progress → finalizing → completed (or failed / expired / cancelling → cancelled);
an Anthropic Message Batch's steps (in_progress / canceling → ended) are ``AnthropicSteps``'.

Each batch's next step is due at a time computed from its stored timestamps, so a restarted
emulator simply reloads the active batches and carries on. Heavy steps (validation and the
output pass) run in worker processes (``step_processes``; 0: threads), at most
``MAX_CONCURRENT_STEPS`` at a time; a per-batch lock orders them with cancel requests. In
processes, validating a 50,000-line file no longer holds the API's GIL: OpenAI answers an
upload at its usual speed while it validates other batches, and so does the emulator (in a
thread, an upload during a validation took ~5x longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from batchpipe.devtools.emulator.anthropic_lifecycle import AnthropicSteps
from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.determinism import unit
from batchpipe.devtools.emulator.endpoints import LineContext
from batchpipe.devtools.emulator.errors import APIError, batch_not_found
from batchpipe.devtools.emulator.files import FileStorage
from batchpipe.devtools.emulator.flavours import Flavour, flavour_named
from batchpipe.devtools.emulator.objects import (
    ENDED_STATUSES,
    TERMINAL_STATUSES,
    file_object,
)
from batchpipe.devtools.emulator.process import PassResult, run_pass
from batchpipe.devtools.emulator.store import Store
from batchpipe.devtools.emulator.validate import batch_error, validate_file
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

Json = dict[str, Any]
T = TypeVar("T")
STEP_NICENESS = 10  # the steps are background work: the API (uploads, polls) comes first
MAX_CONCURRENT_STEPS = 4
IDLE_TICK_SECONDS = 1.0
CANCEL_FRACTION = 0.2  # cancelling lasts this share of the processing time
MAX_CANCEL_SECONDS = 5.0
FORCED_EXPIRY_DONE = 0.5  # a force-expired batch finishes this share of its lines
PARENT_CHECK_SECONDS = 0.5  # how soon a step worker notices the emulator is gone


def token_limit_error(model: str | None, limit: int = 2_000_000) -> Json:
    return batch_error(
        "token_limit_exceeded",
        f"Enqueued token limit reached for {model or 'the model'} in organization "
        f"org-emulator. Limit: {limit:,} enqueued tokens. Please try again once some in_progress "
        "batches have been completed.",
    )


def fault_validation_error() -> Json:
    return batch_error(
        "emulated_validation_failure",
        "The batch failed validation (emulated fault: validation_failure_rate).",
    )


class Lifecycle:
    def __init__(
        self, store: Store, storage: FileStorage, config: EmulatorConfig, seed: int
    ) -> None:
        self.store = store
        self.storage = storage
        self.config = config
        self.seed = seed
        self._active: dict[str, tuple[Json, Json]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: set[str] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_STEPS)
        self._task: asyncio.Task[None] | None = None
        self.anthropic = AnthropicSteps(self)
        self._pool: ProcessPoolExecutor | None = None
        # called with (batch id, status, flavour) when a batch ends (the webhook sender)
        self.on_ended: Callable[[str, str, str], None] | None = None
        self.ended_at: dict[str, float] = {}  # batch id -> when it ended (this run)

    # control -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.start_pool()
        for obj, internal in await self.store.active_batches():
            self._active[obj["id"]] = (obj, internal)
        if self._active:
            log.info("emulator.resumed", batches=len(self._active))
        self._task = asyncio.create_task(self._loop(), name="emulator-lifecycle")

    async def start_pool(self) -> None:
        if self.config.step_processes and self._pool is None:
            self._pool = _new_pool(self.config.step_processes)

    async def stop(self) -> None:
        tasks = [*self._workers, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a heavy step in a worker process (or a thread when ``step_processes`` is 0)."""
        pool = self._pool
        if pool is None:
            return await asyncio.to_thread(fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            # a worker died (killed, out of memory): a new pool for the next steps; this one
            # runs in a thread rather than fail the batch
            log.warning("emulator.step_pool_broken", step=getattr(fn, "__name__", "?"))
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = _new_pool(self.config.step_processes)
            return await asyncio.to_thread(fn, *args)

    def track(self, obj: Json, internal: Json) -> None:
        self._active[obj["id"]] = (obj, internal)
        self._wake.set()

    def lock(self, batch_id: str) -> asyncio.Lock:
        return self._locks.setdefault(batch_id, asyncio.Lock())

    @property
    def active_count(self) -> int:
        return len(self._active)

    # scheduling --------------------------------------------------------------------------

    def due(self, obj: Json, internal: Json) -> float:
        if _is_anthropic(internal):
            return self.anthropic.due(obj, internal)
        status = obj["status"]
        if status in ("validating", "finalizing"):
            return 0.0
        seconds = float(internal["processing_seconds"])
        if status == "in_progress":
            return min(float(internal["in_progress_f"]) + seconds, float(internal["expires_f"]))
        if status == "cancelling":
            wait = min(seconds * CANCEL_FRACTION, MAX_CANCEL_SECONDS)
            return float(internal["cancelling_f"]) + wait
        return float("inf")

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            next_due = now + IDLE_TICK_SECONDS
            for batch_id, (obj, internal) in list(self._active.items()):
                if batch_id in self._busy:
                    continue
                due = self.due(obj, internal)
                if due <= now:
                    self._busy.add(batch_id)
                    task = asyncio.create_task(self._work(batch_id))
                    self._workers.add(task)
                    task.add_done_callback(self._workers.discard)
                else:
                    next_due = min(next_due, due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_due - time.time()))

    async def _work(self, batch_id: str) -> None:
        try:
            async with self._sem, self.lock(batch_id):
                obj, internal = self._active[batch_id]
                if self.due(obj, internal) > time.time():
                    return
                try:
                    await self._step(obj, internal)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("emulator.batch_step_failed", batch_id=batch_id)
                    if _is_anthropic(internal):
                        await self.anthropic.broken(obj, internal)
                        return
                    await self._fail(
                        obj, internal, [batch_error("internal_error", f"emulator error: {exc}")]
                    )
        finally:
            self._busy.discard(batch_id)
            self._wake.set()

    async def _save(self, obj: Json, internal: Json, **extra: Any) -> None:
        await self.store.update_batch(obj, internal, provider=_flavour(internal).name, **extra)
        status = obj.get("status", obj.get("processing_status"))
        if status in TERMINAL_STATUSES or status == "ended":
            self._active.pop(obj["id"], None)
            self.storage.unpin(obj["id"])
            self.ended_at[obj["id"]] = time.time()
            log.info("emulator.batch_ended", batch_id=obj["id"], status=status)
            if self.on_ended is not None:
                self.on_ended(obj["id"], str(status), _flavour_name(internal))
        else:
            self._active[obj["id"]] = (obj, internal)

    async def _step(self, obj: Json, internal: Json) -> None:
        if _is_anthropic(internal):
            await self.anthropic.step(obj, internal)
            return
        status = obj["status"]
        now = time.time()
        if status == "validating":
            await self._validate(obj, internal)
        elif status == "in_progress":
            seconds = float(internal["processing_seconds"])
            started = float(internal["in_progress_f"])
            if internal.get("force_expire"):
                await self._expire(obj, internal, FORCED_EXPIRY_DONE)
            elif now >= internal["expires_f"] and started + seconds > internal["expires_f"]:
                await self._expire(obj, internal, (internal["expires_f"] - started) / seconds)
            else:
                obj["status"] = "finalizing"
                obj["finalizing_at"] = int(now)
                await self._save(obj, internal)
                await self._finalize(obj, internal)
        elif status == "finalizing":
            await self._finalize(obj, internal)
        elif status == "cancelling":
            await self._cancelled(obj, internal)

    # steps -------------------------------------------------------------------------------

    async def _fail(self, obj: Json, internal: Json, errors: list[Json]) -> None:
        obj["status"] = "failed"
        obj["failed_at"] = int(time.time())
        obj["errors"] = {"object": "list", "data": errors}
        await self._save(obj, internal)

    async def _validate(self, obj: Json, internal: Json) -> None:
        seq, seed = internal["seq"], internal["seed"]
        flavour = _flavour(internal)
        file_obj = await self.store.get_file(obj["input_file_id"], flavour.name)
        path = self.storage.path(obj["input_file_id"])
        if file_obj is None or not path.exists():
            message = f"The input file {obj['input_file_id']} was not found."
            error = batch_error("file_not_found", message, param="input_file_id")
            await self._fail(obj, internal, [error])
            return
        result = await self._offload(
            validate_file,
            path,
            obj["endpoint"],
            flavour.max_batch_lines(self.config),
            flavour.model_rules(self.config),
        )
        obj["model"] = result.model
        if not result.ok:
            await self._fail(obj, internal, result.errors)
            return
        if unit(seed, "token_limit", seq) < self.config.token_limit_failure_rate:
            await self._fail(obj, internal, [token_limit_error(result.model)])
            return
        # enqueued tokens, estimated as OpenAI's rule of thumb (4 bytes per token)
        internal["enqueued_tokens"] = -(-int(file_obj["bytes"]) // 4)
        limit = self.config.enqueued_token_limit
        if limit is not None:
            enqueued = sum(
                int(other_internal.get("enqueued_tokens", 0))
                for other, other_internal in self._active.values()
                if other["id"] != obj["id"]
                and other.get("model") == result.model
                and other["status"] in ("in_progress", "finalizing")
            )
            if enqueued + internal["enqueued_tokens"] > limit:
                await self._fail(obj, internal, [token_limit_error(result.model, limit)])
                return
        if unit(seed, "validation", seq) < self.config.validation_failure_rate:
            await self._fail(obj, internal, [fault_validation_error()])
            return
        self.storage.pin(obj["input_file_id"], obj["id"])
        now = time.time()
        internal["force_expire"] = unit(seed, "force_expire", seq) < self.config.force_expire
        internal["in_progress_f"] = now
        obj["status"] = "in_progress"
        obj["in_progress_at"] = int(now)
        obj["request_counts"] = {"total": result.total, "completed": 0, "failed": 0}
        await self._save(
            obj,
            internal,
            register_custom_ids=result.custom_ids,
            lines_submitted=result.total,
        )

    async def _run_pass(
        self, obj: Json, internal: Json, done_before: float, expire_rest: bool
    ) -> tuple[PassResult, list[Json]]:
        ctx = LineContext(
            seed=internal["seed"],
            batch_seq=internal["seq"],
            batch_id=obj["id"],
            endpoint=obj["endpoint"],
            created=int(internal["in_progress_f"]),
            failure_rate=self.config.line_failure_rate,
            failure_statuses=list(self.config.line_failure_status),
        )
        out_tmp, err_tmp = self.storage.tmp_path(), self.storage.tmp_path()
        result = await self._offload(
            run_pass,
            self.storage.batch_input(obj["input_file_id"], obj["id"]),
            out_tmp,
            err_tmp,
            ctx,
            done_before,
            expire_rest,
        )
        now = int(time.time())
        ttl = internal.get("output_expires_after_seconds")
        expires_at = now + int(ttl) if ttl else None
        new_files: list[Json] = []
        for tmp, count, key, kind in (
            (out_tmp, result.output_lines, "output_file_id", "output"),
            (err_tmp, result.error_lines, "error_file_id", "error"),
        ):
            if count:
                file_id = _flavour(internal).new_file_id()
                size = tmp.stat().st_size
                self.storage.commit(tmp, file_id)
                name = f"{obj['id']}_{kind}.jsonl"
                new_files.append(file_object(file_id, size, name, "batch_output", now, expires_at))
                obj[key] = file_id
            else:
                tmp.unlink(missing_ok=True)
        obj["usage"] = result.usage.as_batch_usage()
        return result, new_files

    async def _finalize(self, obj: Json, internal: Json) -> None:
        result, new_files = await self._run_pass(obj, internal, 1.0, expire_rest=False)
        obj["status"] = "completed"
        obj["completed_at"] = int(time.time())
        total = obj["request_counts"]["total"]
        obj["request_counts"] = {
            "total": total,
            "completed": result.completed,
            "failed": result.failed,
        }
        await self._save(
            obj, internal, new_files=new_files, succeeded_custom_ids=result.succeeded_custom_ids
        )

    async def _expire(self, obj: Json, internal: Json, done_before: float) -> None:
        result, new_files = await self._run_pass(obj, internal, done_before, expire_rest=True)
        obj["status"] = "expired"
        obj["expired_at"] = int(time.time())
        obj["request_counts"] = {
            "total": obj["request_counts"]["total"],
            "completed": result.completed,
            "failed": result.failed + result.unfinished,
        }
        await self._save(
            obj, internal, new_files=new_files, succeeded_custom_ids=result.succeeded_custom_ids
        )

    async def _cancelled(self, obj: Json, internal: Json) -> None:
        new_files: list[Json] = []
        succeeded: list[str] = []
        started = internal.get("in_progress_f")
        if started is not None:
            seconds = float(internal["processing_seconds"])
            elapsed = float(internal["cancelling_f"]) - float(started)
            done_before = 1.0 if seconds <= 0 else max(0.0, elapsed / seconds)
            result, new_files = await self._run_pass(
                obj, internal, min(done_before, 1.0), expire_rest=False
            )
            succeeded = result.succeeded_custom_ids
            obj["request_counts"] = {
                "total": obj["request_counts"]["total"],
                "completed": result.completed,
                "failed": result.failed,
            }
        obj["status"] = "cancelled"
        obj["cancelled_at"] = int(time.time())
        await self._save(obj, internal, new_files=new_files, succeeded_custom_ids=succeeded)

    # requests ----------------------------------------------------------------------------

    async def cancel(self, batch_id: str, provider: str) -> tuple[Json, Json]:
        """Handle ``POST /batches/{id}/cancel`` of ``provider``: 409 once the batch has ended."""
        async with self.lock(batch_id):
            record = await self.store.get_batch(batch_id, provider)
            if record is None:
                raise batch_not_found(batch_id)
            obj, internal = record
            status = obj["status"]
            if status in ENDED_STATUSES or status == "finalizing":
                raise APIError(409, f"Cannot cancel a batch with status '{status}'.")
            if status in ("cancelling", "cancelled"):
                return obj, internal
            now = time.time()
            obj["status"] = "cancelling"
            obj["cancelling_at"] = int(now)
            internal["cancelling_f"] = now
            await self.store.update_batch(obj, internal)
            self.track(obj, internal)
            return obj, internal


def _is_anthropic(internal: Json) -> bool:
    """Whether a batch is an Anthropic Message Batch (its steps are ``AnthropicSteps``')."""
    return internal.get("flavour") == "anthropic"


def _flavour_name(internal: Json) -> str:
    """The API a batch belongs to: openai, azure or anthropic."""
    return "anthropic" if _is_anthropic(internal) else _flavour(internal).name


def _flavour(internal: Json) -> Flavour:
    """The API a batch was created through: its files, ids and validation rules."""
    return flavour_named(internal.get("flavour"))


def _new_pool(processes: int) -> ProcessPoolExecutor:
    # spawn, not fork: the API process runs threads (aiosqlite, to_thread), which fork would
    # copy in whatever state they are in
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_background,
        initargs=(os.getpid(),),
    )
    pool.submit(int)  # start a worker now, not at the first validation
    return pool


def _background(parent: int) -> None:
    """A step worker's start: low priority, and a watch that ends it when ``parent`` is gone."""
    os.nice(STEP_NICENESS)
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    """Exit the worker once the emulator that started it is gone (killed, crashed).

    Nothing else would end it: it waits on its call queue, whose pipe it holds both ends of, so
    it never sees an end of file. Polling ``getppid`` (the emulator's pid until it dies) works
    whichever thread spawned the worker, unlike a parent death signal.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)
