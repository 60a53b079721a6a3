"""One dispatcher worker's lifecycle, the same under either engine.

An engine (``app.py``: Faust, the default; ``kafka_runner.py``: plain aiokafka) owns only its
transport: how records are fetched and handed to ``Dispatcher.handle_many``, how rebalances
reach ``on_revoked`` / ``on_assigned``, how offsets are committed, and how health is served.
Everything else is here, once: the topics, the producer, the ledger, the provider clients, the
``Dispatcher``, its submitter and its window timer, the consumer-group timeouts, and an orderly
stop (optionally finishing in-flight dispatches and committing first).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from batchpipe.services.dispatcher.commits import CommitFn
from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.shared.kafka import ensure_topics, make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.registry import make_providers
from batchpipe.shared.settings import Settings

log = get_logger(__name__)

# Time the revocation hook may take to finish in-flight dispatches before the group moves on.
REBALANCE_TIMEOUT_SECONDS = 300.0
DRAIN_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class GroupTimeouts:
    """The consumer-group timeouts both engines configure, in seconds."""

    session: float
    heartbeat: float
    rebalance: float = REBALANCE_TIMEOUT_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> GroupTimeouts:
        session = settings.dispatcher_session_timeout_seconds
        return cls(session=session, heartbeat=max(0.5, session / 10))


def timer_interval(settings: Settings) -> float:
    """How often due windows are cut: a quarter of the time limit, within [0.05 s, 1 s]."""
    return max(0.05, min(1.0, settings.batch_max_wait_seconds / 4))


class Worker:
    def __init__(self, settings: Settings, *, engine: str, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics()
        self.dispatcher: Dispatcher | None = None
        self._submitter: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None

    async def start(self, commit: CommitFn) -> Dispatcher:
        """Create the topics and clients, the dispatcher, its submitter and its timer."""
        settings = self.settings
        await ensure_topics(settings)
        producer = make_producer(settings)
        await producer.start()
        ledger = Ledger(settings)
        await ledger.start()
        dispatcher = self.dispatcher = Dispatcher(
            settings,
            producer=producer,
            ledger=ledger,
            providers=make_providers(settings),
            commit=commit,
            metrics=self.metrics,
        )
        self._submitter = asyncio.create_task(
            dispatcher.run_submitter(), name="dispatcher-submitter"
        )
        self._timer_task = asyncio.create_task(
            self._timer(dispatcher), name="dispatcher-window-timer"
        )
        log.info(
            "dispatcher.started",
            engine=self.engine,
            requests_topic=settings.requests_topic,
            ledger_topic=ledger.topic,
            group=settings.dispatcher_group_id,
        )
        return dispatcher

    @property
    def ready(self) -> bool:
        """Consuming: the ledger is reconciled for the current assignment."""
        return self.dispatcher is not None and self.dispatcher.ready.is_set()

    async def _timer(self, dispatcher: Dispatcher) -> None:
        interval = timer_interval(self.settings)
        while True:
            await asyncio.sleep(interval)
            await dispatcher.tick()

    async def stop(self, *, drain: bool) -> None:
        """Stop the background tasks and close the clients. ``drain``: first finish the
        in-flight dispatches and commit, as on a revocation of every partition (for an
        engine that leaves the group without one)."""
        dispatcher = self.dispatcher
        if self._timer_task is not None:
            self._timer_task.cancel()
        if drain and dispatcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    dispatcher.on_revoked(set(dispatcher.assigned)), DRAIN_TIMEOUT_SECONDS
                )
        if self._submitter is not None:
            self._submitter.cancel()
        if dispatcher is None:
            return
        await dispatcher.ledger.stop()
        await dispatcher.producer.stop()
        await dispatcher.providers.close()
        log.info("dispatcher.stopped", engine=self.engine)
