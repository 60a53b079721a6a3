"""Opt-in runner: the same ``Dispatcher`` on a plain aiokafka consumer group.

``BATCHPIPE_DISPATCHER_ENGINE=aiokafka`` (default ``faust``). Kept as a fallback that does
not depend on Faust internals: the Faust engine's throughput relies on ``app._bulk_delivery``
replacing faust-streaming's per-message hand-off (two asyncio tasks per message in
``Consumer._drain_messages``) for the requests topic. Everything that makes the dispatcher
safe — windows, the ledger and its reconciliation, the contiguous commit watermark, the
revocation hook — is the shared ``Dispatcher``; only the transport differs:

- ``getmany`` chunks (one partition's records per ``Dispatcher.handle_many`` call) instead of
  a Faust stream; a record fetched before a revocation is dropped (the generation it was
  fetched in is compared), the next owner reads it again;
- aiokafka's ``ConsumerRebalanceListener`` calls ``on_revoked`` / ``on_assigned`` (eager
  protocol: every member revokes before anyone is assigned);
- commits are ``AIOKafkaConsumer.commit(offsets)`` of the watermark;
- ``/healthz``, ``/readyz``, ``/metrics`` are served by ``shared.ops_http`` on the web port.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from batchpipe.services.dispatcher.agent import (
    Dispatcher,
    freeze_startup_heap,
    keep_freed_memory,
    shorten_gil_switch,
)
from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.services.dispatcher.window import TP
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.openai_client import make_openai, make_openai_sync
from batchpipe.shared.ops_http import ops_app, serve_in_background
from batchpipe.shared.settings import Settings

log = get_logger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.dispatcher.on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.dispatcher.on_assigned({(tp.topic, tp.partition) for tp in assigned})


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await ensure_topics(settings)
    metrics = Metrics()
    producer = make_producer(settings)
    await producer.start()
    ledger = Ledger(settings)
    await ledger.start()
    consumer: AIOKafkaConsumer = make_consumer(
        settings,
        group_id=settings.dispatcher_group_id,
        session_timeout_ms=int(settings.dispatcher_session_timeout_seconds * 1000),
        heartbeat_interval_ms=int(
            max(0.5, settings.dispatcher_session_timeout_seconds / 10) * 1000
        ),
        rebalance_timeout_ms=300_000,
        max_poll_interval_ms=600_000,
    )

    async def commit(offsets: dict[TP, int]) -> bool:
        await consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
        )
        return True

    client = make_openai(settings)
    upload_client = make_openai_sync(settings)
    dispatcher = Dispatcher(
        settings,
        producer=producer,
        ledger=ledger,
        client=client,
        upload_client=upload_client,
        commit=commit,
        metrics=metrics,
    )

    async def ready() -> bool:
        return dispatcher.ready.is_set()

    server, server_task = await serve_in_background(
        ops_app("batchpipe dispatcher", {"consuming": ready}, metrics.registry),
        settings.http_host,
        settings.dispatcher_web_port,
    )
    consumer.subscribe([settings.requests_topic], listener=_Listener(dispatcher))
    await consumer.start()
    submitter = asyncio.create_task(dispatcher.run_submitter())
    interval = max(0.05, min(1.0, settings.batch_max_wait_seconds / 4))

    async def timer() -> None:
        while True:
            await asyncio.sleep(interval)
            await dispatcher.tick()

    ticker = asyncio.create_task(timer())
    consume = asyncio.create_task(_consume(consumer, dispatcher))
    freeze_startup_heap()
    keep_freed_memory()
    shorten_gil_switch()
    log.info("dispatcher.started", engine="aiokafka", requests_topic=settings.requests_topic)
    try:
        done, _ = await asyncio.wait(
            {consume, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if consume in done:
            consume.result()  # a bug: raise it
    finally:
        consume.cancel()
        ticker.cancel()
        # Graceful: finish the in-flight dispatch and commit before leaving the group.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(dispatcher.on_revoked(set(dispatcher.assigned)), 60)
        submitter.cancel()
        await consumer.stop()
        await ledger.stop()
        await producer.stop()
        await client.close()
        upload_client.close()
        server.should_exit = True
        await server_task
        log.info("dispatcher.stopped")


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (diagnosing a stuck worker)."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("dispatcher.task_stack", task=task.get_name(), stack=out.getvalue())


async def _consume(consumer: AIOKafkaConsumer, dispatcher: Dispatcher) -> None:
    attempt = 0
    while True:
        try:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            attempt = 0
        except KafkaError as exc:
            log.warning("kafka.fetch_retry", attempt=attempt, error=repr(exc))
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
            attempt += 1
            continue
        generation = dispatcher.generation

        def stale(generation: int = generation) -> bool:
            return generation != dispatcher.generation

        for records in batch.values():
            # one partition's records, in offset order: the whole chunk in one call
            await dispatcher.handle_many(records, is_stale=stale)
