"""The HTTP surface: OpenAI's ``/v1/files`` and ``/v1/batches`` routes plus ``/_emulator/*``.

Routes are thin: they check input, consult the fault injector, and read or write the store;
the lifecycle scheduler moves batches along in the background. Every error uses OpenAI's
``{"error": {...}}`` shape, including 404 for unknown routes.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from batchpipe.devtools.emulator.config import MAX_FILE_BYTES, EmulatorConfig
from batchpipe.devtools.emulator.errors import (
    APIError,
    bad_request,
    batch_not_found,
    error_body,
    file_not_found,
    missing,
    unauthorized,
)
from batchpipe.devtools.emulator.faults import FaultInjector
from batchpipe.devtools.emulator.files import FileStorage, new_file_id
from batchpipe.devtools.emulator.lifecycle import Lifecycle
from batchpipe.devtools.emulator.objects import (
    batch_object,
    file_object,
    list_page,
    new_batch_id,
    present_batch,
)
from batchpipe.devtools.emulator.store import Store
from batchpipe.devtools.emulator.uploads import FormError, read_upload_form
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

FILE_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
)
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
COMPLETION_WINDOWS = ("24h",)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

Json = dict[str, Any]


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


@dataclass
class Emulator:
    """The running emulator's parts, reachable from every route as ``app.state.emulator``."""

    config: EmulatorConfig
    data_dir: Path
    seed: int
    store: Store
    storage: FileStorage
    lifecycle: Lifecycle
    faults: FaultInjector


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def _auth_and_latency(request: Request) -> None:
    emulator = _emulator(request)
    expected = emulator.config.api_key
    if expected is not None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != expected:
            raise unauthorized(token.strip() if scheme.lower() == "bearer" else None)
    await emulator.faults.slow()


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


def _limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid 'limit': '{raw}' is not an integer.", "limit") from None
    if not 1 <= value <= maximum:
        raise bad_request(
            f"Invalid 'limit': expected a value between 1 and {maximum}, got {value}.", "limit"
        )
    return value


