"""The Faust engine (the default): one agent over the requests topic and the rebalance hooks.

Run with ``batchpipe dispatcher`` or ``faust -A batchpipe.services.dispatcher.app worker -l info``
(settings from ``BATCHPIPE_*``; the app id ``BATCHPIPE_DISPATCHER_GROUP_ID`` is the consumer
group, so several workers share the partitions). Faust's web server on
``BATCHPIPE_DISPATCHER_WEB_PORT`` serves ``/healthz``, ``/readyz`` and ``/metrics``. The worker's
lifecycle (clients, submitter, window timer, stop) is ``worker.py``'s, as under the aiokafka
engine.

The requests topic is declared with ``acks=False``: Faust never acks or commits it; the
``Dispatcher`` commits its own contiguous "done" watermark (see ``commits.py`` and
``offsets.py`` for why Faust's ``take()``/ack/commit path cannot be trusted here).

Its records do not go through Faust's per-message hand-off (``_bulk_delivery``): the fetcher
passes each partition's fetched chunk to ``Dispatcher.handle_many`` through a small queue;
the agent only subscribes the topic.

This module patches faust-streaming internals (``_drain_messages``, the worker consumer's
isolation level, the driver's ``_commit``), written against exactly one version,
``FAUST_VERSION``; ``create_app`` refuses to start on any other.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import faust
from faust.types import TP as FaustTP
from faust.types import StreamT
from faust.web import Request, Response, View

from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.records import TP, Incoming, header_items
from batchpipe.services.dispatcher.worker import GroupTimeouts, Worker
from batchpipe.shared.kafka import faust_broker_config, group_instance_id
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings, load_settings

log = get_logger(__name__)

FAUST_VERSION = "0.15.3"


class UnsupportedFaustVersion(RuntimeError):
    """The installed faust-streaming is not the version this engine's patches were written
    against."""


def require_faust_version(installed: str | None = None) -> None:
    """Refuse to run the Faust engine on another faust-streaming than ``FAUST_VERSION``."""
    if installed is None:
        try:
            installed = metadata.version("faust-streaming")
        except metadata.PackageNotFoundError:
            installed = "none"
    if installed != FAUST_VERSION:
        raise UnsupportedFaustVersion(
            f"the dispatcher's Faust engine needs faust-streaming=={FAUST_VERSION} (it relies "
            f"on that version's internals), but {installed} is installed: install "
            f"faust-streaming=={FAUST_VERSION}, or set BATCHPIPE_DISPATCHER_ENGINE=aiokafka"
        )


class Runtime:
    """The worker, started lazily inside Faust's event loop, and its Faust-side plumbing."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.worker = Worker(settings, engine="faust")
        self._lock = asyncio.Lock()
        self._consumer: asyncio.Task[None] | None = None
        # fetched chunks of the requests topic: (records, Faust generation, dispatcher generation)
        self.chunks: asyncio.Queue[tuple[list[Any], int, int]] = asyncio.Queue(maxsize=2)

    async def deliver(self, records: list[Any], generation: int) -> None:
        """From Faust's fetcher (``_bulk_delivery``): queue one partition's fetched records."""
        dispatcher = await self.get()
        await self.chunks.put((records, generation, dispatcher.generation))

    async def _consume_chunks(self, dispatcher: Dispatcher) -> None:
        app = self.app
        while True:
            records, generation, dispatcher_generation = await self.chunks.get()

            def stale(g: int = generation, dg: int = dispatcher_generation) -> bool:
                return g != app.consumer_generation_id or dg != dispatcher.generation

            await dispatcher.handle_many(records, is_stale=stale)

    async def commit(self, offsets: dict[TP, int]) -> bool:
        faust_offsets = {FaustTP(topic, partition): o for (topic, partition), o in offsets.items()}
        # The driver's plain commit of explicit offsets (filtered to the current assignment);
        # Faust's public commit() only commits acked offsets, and acks are off for this topic.
        consumer: Any = self.app.consumer
        committed: bool = await consumer._commit(faust_offsets)
        return committed

    async def get(self) -> Dispatcher:
        async with self._lock:
            dispatcher = self.worker.dispatcher
            if dispatcher is None:
                dispatcher = await self.worker.start(self.commit)
                self._consumer = asyncio.create_task(self._consume_chunks(dispatcher))
            return dispatcher

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
        await self.worker.stop(drain=False)


