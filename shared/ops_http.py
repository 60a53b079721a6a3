"""Health, readiness and Prometheus metrics over HTTP for every long-running service.

``ops_router(checks)`` gives ``GET /healthz`` (the process is up), ``GET /readyz`` (every
readiness check passes: 200, else 503 naming the failing checks) and ``GET /metrics``
(Prometheus text format). A service with its own FastAPI app includes the router; a service
without one (dispatcher, poller) runs ``serve_in_background(app, host, port)`` in its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


_HEALTHZ_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "Up.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}},
                }
            }
        },
    }
}


def _readyz_doc(names: list[str]) -> dict[int | str, dict[str, Any]]:
    schema = {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]},
            "checks": {
                "type": "object",
                "description": "Each readiness check and whether it passed.",
                "properties": {name: {"type": "boolean"} for name in names},
                "additionalProperties": False,
            },
        },
    }
    content = {"application/json": {"schema": schema}}
    return {
        200: {"description": "Every check passes.", "content": content},
        503: {"description": "A check fails (see checks).", "content": content},
    }


def ops_router(
    checks: Mapping[str, ReadinessCheck], registry: CollectorRegistry = REGISTRY
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is up", responses=_HEALTHZ_DOC)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @router.get(
        "/readyz",
        summary="Ready to do its work (dependencies reachable)",
        responses=_readyz_doc(sorted(checks)),
    )
    async def readyz() -> Response:
        results = await asyncio.gather(
            *(check() for check in checks.values()), return_exceptions=True
        )
        status = {name: r is True for name, r in zip(checks, results, strict=True)}
        ok = all(status.values())
        return json_response(
            {"status": "ready" if ok else "not ready", "checks": status},
            status_code=200 if ok else 503,
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "The Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def ops_app(
    title: str, checks: Mapping[str, ReadinessCheck], registry: CollectorRegistry = REGISTRY
) -> FastAPI:
    """A FastAPI app with only the operations routes (add more with ``include_router``)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(ops_router(checks, registry))
    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a service's own event loop: the service keeps its signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_in_background(
    app: FastAPI, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start uvicorn for ``app`` as a task of the running loop; stop it with
    ``server.should_exit = True`` and ``await task``."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises the start-up error (e.g. port in use)
        raise OSError(f"could not serve on {host}:{port}")
    return server, task