async def _json_body(request: Request) -> Json:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def v1_router() -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_auth_and_latency)])

    @router.post("/files")
    async def create_file(request: Request) -> Response:
        emulator = _emulator(request)
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
            ttl = _file_ttl(
                form.fields.get("expires_after[anchor]"), form.fields.get("expires_after[seconds]")
            )
            file_id = new_file_id()
            storage.commit(form.tmp, file_id)
        finally:
            if form.tmp is not None and form.tmp.exists():  # not committed: an error
                await asyncio.to_thread(form.tmp.unlink, True)
        now = int(time.time())
        obj = file_object(file_id, size, filename, purpose, now, now + ttl if ttl else None)
        await emulator.store.insert_file(obj)
        return json_response(obj)

    @router.get("/files")
    async def list_files(request: Request) -> Response:
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request(f"Invalid 'order': '{order}'. Expected 'asc' or 'desc'.", "order")
        limit = _limit(q.get("limit"), 10_000, 10_000)
        data, has_more = await _emulator(request).store.list_files(
            q.get("after"), limit, order, q.get("purpose")
        )
        return json_response(list_page(data, has_more))

    @router.get("/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str) -> Response:
        obj = await _emulator(request).store.get_file(file_id)
        if obj is None:
            raise file_not_found(file_id)
        return json_response(obj)

    @router.get("/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        emulator = _emulator(request)
        obj = await emulator.store.get_file(file_id)
        path = emulator.storage.path(file_id)
        if obj is None or not path.exists():
            raise file_not_found(file_id)
        return FileResponse(path, media_type="application/octet-stream")

    @router.delete("/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> Response:
        emulator = _emulator(request)
        if not await emulator.store.delete_file(file_id):
            raise file_not_found(file_id)
        await emulator.storage.delete(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    @router.post("/batches")
    async def create_batch(request: Request) -> Response:
        emulator = _emulator(request)
        emulator.faults.check_create()
        body = await _json_body(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) in (None, ""):
                raise missing(name)
        endpoint, window = body["endpoint"], body["completion_window"]
        if endpoint not in BATCH_ENDPOINTS:
            raise bad_request(
                f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                + ", ".join(BATCH_ENDPOINTS),
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
        ttl = _output_ttl(body.get("output_expires_after"))
        input_file_id = str(body["input_file_id"])
        input_file = await emulator.store.get_file(input_file_id)
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
        }
        await emulator.store.insert_batch(obj, internal)
        emulator.lifecycle.track(obj, internal)
        return json_response(obj)

    @router.get("/batches")
    async def list_batches(request: Request) -> Response:
        emulator = _emulator(request)
        q = request.query_params
        limit = _limit(q.get("limit"), 20, 100)
        pairs, has_more = await emulator.store.list_batches(q.get("after"), limit)
        rate = emulator.config.line_failure_rate
        return json_response(list_page([present_batch(o, i, rate) for o, i in pairs], has_more))

    @router.get("/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str) -> Response:
        emulator = _emulator(request)
        emulator.faults.check_retrieve()
        record = await emulator.store.get_batch(batch_id)
        if record is None:
            raise batch_not_found(batch_id)
        obj, internal = record
        return json_response(present_batch(obj, internal, emulator.config.line_failure_rate))

    @router.post("/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        emulator = _emulator(request)
        obj, internal = await emulator.lifecycle.cancel(batch_id)
        return json_response(present_batch(obj, internal, emulator.config.line_failure_rate))

    return router


def _file_ttl(anchor: Any, seconds: Any) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at" or not isinstance(seconds, str) or not seconds.isdigit():
        raise bad_request(
            "Invalid 'expires_after': expected anchor 'created_at' and integer seconds.",
            "expires_after",
        )
    if not 3600 <= int(seconds) <= 2_592_000:
        raise bad_request(
            "Invalid 'expires_after.seconds': must be between 3600 and 2592000.",
            "expires_after.seconds",
        )
    return int(seconds)


def _output_ttl(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise bad_request(
            "Invalid 'output_expires_after': expected {'anchor': 'created_at', 'seconds': N}.",
            "output_expires_after",
        )
    seconds = value.get("seconds")
    if not isinstance(seconds, int) or not 3600 <= seconds <= 2_592_000:
        raise bad_request(
            "Invalid 'output_expires_after.seconds': must be between 3600 and 2592000.",
            "output_expires_after.seconds",
        )
    return seconds


def emulator_router() -> APIRouter:
    router = APIRouter(prefix="/_emulator")

    @router.get("/stats")
    async def stats(request: Request) -> Response:
        emulator = _emulator(request)
        result = await emulator.store.stats()
        result["faults_injected"] = dict(emulator.faults.counts)
        result["active_batches"] = emulator.lifecycle.active_count
        return json_response(result)

    @router.get("/faults")
    async def get_faults(request: Request) -> Response:
        return json_response(_emulator(request).config.faults())

    @router.post("/faults")
    async def set_faults(request: Request) -> Response:
        emulator = _emulator(request)
        changes = await _json_body(request)
        try:
            emulator.config.update_faults(changes)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return json_response(emulator.config.faults())

    @router.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    return router


def create_app(config: EmulatorConfig) -> FastAPI:
    """The emulator as an ASGI app; its lifespan opens the store and runs the scheduler."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="openai-emulator-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        storage = FileStorage(data_dir)
        storage.prepare()
        store = Store(data_dir / "emulator.sqlite3")
        await store.open()
        lifecycle = Lifecycle(store, storage, config, seed)
        app.state.emulator = Emulator(
            config=config,
            data_dir=data_dir,
            seed=seed,
            store=store,
            storage=storage,
            lifecycle=lifecycle,
            faults=FaultInjector(config, seed),
        )
        await lifecycle.start()
        log.info("emulator.started", data_dir=str(data_dir), seed=seed)
        try:
            yield
        finally:
            await lifecycle.stop()
            await store.close()

    app = FastAPI(
        title="batchpipe OpenAI emulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            return json_response(error_body(message, "invalid_request_error"), 404)
        return json_response(error_body(str(exc.detail), "invalid_request_error"), exc.status_code)

    app.include_router(v1_router())
    app.include_router(emulator_router())
    return app
