"""The Files routes (create, list, retrieve, content, delete) of one provider's API.

``files_router(flavour)`` builds them under the flavour's prefix; the handlers are the same for
every provider and read the flavour only for what differs (the provider a file belongs to, the
id format, the allowed expiry). A file's bytes are committed under its id before its object is
stored, so a listed file always has content.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from batchpipe.devtools.emulator.config import MAX_FILE_BYTES
from batchpipe.devtools.emulator.errors import bad_request, file_not_found, missing
from batchpipe.devtools.emulator.flavours import Flavour
from batchpipe.devtools.emulator.objects import file_object, list_page
from batchpipe.devtools.emulator.uploads import FormError, read_upload_form
from batchpipe.devtools.emulator.web import (
    emulator_of,
    expiry_seconds,
    json_response,
    page_limit,
)

FILE_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
)


def file_ttl(anchor: Any, seconds: Any, allowed: tuple[int, int]) -> int | None:
    """The form fields ``expires_after[anchor]`` / ``expires_after[seconds]``, checked."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at" or not isinstance(seconds, str) or not seconds.isdigit():
        raise bad_request(
            "Invalid 'expires_after': expected anchor 'created_at' and integer seconds.",
            "expires_after",
        )
    return expiry_seconds(int(seconds), "expires_after", allowed)


def files_router(flavour: Flavour) -> APIRouter:
    """The Files routes of ``flavour`` (its guard dependency is added by the caller)."""
    router = APIRouter()
    provider = flavour.name

    @router.post("/files")
    async def create_file(request: Request) -> Response:
        emulator = emulator_of(request)
        emulator.faults.check_upload()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_FILE_BYTES + (1 << 20):
            raise bad_request("File is too large.")
        storage = emulator.storage
        try:
            form = await read_upload_form(request, storage.tmp_path(), MAX_FILE_BYTES)
        except FormError as exc:
            raise bad_request(str(exc)) from None
        try:
            purpose = form.fields.get("purpose")
            if form.tmp is None or form.file_field != "file":
                raise missing("file")
            if not purpose:
                raise missing("purpose")
            if purpose not in FILE_PURPOSES:
                raise bad_request(
                    f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", "purpose"
                )
            filename = form.filename or "upload"
            size = form.size
            if purpose == "batch":
                if not filename.endswith(".jsonl"):
                    raise bad_request("Invalid file format for Batch API. Must be .jsonl", "file")
                if size > emulator.config.max_batch_file_bytes:
                    raise bad_request("File is too large.")  # OpenAI's words, no param
            ttl = file_ttl(
                form.fields.get("expires_after[anchor]"),
                form.fields.get("expires_after[seconds]"),
                flavour.expiry_seconds,
            )
            file_id = flavour.new_file_id()
            storage.commit(form.tmp, file_id)
        finally:
            if form.tmp is not None and form.tmp.exists():  # not committed: an error
                await asyncio.to_thread(form.tmp.unlink, True)
        now = int(time.time())
        obj = file_object(file_id, size, filename, purpose, now, now + ttl if ttl else None)
        await emulator.store.insert_file(obj, provider)
        return json_response(obj)

    @router.get("/files")
    async def list_files(request: Request) -> Response:
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request(f"Invalid 'order': '{order}'. Expected 'asc' or 'desc'.", "order")
        limit = page_limit(q.get("limit"), 10_000, 10_000)
        data, has_more = await emulator_of(request).store.list_files(
            q.get("after"), limit, order, q.get("purpose"), provider
        )
        return json_response(list_page(data, has_more))

    @router.get("/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str) -> Response:
        obj = await emulator_of(request).store.get_file(file_id, provider)
        if obj is None:
            raise file_not_found(file_id)
        return json_response(obj)

    @router.get("/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        emulator = emulator_of(request)
        obj = await emulator.store.get_file(file_id, provider)
        path = emulator.storage.path(file_id)
        if obj is None or not path.exists():
            raise file_not_found(file_id)
        return FileResponse(path, media_type="application/octet-stream")

    @router.delete("/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> Response:
        emulator = emulator_of(request)
        if not await emulator.store.delete_file(file_id, provider):
            raise file_not_found(file_id)
        await emulator.storage.delete(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    return router
