"""The HTTP surface: every provider's Files + Batches routes plus ``/_emulator/*``, one app.

OpenAI's routes live under ``/v1``, Azure OpenAI's under ``/openai``; both are built from the
same handlers (``routes_files``, ``routes_batches``) with the provider's ``Flavour``, over one
store, lifecycle and fault injector. Anthropic's Message Batches (``/v1/messages/batches``,
requests inline) have their own handlers (``routes_anthropic``) over the same store,
lifecycle and faults. Routes are thin: they check input, consult the fault
injector, and read or write the store; the lifecycle scheduler moves batches along in the
background. Every error, including 404 for an unknown route, is rendered in the shape of the
API its path belongs to.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.errors import APIError
from batchpipe.devtools.emulator.faults import FaultInjector
from batchpipe.devtools.emulator.files import FileStorage
from batchpipe.devtools.emulator.flavours import FLAVOURS, Flavour, flavour_of_path
from batchpipe.devtools.emulator.lifecycle import Lifecycle
from batchpipe.devtools.emulator.routes_admin import emulator_router
from batchpipe.devtools.emulator.routes_anthropic import anthropic_router
from batchpipe.devtools.emulator.routes_batches import batches_router
from batchpipe.devtools.emulator.routes_files import files_router
from batchpipe.devtools.emulator.store import Store
from batchpipe.devtools.emulator.web import Emulator, emulator_of, json_response
from batchpipe.devtools.emulator.webhooks import WebhookSender
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)


def provider_router(flavour: Flavour) -> APIRouter:
    """``flavour``'s API: its Files and Batches routes behind its authentication, plus the
    configured latency (``slow_seconds``) on every call."""

    async def guard(request: Request) -> None:
        emulator = emulator_of(request)
        flavour.check(request, emulator.config)
        await emulator.faults.slow()

    router = APIRouter(prefix=flavour.prefix, dependencies=[Depends(guard)])
    router.include_router(files_router(flavour))
    router.include_router(batches_router(flavour))
    return router


def create_app(config: EmulatorConfig) -> FastAPI:
    """The emulator as an ASGI app; its lifespan opens the store and runs the scheduler."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="batchpipe-emulator-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
        storage = FileStorage(data_dir)
        storage.prepare()
        store = Store(data_dir / "emulator.sqlite3")
        await store.open()
        lifecycle = Lifecycle(store, storage, config, seed)
        webhooks = WebhookSender(config, seed)
        lifecycle.on_ended = webhooks.batch_ended
        app.state.emulator = Emulator(
            config=config,
            data_dir=data_dir,
            seed=seed,
            store=store,
            storage=storage,
            lifecycle=lifecycle,
            faults=FaultInjector(config, seed),
            webhooks=webhooks,
        )
        await lifecycle.start()
        log.info("emulator.started", data_dir=str(data_dir), seed=seed)
        try:
            yield
        finally:
            await lifecycle.stop()
            await webhooks.close()
            await store.close()

    app = FastAPI(
        title="batchpipe provider emulator",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        body = flavour_of_path(request.url.path).error_body(exc)
        return json_response(body, exc.status, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        flavour = flavour_of_path(request.url.path)
        if exc.status_code in (404, 405):
            error = flavour.unknown_route(request.method, request.url.path)
        else:
            error = APIError(exc.status_code, str(exc.detail))
        return json_response(flavour.error_body(error), error.status)

    for flavour in FLAVOURS:
        app.include_router(provider_router(flavour))
    app.include_router(anthropic_router())
    app.include_router(emulator_router())
    return app
