"""The aiokafka engine: the dispatcher on a plain aiokafka consumer group (opt-in).

``BATCHPIPE_DISPATCHER_ENGINE=aiokafka`` (default ``faust``). A fallback that does not depend on
Faust internals; the worker's lifecycle (clients, submitter, timer, stop) is ``worker.py``'s,
as under Faust. Only the transport is this module's:

- ``getmany`` chunks (one partition's records per ``Dispatcher.handle_many`` call); a record
  fetched before a revocation is dropped (the generation it was fetched in is compared), the
  next owner reads it again;
- aiokafka's ``ConsumerRebalanceListener`` calls ``on_revoked`` / ``on_assigned`` (eager
  protocol: every member revokes before anyone is assigned);
- commits are ``AIOKafkaConsumer.commit(offsets)`` of the watermark;
- ``/healthz``, ``/readyz``, ``/metrics`` are served by ``shared.ops_http`` on the web port;
- on SIGTERM/SIGINT the in-flight dispatches finish and the watermark is committed before the
  consumer leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from batchpipe.services.dispatcher.backoff import Backoff
from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.records import TP
from batchpipe.services.dispatcher.worker import GroupTimeouts, Worker
from batchpipe.shared.kafka import group_instance_id, make_consumer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.ops_http import ops_app, serve_in_background
from batchpipe.shared.settings import Settings

log = get_logger(__name__)

MAX_POLL_INTERVAL_MS = 600_000
FETCH_MAX_RECORDS = 5000


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
    timeouts = GroupTimeouts.of(settings)
    consumer: AIOKafkaConsumer = make_consumer(
        settings,
        group_id=settings.dispatcher_group_id,
        session_timeout_ms=int(timeouts.session * 1000),
        heartbeat_interval_ms=int(timeouts.heartbeat * 1000),
        group_instance_id=group_instance_id(settings.dispatcher_group_instance_id),
        rebalance_timeout_ms=int(timeouts.rebalance * 1000),
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )

    async def commit(offsets: dict[TP, int]) -> bool:
        await consumer.commit(
            {TopicPartition(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
        )
        return True

    worker = Worker(settings, engine="aiokafka")
    dispatcher = await worker.start(commit)

    async def ready() -> bool:
        return worker.ready

    server, server_task = await serve_in_background(
        ops_app("batchpipe dispatcher", {"consuming": ready}, worker.metrics.registry),
        settings.http_host,
        settings.dispatcher_web_port,
    )
    consumer.subscribe([settings.requests_topic], listener=_Listener(dispatcher))
    await consumer.start()
    consume = asyncio.create_task(_consume(consumer, dispatcher, Backoff()))
    try:
        done, _ = await asyncio.wait(
            {consume, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if consume in done:
            consume.result()  # a bug: raise it
    finally:
        consume.cancel()
        await worker.stop(drain=True)
        await consumer.stop()
        server.should_exit = True
        await server_task


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task is waiting (diagnosing a stuck worker)."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("dispatcher.task_stack", task=task.get_name(), stack=out.getvalue())


async def _consume(consumer: AIOKafkaConsumer, dispatcher: Dispatcher, backoff: Backoff) -> None:
    attempt = 0
    while True:
        try:
            batch = await consumer.getmany(timeout_ms=500, max_records=FETCH_MAX_RECORDS)
            attempt = 0
        except KafkaError as exc:
            log.warning("kafka.fetch_retry", attempt=attempt, error=repr(exc))
            await backoff.sleep(attempt)
            attempt += 1
            continue
        generation = dispatcher.generation

        def stale(generation: int = generation) -> bool:
            return generation != dispatcher.generation

        for records in batch.values():
            # one partition's records, in offset order: the whole chunk in one call
            await dispatcher.handle_many(records, is_stale=stale)
