"""The Batches routes (create, list, retrieve, cancel) of one provider's API.

``batches_router(flavour)`` builds them; the handlers are the same for every provider and read
the flavour only for what differs (its batch endpoints, the allowed output expiry, the provider
a batch belongs to). A created batch records its flavour (``internal["flavour"]``), which the
lifecycle uses to validate its lines by that provider's rules.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response

from batchpipe.devtools.emulator.errors import bad_request, batch_not_found, missing
from batchpipe.devtools.emulator.flavours import Flavour
from batchpipe.devtools.emulator.objects import (
    batch_object,
    list_page,
    new_batch_id,
    present_batch,
)
from batchpipe.devtools.emulator.web import (
    Json,
    emulator_of,
    expiry_seconds,
    json_body,
    json_response,
    page_limit,
)

COMPLETION_WINDOWS = ("24h",)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def validate_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise bad_request("Invalid type for 'metadata': expected an object.", "metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(metadata)} "
            "properties instead.",
            "metadata",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(
                f"Invalid 'metadata': key '{key[:80]}' is too long. Keys can be at most "
                f"{MAX_METADATA_KEY} characters.",
                "metadata",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid type for 'metadata.{key}': expected a string.", f"metadata.{key}"
            )
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(value)}.",
                f"metadata.{key}",
            )
    return {str(k): str(v) for k, v in metadata.items()}


def output_ttl(value: Any, allowed: tuple[int, int]) -> int | None:
    """``output_expires_after`` of a create request, checked."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise bad_request(
            "Invalid 'output_expires_after': expected {'anchor': 'created_at', 'seconds': N}.",
            "output_expires_after",
        )
    return expiry_seconds(value.get("seconds"), "output_expires_after", allowed)


def batches_router(flavour: Flavour) -> APIRouter:
    """The Batches routes of ``flavour`` (its guard dependency is added by the caller)."""
    router = APIRouter()
    provider = flavour.name
    endpoints = flavour.batch_endpoints

    @router.post("/batches")
    async def create_batch(request: Request) -> Response:
        emulator = emulator_of(request)
        emulator.faults.check_create()
        body = await json_body(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) in (None, ""):
                raise missing(name)
        endpoint, window = body["endpoint"], body["completion_window"]
        if endpoint not in endpoints:
            raise bad_request(
                f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                + ", ".join(endpoints),
                "endpoint",
                "invalid_value",
            )
        if window not in COMPLETION_WINDOWS:
            raise bad_request(
                f"Invalid value for 'completion_window': '{window}'. Supported values are: '24h'.",
                "completion_window",
                "invalid_value",
            )
        metadata = validate_metadata(body.get("metadata"))
        ttl = output_ttl(body.get("output_expires_after"), flavour.expiry_seconds)
        input_file_id = str(body["input_file_id"])
        input_file = await emulator.store.get_file(input_file_id, provider)
        if input_file is not None and input_file["purpose"] != "batch":
            raise bad_request(
                f"The input file {input_file_id} must be uploaded with purpose 'batch'.",
                "input_file_id",
            )
        now = time.time()
        window_seconds = emulator.config.completion_window_seconds
        obj = batch_object(
            new_batch_id(),
            input_file_id,
            endpoint,
            window,
            int(now),
            int(now + window_seconds),
            metadata,
        )
        internal: Json = {
            "seed": emulator.seed,
            "created_f": now,
            "expires_f": now + window_seconds,
            "processing_seconds": emulator.config.processing_seconds,
            "output_expires_after_seconds": ttl,
            "flavour": provider,
        }
        await emulator.store.insert_batch(obj, internal, provider)
        emulator.lifecycle.track(obj, internal)
        return json_response(obj)

    @router.get("/batches")
    async def list_batches(request: Request) -> Response:
        emulator = emulator_of(request)
        q = request.query_params
        limit = page_limit(q.get("limit"), 20, 100)
        pairs, has_more = await emulator.store.list_batches(q.get("after"), limit, provider)
        rate = emulator.config.line_failure_rate
        return json_response(list_page([present_batch(o, i, rate) for o, i in pairs], has_more))

    @router.get("/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str) -> Response:
        emulator = emulator_of(request)
        emulator.calls[f"{provider}.batches.retrieve"] += 1
        emulator.faults.check_retrieve()
        record = await emulator.store.get_batch(batch_id, provider)
        if record is None:
            raise batch_not_found(batch_id)
        obj, internal = record
        return json_response(present_batch(obj, internal, emulator.config.line_failure_rate))

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        emulator = emulator_of(request)
        obj, internal = await emulator.lifecycle.cancel(batch_id, provider)
        return json_response(present_batch(obj, internal, emulator.config.line_failure_rate))

    return router
