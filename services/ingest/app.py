"""The ingest HTTP service: ``POST /requests`` → the requests topic, plus the ops routes.

``create_app(settings)`` builds the FastAPI app; its lifespan starts the shared producer in the
background (the app serves, and reports not ready, while Kafka is down) and stops it at exit.
One POST goes through the steps in order, refusing as early and as cheaply as possible:

1. ``auth``: 401 without a valid Bearer key (when keys are configured);
2. size: 413 when Content-Length, or the bytes read so far, exceed ``INGEST_MAX_BODY_BYTES``
   (the body is read raw, never buffered past the limit);
3. ``validate`` and ``encode``: parse once; 422 if not usable, 413 above ``INGEST_MAX_ITEMS``,
   422 listing ``{"index", "reason"}`` of every bad item, 413 for an item too large for
   Kafka. A body up to ``body.STREAM_BYTES`` is parsed whole by orjson (in a thread above
   ``OFFLOAD_BYTES``); a larger one item by item as it arrives (``body.StreamedItems``), so
   memory holds its records, never the body and its parsed tree too;
4. ``publish``: the records join the producer's shared batches, and the POST waits for every
   ack (``acks=all``) → 202 with the ids; otherwise 503 with ``Retry-After``. Nothing is
   published for a refused POST.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from batchpipe.services.ingest.auth import ApiKeys, AuthResult
from batchpipe.services.ingest.body import STREAM_BYTES, StreamedItems
from batchpipe.services.ingest.encode import ItemTooLarge, LineEncoder, Record
from batchpipe.services.ingest.publish import Publisher, Unavailable
from batchpipe.services.ingest.server import GuardedHttpToolsProtocol
from batchpipe.services.ingest.validate import (
    BodyError,
    ItemChecker,
    ItemError,
    Validated,
    parse_body,
)
from batchpipe.services.ingest.worker_metrics import mark_dead_at_shutdown, metrics_registries
from batchpipe.shared.contracts import key_headers
from batchpipe.shared.kafka import topic_exists
from batchpipe.shared.logs import configure_logging, get_logger
from batchpipe.shared.ops_http import ops_router
from batchpipe.shared.providers.registry import refusal_check
from batchpipe.shared.request_schema import DEFAULT_MODELS, REQUIRED, request_body_schema
from batchpipe.shared.settings import Settings, load_settings

log = get_logger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

RETRY_AFTER_SECONDS: Final = 5
# Collector thresholds of a serving process (defaults 700, 10, 10): a 100-item POST makes
# thousands of short-lived containers; collecting every 700 allocations costs ~15% of CPU.
GC_THRESHOLDS: Final = (50_000, 20, 100)
# Bodies larger than this are parsed and validated off the event loop (~1 ms of CPU per 10 kB).
OFFLOAD_BYTES: Final = 256 * 1024

# The original sample's payload (../shared/reference/original-sample.md): the docs' example.
SEED_EXAMPLE: Final[dict[str, Any]] = {
    "data": [
        [{"role": "user", "content": "How can I learn Python?"}],
        [{"role": "user", "content": "Who is the first president of the United States?"}],
    ]
}


# --- documentation models (the body itself is read raw) ----------------------------------


class Accepted(BaseModel):
    status: Literal["success"] = "success"
    accepted: int = Field(description="Number of request lines now durably in Kafka.")
    ids: list[str] = Field(description="The custom_id of each item, in the order sent.")


class ItemProblem(BaseModel):
    index: int | None = Field(description="Position of the item in 'data' (null: the body).")
    reason: str


class Refused(BaseModel):
    status: Literal["error"] = "error"
    reason: str
    errors: list[ItemProblem] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ready:
    """A POST's lines, encoded, ready to publish."""

    records: deque[Record]
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a POST is refused: status, metric label, reason, bad items, item count."""

    status: int
    label: str
    reason: str
    errors: list[ItemError] = field(default_factory=list)
    items: int = 0


# --- metrics ---------------------------------------------------------------------------------


class Metrics:
    """Ingest's metrics, registered in ``registry``. The in-flight gauge sums the live workers
    when several processes serve (``worker_metrics``); in one process it is a plain gauge."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.items_accepted = Counter(
            "batchpipe_ingest_items_accepted_total",
            "Items acknowledged by Kafka and answered 202.",
            registry=registry,
        )
        self.items_refused = Counter(
            "batchpipe_ingest_items_refused_total",
            "Items of refused POSTs (when they could be counted), by reason.",
            ["reason"],
            registry=registry,
        )
        self.requests_refused = Counter(
            "batchpipe_ingest_requests_refused_total",
            "POST /requests answered with an error, by reason.",
            ["reason"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "batchpipe_ingest_publish_seconds",
            "Time from the first send to the last ack of one POST.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.in_flight = Gauge(
            "batchpipe_ingest_requests_in_flight",
            "POST /requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )


# --- the app ---------------------------------------------------------------------------------


def _json(content: Any, status_code: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def _endpoint_list() -> str:
    """The batch endpoints for the route's description, each with the field its body needs
    and its own default model if it has one (``request_schema``: the document and the
    validator read the same tables)."""
    parts = []
    for url, needs in REQUIRED.items():
        own = f"; model defaults to `{DEFAULT_MODELS[url]}`" if url in DEFAULT_MODELS else ""
        parts.append(f"`{url}` (`{'`, `'.join(needs)}`{own})")
    return ", ".join(parts)


def create_app(
    settings: Settings,
    *,
    startup_wait: float = 5.0,
    connect_timeout: float = 10.0,
    registry: CollectorRegistry | None = None,
    tune_gc: bool = False,
    **producer_overrides: Any,
) -> FastAPI:
    """The ingest app. Its lifespan waits at most ``startup_wait`` seconds for Kafka, then
    serves anyway (POSTs answer 503 and /readyz 503 until the producer is connected).
    ``tune_gc`` (for a process that only serves this app) freezes the objects alive at startup
    and makes the collector run less often: every POST allocates many short-lived objects."""
    registry, served = metrics_registries(registry)
    metrics = Metrics(registry)
    keys = ApiKeys(settings.ingest_api_keys)
    publisher = Publisher(settings, connect_timeout=connect_timeout, **producer_overrides)
    max_bytes = settings.ingest_max_body_bytes
    body_timeout = settings.ingest_body_timeout_seconds
    max_items = settings.ingest_max_items
    default_model = settings.default_model
    default_kwargs = dict(settings.default_request_kwargs)
    encoder = LineEncoder(default_model, default_kwargs, refusal_check(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if tune_gc:
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
        publisher.start()
        if not await publisher.wait_connected(startup_wait):
            log.warning("ingest.starting_without_kafka", topic=publisher.topic)
        log.info("ingest.started", topic=publisher.topic, auth=keys.enabled)
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(
        title="batchpipe ingest",
        summary="Accepts LLM requests and puts them durably on the requests topic.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.publisher = publisher
    app.state.metrics = metrics

    async def producer_connected() -> bool:
        return publisher.connected

    async def requests_topic_exists() -> bool:
        return await topic_exists(settings, publisher.topic, wait_seconds=3.0)

    app.include_router(
        ops_router(
            {"producer": producer_connected, "requests_topic": requests_topic_exists}, served
        )
    )

    def prepare(raw: bytes) -> Ready | Refusal:
        """Parse, check the item count, validate, encode: pure CPU work on one body."""
        try:
            parsed = parse_body(raw)
        except BodyError as exc:
            return Refusal(422, "bad_body", str(exc), [ItemError(None, str(exc))])
        count = len(parsed.items)
        if count > max_items:
            return Refusal(
                413, "too_many_items", f"{count} items; at most {max_items} per POST", [], count
            )
        checker = ItemChecker(encoder)
        checker.add_all(parsed.items)
        return outcome_of(checker.result(), count)

    def outcome_of(checked: Validated, count: int) -> Ready | Refusal:
        if not checked.ok:
            reason = f"{len(checked.errors)} of {count} items invalid"
            if checked.too_large:
                return Refusal(413, "item_too_large", "items too large", checked.errors, count)
            return Refusal(422, "invalid", reason, checked.errors, count)
        return Ready(checked.records, checked.ids)

    async def prepare_streamed(request: Request) -> Ready | Refusal:
        """``prepare`` for a large body, item by item as its chunks arrive: what is kept is
        the encoded records, not the body. Stops reading at the first reason to refuse it
        whole (too large, too many items, not usable JSON)."""
        parser = StreamedItems()
        checker = ItemChecker(encoder)
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    return Refusal(413, "body_too_large", f"body larger than {max_bytes} bytes")
                checker.add_all(parser.feed(chunk))
                if checker.count > max_items:
                    reason = f"over {max_items} items; at most {max_items} per POST"
                    return Refusal(413, "too_many_items", reason, [], checker.count)
            checker.add_all(parser.finish())
        except BodyError as exc:
            return Refusal(422, "bad_body", str(exc), [ItemError(None, str(exc))])
        except ItemTooLarge as exc:
            return Refusal(413, "item_too_large", "items too large", [ItemError(0, str(exc))], 1)
        if checker.count > max_items:
            reason = f"{checker.count} items; at most {max_items} per POST"
            return Refusal(413, "too_many_items", reason, [], checker.count)
        return outcome_of(checker.result(), checker.count)

    def refuse(
        status: int,
        label: str,
        reason: str,
        *,
        errors: list[ItemError] | None = None,
        items: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        metrics.requests_refused.labels(label).inc()
        if items:
            metrics.items_refused.labels(label).inc(items)
        log.info("ingest.refused", status=status, reason=label, items=items)
        body = {
            "status": "error",
            "reason": reason,
            "errors": [e.as_dict() for e in errors or ()],
        }
        return _json(body, status, headers)

    async def read_body(request: Request) -> bytes | None:
        """The (small) body, or None as soon as it is larger than the limit."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post(
        "/requests",
        status_code=202,
        summary="Submit LLM requests (all accepted, or none)",
        description=(
            'Body: `{"data": [item, ...]}` or one item. An item is a list of chat messages '
            f"(the body becomes model `{default_model}`, then the default parameters "
            f"`{orjson.dumps(default_kwargs).decode()}`, then the messages), an object with "
            "`messages` (optional `custom_id`; any chat parameter; `model` defaults), or an "
            "OpenAI batch line (`custom_id`, `method`, `url`, `body`) for "
            f"{_endpoint_list()}. Each body is checked as OpenAI checks a batch line: known "
            "parameters only, with their types and ranges, and role-specific messages; "
            "`stream` must not be true. Beside the schema: custom_ids are unique within one "
            "POST (422); more than "
            f"{max_items} items (413); body over {max_bytes} bytes (413); an item over the Kafka "
            "message limit (413); nesting too deep to serialise (422); a body not received in "
            "time (408). All or nothing: "
            "answers 202 only once every item is acknowledged by Kafka."
        ),
        response_model=Accepted,
        responses={
            401: {"model": Refused, "description": "Missing or wrong Bearer key"},
            408: {
                "model": Refused,
                "description": "Body not received within BATCHPIPE_INGEST_BODY_TIMEOUT_SECONDS; "
                "the connection is closed",
            },
            413: {"model": Refused, "description": "Body, an item or the item count too large"},
            422: {"model": Refused, "description": "Not usable; every bad item with its reason"},
            503: {"model": Refused, "description": "Kafka unavailable; retry after Retry-After"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_body_schema(max_items, default_model, default_kwargs),
                        "example": SEED_EXAMPLE,
                    }
                },
            }
        },
    )
    async def post_requests(request: Request) -> Response:
        with metrics.in_flight.track_inprogress():
            return await handle(request)

    app.add_middleware(DirectRoute, method="POST", path="/requests", endpoint=post_requests)

    async def handle(request: Request) -> Response:
        auth, key_name = keys.identify(request.headers.get("authorization"))
        if auth is not AuthResult.OK:
            return refuse(
                401,
                f"auth_{auth.value}",
                "a valid 'Authorization: Bearer <key>' header is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        declared = request.headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > max_bytes:
            return refuse(413, "body_too_large", f"body larger than {max_bytes} bytes")
        try:
            async with asyncio.timeout(body_timeout):
                if length is None or length > STREAM_BYTES:
                    outcome: Ready | Refusal | bytes | None = await prepare_streamed(request)
                else:
                    outcome = await read_body(request)
        except TimeoutError:
            return refuse(
                408,
                "body_timeout",
                f"body not received within {body_timeout:g} s",
                headers={"Connection": "close"},
            )
        if outcome is None:
            return refuse(413, "body_too_large", f"body larger than {max_bytes} bytes")
        if isinstance(outcome, bytes):
            # Bodies of some size are parsed and validated in a thread: the loop keeps serving.
            if len(outcome) > OFFLOAD_BYTES:
                outcome = await asyncio.to_thread(prepare, outcome)
            else:
                outcome = prepare(outcome)
        if isinstance(outcome, Refusal):
            return refuse(
                outcome.status,
                outcome.label,
                outcome.reason,
                errors=outcome.errors,
                items=outcome.items,
            )
        count = len(outcome.records)
        started = time.perf_counter()
        try:
            await publisher.publish(outcome.records, key_headers(key_name))
        except Unavailable as exc:
            return refuse(
                503,
                "kafka_unavailable",
                f"{exc.reason}; nothing is guaranteed to be stored, retry",
                items=count,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.items_accepted.inc(count)
        return _json({"status": "success", "accepted": count, "ids": outcome.ids}, 202)

    return app


class DirectRoute:
    """ASGI middleware that hands one route's requests straight to its endpoint, past the
    router and FastAPI's per-request machinery (dependency solving, exception middleware),
    which cost a 1-item POST about as much as the rest of its handling. The route stays
    declared on the app, so the OpenAPI document describes it; the endpoint takes the
    ``Request`` and returns the ``Response`` itself, and errors still reach the app's outer
    server-error middleware."""

    def __init__(self, app: ASGIApp, *, method: str, path: str, endpoint: Endpoint) -> None:
        self._app = app
        self._method = method
        self._path = path
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self._path
            and scope["method"] == self._method
        ):
            response = await self._endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (each worker process reads the environment; its
    ``/metrics`` reports every worker, see ``worker_metrics``)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, service="ingest")
    GuardedHttpToolsProtocol.configure(settings.ingest_header_timeout_seconds)
    return mark_dead_at_shutdown(create_app(settings, tune_gc=True))