def _read_committed_consumers() -> None:
    """Make Faust's worker consumer read_committed (idempotent, process-wide).

    faust-streaming 0.15 hard-codes ``isolation_level="read_uncommitted"`` unless the app uses
    Kafka transactions itself. The poller re-publishes retries to ``requests`` inside
    transactions; read uncommitted, a retry from an aborted (then replayed) transaction would
    be submitted twice. Only the dispatcher runs Faust in batchpipe."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls: Any = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_batchpipe_read_committed", False):
        return
    original = thread_cls._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._isolation_level = "read_committed"
        return consumer

    thread_cls._create_worker_consumer = create_worker_consumer
    thread_cls._batchpipe_read_committed = True


Deliver = Callable[[list[Any], int], Awaitable[None]]


def _bulk_delivery(app: faust.App, topic: str, deliver: Deliver) -> None:
    """Hand the records of ``topic`` to ``deliver`` a fetched chunk at a time (idempotent,
    process-wide patch of the aiokafka driver's consumer; only apps that register a topic here
    are affected).

    faust-streaming 0.15's ``Consumer._drain_messages`` passes every message to the streams
    through ``wait_first(callback(message), suspend_flow.wait())``: two asyncio tasks and three
    loop iterations per message, ~60% of a Faust dispatcher's time (see bench/README.md). The
    requests topic has ``acks=False`` and the dispatcher keeps its own offsets, so nothing of
    the per-message path (ack bookkeeping, gaps, the stream's buffer) is needed for it. This
    drain loop is the original one with the same fetch call, the same read-offset filter and
    bookkeeping and the same stop/seek handling, but the requests topic's records of one
    partition go to ``deliver(records, generation_id)`` as one list (other topics, if any, keep
    the per-message path). Records fetched before a rebalance are dropped by the receiver
    (generation check), as the agent did per event."""
    from faust.transport.drivers import aiokafka as driver

    consumer_cls: Any = driver.Consumer
    app_any: Any = app
    app_any._batchpipe_bulk = (topic, deliver)
    if getattr(consumer_cls, "_batchpipe_bulk_patched", False):
        return
    original = consumer_cls._drain_messages

    async def drain_messages(self: Any, fetcher: Any) -> None:
        bulk = getattr(self.app, "_batchpipe_bulk", None)
        if bulk is None:
            await original(self, fetcher)
            return
        await _drain_bulk(self, fetcher, *bulk)

    consumer_cls._drain_messages = drain_messages
    consumer_cls._batchpipe_bulk_patched = True


async def _drain_bulk(consumer: Any, fetcher: Any, topic: str, deliver: Deliver) -> None:
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    app = consumer.app
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            records, active = await consumer._wait_next_records(1.0)
            generation = app.consumer_generation_id
            await consumer.sleep(0)
            if records is None or consumer.should_stop:
                continue
            if not consumer.flow_active:
                try:
                    await consumer.perform_seek()
                except Exception as exc:
                    log.warning("faust.seek_failed", error=repr(exc))
                continue
            for tp, chunk in records.items():
                if not (active is None or tp in active or tp in consumer._buffered_partitions):
                    continue
                r_offset = read_offset[tp]
                if r_offset is not None and chunk and chunk[0].offset < r_offset:
                    # (ascending offsets: only a chunk that starts below it needs filtering)
                    chunk = [r for r in chunk if r.offset >= r_offset]
                if not chunk:
                    continue
                if tp.topic == topic:
                    await deliver(chunk, generation)
                else:
                    for record in chunk:
                        await consumer.wait_first(
                            consumer.callback(consumer._to_message(tp, record)),
                            consumer.suspend_flow.wait(),
                        )
                read_offset[tp] = chunk[-1].offset
    except consumer.consumer_stopped_errors:
        if app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if app.should_stop:
            return
        raise


def create_app(settings: Settings) -> faust.App:
    require_faust_version()
    _read_committed_consumers()
    datadir = settings.dispatcher_data_dir or tempfile.mkdtemp(prefix="batchpipe-dispatcher-")
    timeouts = GroupTimeouts.of(settings)
    app = faust.App(
        settings.dispatcher_group_id,
        **faust_broker_config(settings),
        autodiscover=False,
        datadir=str(datadir),
        web_enabled=True,
        web_host=settings.http_host,
        web_port=settings.dispatcher_web_port,
        topic_disable_leader=True,
        topic_replication_factor=settings.topic_replication_factor,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        # Faust's consumer hands messages over one at a time (two tasks per message in
        # Consumer._drain_messages); bigger polls and buffers help a little (see bench/README).
        broker_max_poll_records=5000,
        stream_buffer_maxsize=16384,
        broker_session_timeout=timeouts.session,
        broker_heartbeat_interval=timeouts.heartbeat,
        broker_rebalance_timeout=timeouts.rebalance,
        consumer_group_instance_id=group_instance_id(settings.dispatcher_group_instance_id),
        producer_max_request_size=4 * 1024 * 1024,
        consumer_max_fetch_size=4 * 1024 * 1024,
    )
    runtime = Runtime(app, settings)
    requests = app.topic(
        settings.requests_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )
    _bulk_delivery(app, settings.requests_topic, runtime.deliver)

    @app.agent(requests, name="dispatch")
    async def dispatch(stream: StreamT[Any]) -> None:
        # The agent subscribes the topic; its records reach ``handle_many`` in chunks through
        # ``runtime.deliver`` (``_bulk_delivery``). This loop only serves a message that
        # would still come through Faust's per-message path.
        dispatcher = await runtime.get()
        async for event in stream.events():
            message = event.message
            generation = message.generation_id

            def stale(generation: int | None = generation) -> bool:
                return generation != app.consumer_generation_id

            record = Incoming(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                headers=header_items(message.headers),
            )
            await dispatcher.handle_many([record], is_stale=stale)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        revoked: set[FaustTP] = args[0]
        dispatcher = await runtime.get()
        mine = {(tp.topic, tp.partition) for tp in revoked if tp.topic == settings.requests_topic}
        await dispatcher.on_revoked(mine)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        assigned: set[FaustTP] = args[0]
        dispatcher = await runtime.get()
        mine = {(tp.topic, tp.partition) for tp in assigned if tp.topic == settings.requests_topic}
        await dispatcher.on_assigned(mine)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *_args: Any, signal: Any, **_: Any) -> None:
        await runtime.stop()

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ok = runtime.worker.ready
            return self.json({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            from prometheus_client import generate_latest

            # aiohttp refuses a charset inside content_type, so not CONTENT_TYPE_LATEST
            return self.bytes(
                generate_latest(runtime.worker.metrics.registry),
                content_type="text/plain; version=0.0.4",
            )

    return app


_app: faust.App | None = None


def __getattr__(name: str) -> Any:
    """``services.dispatcher.app.app`` (for ``faust -A``) is built on first access, from the
    environment, so importing this module has no side effects."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(load_settings())
        return _app
    raise AttributeError(name)
