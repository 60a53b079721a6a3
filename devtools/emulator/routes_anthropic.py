"""Anthropic's Message Batches routes: create, retrieve, list, cancel, delete, results.

Role: ``/v1/messages/batches`` as ``anthropic.Anthropic`` calls it through both
``client.messages.batches`` and ``client.beta.messages.batches`` (the latter adds
``?beta=true`` and may send an ``anthropic-beta`` header: both are accepted and change
nothing). The requests come inline; create checks only their envelope (each ``custom_id``
matching ``^[a-zA-Z0-9_-]{1,64}$`` and unique, ``params`` an object, at most
``anthropic_max_batch_requests`` of them, a body of at most ``anthropic_max_batch_bytes``:
413 ``request_too_large`` beyond) and stores them as JSONL; their params are checked when the
batch processes them (``anthropic_results``).
Invariant: an Anthropic batch is its own account's: it is found only through these routes,
and OpenAI's and Azure's batches are not found here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from batchpipe.devtools.emulator.anthropic_lifecycle import (
    PROVIDER,
    not_found,
    requests_path,
    results_path,
)
from batchpipe.devtools.emulator.anthropic_objects import (
    CUSTOM_ID_PATTERN,
    deleted,
    message_batch,
    new_message_batch_id,
    page,
    present,
)
from batchpipe.devtools.emulator.determinism import unit
from batchpipe.devtools.emulator.errors import APIError
from batchpipe.devtools.emulator.flavours import ANTHROPIC
from batchpipe.devtools.emulator.web import Emulator, Json, emulator_of, json_response

MAX_LIST_LIMIT = 1000


def too_large(limit: int) -> APIError:
    return APIError(413, f"Request exceeds the maximum allowed number of bytes ({limit:,}).")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def checked_requests(body: object, max_requests: int) -> list[Json]:
    """The ``requests`` of a create body, their envelope checked (400 otherwise)."""
    if not isinstance(body, dict):
        raise APIError(400, "Input should be a valid dictionary")
    requests = body.get("requests")
    if requests is None:
        raise APIError(400, "requests: Field required")
    if not isinstance(requests, list) or not requests:
        raise APIError(400, "requests: List should have at least 1 item")
    if len(requests) > max_requests:
        raise APIError(
            400,
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}",
        )
    seen: set[str] = set()
    for index, item in enumerate(requests):
        if not isinstance(item, dict):
            raise APIError(400, f"requests.{index}: Input should be a valid dictionary")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.match(custom_id):
            raise APIError(
                400,
                f"requests.{index}.custom_id: String should match pattern "
                f"'{CUSTOM_ID_PATTERN.pattern}'",
            )
        if custom_id in seen:
            raise APIError(
                400,
                f"Duplicate custom_id '{custom_id}': each request in a batch needs a unique "
                "custom_id.",
            )
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            raise APIError(400, f"requests.{index}.params: Input should be a valid dictionary")
    return requests


def _write_requests(requests: list[Json], tmp: Path) -> None:
    with tmp.open("wb", buffering=1 << 20) as out:
        for item in requests:
            line = {"custom_id": item["custom_id"], "params": item["params"]}
            out.write(orjson.dumps(line) + b"\n")


def _root(request: Request) -> str:
    return str(request.base_url)


async def _record(emulator: Emulator, batch_id: str) -> tuple[Json, Json]:
    record = await emulator.store.get_batch(batch_id, PROVIDER)
    if record is None:
        raise not_found(batch_id)
    return record


def anthropic_router() -> APIRouter:
    """The Message Batches routes, behind Anthropic's header checks and the latency fault."""

    async def guard(request: Request) -> None:
        emulator = emulator_of(request)
        ANTHROPIC.check(request, emulator.config)
        await emulator.faults.slow()

    router = APIRouter(prefix="/v1/messages/batches", dependencies=[Depends(guard)])

    @router.post("")
    async def create(request: Request) -> Response:
        emulator = emulator_of(request)
        config = emulator.config
        emulator.faults.check_create()
        emulator.faults.check_overloaded()
        raw = await read_limited(request, config.anthropic_max_batch_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise APIError(400, "The request body is not valid JSON.") from None
        requests = checked_requests(body, config.anthropic_max_batch_requests)
        batch_id = new_message_batch_id()
        tmp = emulator.storage.tmp_path()
        await asyncio.to_thread(_write_requests, requests, tmp)
        emulator.storage.commit(tmp, requests_path(emulator.storage, batch_id).name)
        now = time.time()
        expires = now + config.completion_window_seconds
        obj = message_batch(batch_id, len(requests), now, expires)
        internal: Json = {
            "seed": emulator.seed,
            "created_f": now,
            "expires_f": expires,
            "processing_seconds": config.processing_seconds,
            "flavour": PROVIDER,
            "force_expire": unit(emulator.seed, "force_expire", batch_id) < config.force_expire,
        }
        await emulator.store.insert_batch(
            obj,
            internal,
            PROVIDER,
            register_custom_ids=[str(item["custom_id"]) for item in requests],
            lines_submitted=len(requests),
        )
        emulator.lifecycle.track(obj, internal)
        return json_response(present(obj, _root(request)))

    @router.get("")
    async def list_batches(request: Request) -> Response:
        emulator = emulator_of(request)
        q = request.query_params
        raw_limit = q.get("limit")
        limit = 20
        if raw_limit is not None:
            if not raw_limit.lstrip("-").isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
                raise APIError(
                    400, f"limit: Input should be between 1 and {MAX_LIST_LIMIT}, got {raw_limit}"
                )
            limit = int(raw_limit)
        if q.get("before_id") and q.get("after_id"):
            raise APIError(400, "Only one of before_id and after_id may be given.")
        pairs, has_more = await emulator.store.list_batches(
            q.get("after_id"), limit, PROVIDER, before=q.get("before_id")
        )
        root = _root(request)
        return json_response(page([present(obj, root) for obj, _ in pairs], has_more))

    @router.get("/{batch_id}")
    async def retrieve(request: Request, batch_id: str) -> Response:
        emulator = emulator_of(request)
        emulator.calls["anthropic.batches.retrieve"] += 1
        emulator.faults.check_retrieve()
        obj, _ = await _record(emulator, batch_id)
        return json_response(present(obj, _root(request)))

    @router.post("/{batch_id}/cancel")
    async def cancel(request: Request, batch_id: str) -> Response:
        obj = await emulator_of(request).lifecycle.anthropic.cancel(batch_id)
        return json_response(present(obj, _root(request)))

    @router.delete("/{batch_id}")
    async def delete(request: Request, batch_id: str) -> Response:
        await emulator_of(request).lifecycle.anthropic.delete(batch_id)
        return json_response(deleted(batch_id))

    @router.get("/{batch_id}/results")
    async def results(request: Request, batch_id: str) -> Response:
        emulator = emulator_of(request)
        obj, _ = await _record(emulator, batch_id)
        path = results_path(emulator.storage, batch_id)
        if obj["processing_status"] != "ended" or not path.exists():
            raise APIError(
                400, f"Message batch {batch_id} has not ended yet: its results are not ready."
            )
        return FileResponse(path, media_type="application/x-jsonl")

    return router
