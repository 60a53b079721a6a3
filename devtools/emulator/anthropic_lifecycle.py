"""The lifecycle of an Anthropic Message Batch: in_progress → ended, or canceling → ended.

Role: the steps the one ``Lifecycle`` scheduler runs for batches created through Anthropic's
API (``internal["flavour"] == "anthropic"``); it asks ``due`` when a batch's next step is and
calls ``step``. A batch has no validation phase (Anthropic checks each request's params as it
processes it): it is in progress from its creation for ``processing_seconds``, then ends with
every result; a cancel ends it after a short ``canceling`` with the unprocessed requests
``canceled``; at ``expires_at`` (or when the ``force_expire`` fault drew it) it ends with the
rest ``expired``.
Invariant: a step's outcome depends only on the stored batch (timestamps, seed, sequence
number) and its stored requests, so a restarted emulator ends a batch exactly as it would
have; results are written to a temporary file and moved into place before the batch is saved
as ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batchpipe.devtools.emulator.anthropic_objects import request_counts, rfc3339
from batchpipe.devtools.emulator.anthropic_results import (
    ResultContext,
    errored,
    run_results_pass,
)
from batchpipe.devtools.emulator.errors import APIError

if TYPE_CHECKING:
    from batchpipe.devtools.emulator.files import FileStorage
    from batchpipe.devtools.emulator.lifecycle import Lifecycle

Json = dict[str, Any]
PROVIDER = "anthropic"
CANCEL_FRACTION = 0.2  # canceling lasts this share of the processing time
MAX_CANCEL_SECONDS = 5.0
FORCED_EXPIRY_DONE = 0.5  # a force-expired batch processes this share of its requests


def requests_path(storage: FileStorage, batch_id: str) -> Path:
    """Where a batch's requests are kept (JSONL of ``{"custom_id", "params"}``), beside the
    files but under no file id, so no Files API sees them."""
    return storage.path(f"{batch_id}.requests")


def results_path(storage: FileStorage, batch_id: str) -> Path:
    return storage.path(f"{batch_id}.results")


def _write_all_errored(source: Path, target: Path) -> int:
    """Every request errored with ``api_error``: the end of a batch whose pass failed."""
    count = 0
    with source.open("rb") as requests, target.open("wb") as out:
        for raw in requests:
            if raw.strip():
                custom_id = orjson.loads(raw)["custom_id"]
                line = {"custom_id": custom_id, "result": errored("api_error", "emulator error")}
                out.write(orjson.dumps(line) + b"\n")
                count += 1
    return count


class AnthropicSteps:
    """The Anthropic batch steps of ``lifecycle`` (its store, storage, config, pool)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    def due(self, obj: Json, internal: Json) -> float:
        status = obj["processing_status"]
        seconds = float(internal["processing_seconds"])
        if status == "in_progress":
            return min(float(internal["created_f"]) + seconds, float(internal["expires_f"]))
        if status == "canceling":
            wait = min(seconds * CANCEL_FRACTION, MAX_CANCEL_SECONDS)
            return float(internal["cancel_f"]) + wait
        return float("inf")

    async def step(self, obj: Json, internal: Json) -> None:
        status = obj["processing_status"]
        seconds = float(internal["processing_seconds"])
        started, expires = float(internal["created_f"]), float(internal["expires_f"])
        if status == "in_progress":
            if internal.get("force_expire"):
                await self._end(obj, internal, FORCED_EXPIRY_DONE, "expired")
            elif time.time() >= expires and started + seconds > expires:
                await self._end(obj, internal, (expires - started) / seconds, "expired")
            else:
                await self._end(obj, internal, 1.0, "canceled")
        elif status == "canceling":
            elapsed = float(internal["cancel_f"]) - started
            done_before = 1.0 if seconds <= 0 else max(0.0, elapsed / seconds)
            await self._end(obj, internal, min(done_before, 1.0), "canceled")

    async def _end(self, obj: Json, internal: Json, done_before: float, rest: str) -> None:
        lifecycle = self.lifecycle
        config = lifecycle.config
        ctx = ResultContext(
            seed=int(internal["seed"]),
            batch_seq=int(internal["seq"]),
            error_rate=config.anthropic_error_rate,
            error_types=list(config.anthropic_error_types),
        )
        tmp = lifecycle.storage.tmp_path()
        counts = await lifecycle._offload(
            run_results_pass,
            requests_path(lifecycle.storage, obj["id"]),
            tmp,
            ctx,
            done_before,
            rest,
        )
        lifecycle.storage.commit(tmp, f"{obj['id']}.results")
        internal["usage"] = {"input_tokens": counts.input_tokens, "output": counts.output_tokens}
        await self._ended(obj, internal, counts.as_counts(), counts.succeeded_custom_ids)

    async def _ended(
        self, obj: Json, internal: Json, counts: dict[str, int], succeeded: list[str]
    ) -> None:
        obj["processing_status"] = "ended"
        obj["ended_at"] = rfc3339(time.time())
        obj["request_counts"] = request_counts(0, **counts)
        await self.lifecycle._save(obj, internal, succeeded_custom_ids=succeeded)

    async def broken(self, obj: Json, internal: Json) -> None:
        """A step failed unexpectedly: end the batch with every request errored."""
        storage = self.lifecycle.storage
        tmp = storage.tmp_path()
        total = await asyncio.to_thread(_write_all_errored, requests_path(storage, obj["id"]), tmp)
        storage.commit(tmp, f"{obj['id']}.results")
        await self._ended(obj, internal, {"errored": total}, [])

    async def cancel(self, batch_id: str) -> Json:
        """``POST /v1/messages/batches/{id}/cancel``: canceling, unless it has ended."""
        lifecycle = self.lifecycle
        async with lifecycle.lock(batch_id):
            record = await lifecycle.store.get_batch(batch_id, PROVIDER)
            if record is None:
                raise not_found(batch_id)
            obj, internal = record
            if obj["processing_status"] == "ended":
                raise APIError(400, f"Message batch {batch_id} has already ended.")
            if obj["processing_status"] == "canceling":
                return obj
            now = time.time()
            obj["processing_status"] = "canceling"
            obj["cancel_initiated_at"] = rfc3339(now)
            internal["cancel_f"] = now
            await lifecycle.store.update_batch(obj, internal, provider=PROVIDER)
            lifecycle.track(obj, internal)
            return obj

    async def delete(self, batch_id: str) -> None:
        """``DELETE /v1/messages/batches/{id}``: only an ended batch, with its requests and
        results."""
        lifecycle = self.lifecycle
        async with lifecycle.lock(batch_id):
            record = await lifecycle.store.get_batch(batch_id, PROVIDER)
            if record is None:
                raise not_found(batch_id)
            if record[0]["processing_status"] != "ended":
                raise APIError(
                    400,
                    f"Message batch {batch_id} cannot be deleted while it is processing; "
                    "cancel it first.",
                )
            await lifecycle.store.delete_batch(batch_id, PROVIDER)
            for path in (
                requests_path(lifecycle.storage, batch_id),
                results_path(lifecycle.storage, batch_id),
            ):
                path.unlink(missing_ok=True)


def not_found(batch_id: str) -> APIError:
    return APIError(404, f"Message batch {batch_id} not found.")
