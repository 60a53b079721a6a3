"""OpenAI's batch webhooks: a batch is retrieved the moment it ends, not at its next poll.

Role: ``POST /webhooks/openai`` on the poller's HTTP port takes OpenAI's
``batch.completed``, ``batch.failed``, ``batch.expired`` and ``batch.cancelled`` events and
makes the poller that owns the batch retrieve it at once (``Follower.hurry``); polling
(``BATCHPIPE_POLL_INTERVAL_SECONDS``) stays as the safety net, so a lost event delays a batch
by at most one interval and never loses it.

- Verification is the official SDK's (``client.webhooks.unwrap`` with
  ``OPENAI_WEBHOOK_SECRET``; Standard Webhooks: base64 HMAC-SHA256 of ``id.timestamp.body``,
  timestamp within ``TOLERANCE_SECONDS``). A bad signature, an old or future timestamp or a
  missing header is 400; a ``webhook-id`` accepted before is 409. Neither changes anything.
- Several instances: whichever instance an event reaches publishes a nudge
  (``NudgeRecord``, key the batch id) to the nudges topic (``shared.topics``) and answers 200
  once it is acked (503 if Kafka refuses it, so OpenAI delivers it again; a batch this
  instance follows is hurried first, and then 200 regardless). Every poller reads the whole
  nudges topic (its partitions assigned, no consumer group: a nudge per batch end is little)
  and hurries the batches it follows. So the owner of a batch's ``batches`` partition acts on
  the event, whichever instance received it, within the time of one produce and one fetch.
- Nudges of batches this instance does not follow (yet) are remembered for
  ``NUDGE_MEMORY_SECONDS``: when the batch's record is read later (its partition moved here in
  a rebalance or at a restart, or its record is still on its way) it is retrieved at once.
  At start the last ``NUDGE_MEMORY_SECONDS`` of nudges are read back for the same reason.
- Replays: the accepted ``webhook-id`` values are kept for ``2 * TOLERANCE_SECONDS`` (an older
  delivery fails the timestamp check anyway); every instance learns them from the nudges too,
  so a replay to another instance is refused as well once the nudge has been read.
- An event for a batch no poller follows (another project's batch, one already published) is
  acknowledged and nudges nothing into being: the owner finds no such batch and only
  remembers the id until it expires. Other event types are acknowledged and ignored.

Invariant: nothing is tracked, scheduled or produced before the signature is verified; the
secret is never logged nor exported (``Settings`` keeps it a ``SecretStr``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request, Response
from openai import InvalidWebhookSignatureError, OpenAI
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict

from batchpipe.shared.contracts import decode, encode, key_bytes
from batchpipe.shared.kafka import make_consumer, make_producer
from batchpipe.shared.logs import get_logger
from batchpipe.shared.ops_http import json_response
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import batch_nudges_topic

log = get_logger(__name__)

WEBHOOK_PATH: Final = "/webhooks/openai"
BATCH_EVENTS: Final = frozenset(
    {"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"}
)
# The SDK's default tolerance (and Standard Webhooks' recommendation): 5 minutes either way.
TOLERANCE_SECONDS: Final = 300
NUDGE_MEMORY_SECONDS: Final = 3600.0
MEMORY_MAX_ENTRIES: Final = 200_000
MAX_BODY_BYTES: Final = 1024 * 1024  # a batch event is a few hundred bytes
PRODUCE_TIMEOUT_SECONDS: Final = 10.0


class NudgeRecord(BaseModel):
    """A nudge on the nudges topic (key: the batch id): "this batch has ended, retrieve it"."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    batch_id: str
    event_type: str
    webhook_id: str
    received_at: float


class Expiring:
    """Keys remembered for ``ttl`` seconds (at most ``max_entries``, oldest dropped first)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = MEMORY_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self) -> None:
        horizon = self._clock() - self.ttl
        while self._entries and (
            next(iter(self._entries.values())) < horizon or len(self._entries) > self.max_entries
        ):
            self._entries.popitem(last=False)

    def add(self, key: str, at: float | None = None) -> None:
        """Remember ``key`` as of ``at`` (default: now); an older ``at`` than ``ttl`` is ignored."""
        at = self._clock() if at is None else at
        if at < self._clock() - self.ttl:
            return
        self._entries.pop(key, None)
        self._entries[key] = at
        self._purge()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        at = self._entries.get(key)
        return at is not None and at >= self._clock() - self.ttl

    def take(self, key: str) -> bool:
        """Whether ``key`` was remembered (and unexpired); forgets it."""
        present = key in self
        self._entries.pop(key, None)
        return present


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "poller_webhook_events",
            "Webhook deliveries received, by outcome (accepted, ignored, invalid, replayed, "
            "unavailable).",
            ["outcome"],
            registry=registry,
        )
        self.nudges = Counter(
            "poller_webhook_nudges",
            "Nudges read, by effect (hurried: a batch this instance follows; remembered: one "
            "it does not follow yet; own: published here).",
            ["effect"],
            registry=registry,
        )


class Webhooks:
    """The webhook endpoint and the nudges of one poller (start with ``run()``)."""

    def __init__(
        self,
        settings: Settings,
        hurry: Callable[[str], bool],
        registry: CollectorRegistry,
    ) -> None:
        if settings.openai_webhook_secret is None:
            raise ValueError("webhooks need OPENAI_WEBHOOK_SECRET")
        self.settings = settings
        self.topic = batch_nudges_topic(settings)
        self._hurry = hurry
        # The SDK verifies; this client never sends a request (its API key is never used).
        self._sdk = OpenAI(
            api_key="unused-webhook-verification-only",
            webhook_secret=settings.openai_webhook_secret.get_secret_value(),
            max_retries=0,
        )
        self.seen = Expiring(2 * TOLERANCE_SECONDS)
        self.recent = Expiring(NUDGE_MEMORY_SECONDS)
        self.metrics = WebhookMetrics(registry)
        self._producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()

    # --- batches followed here ------------------------------------------------------------
    def following(self, batch_id: str) -> None:
        """Called when this instance starts following ``batch_id``: retrieve it at once if
        its end was announced while nobody here followed it."""
        if self.recent.take(batch_id):
            self._hurry(batch_id)
            log.info("webhook.nudge_applied_late", batch_id=batch_id)

    def _nudged(self, batch_id: str) -> str:
        if self._hurry(batch_id):
            return "hurried"
        self.recent.add(batch_id)
        return "remembered"

    # --- HTTP -----------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(tags=["webhooks"])

        @router.post(
            WEBHOOK_PATH,
            summary="OpenAI batch events (Standard Webhooks, signed with OPENAI_WEBHOOK_SECRET)",
        )
        async def openai_webhook(request: Request) -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                self.metrics.events.labels("invalid").inc()
                return json_response({"error": "body too large"}, 413)
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                self.metrics.events.labels("invalid").inc()
                return json_response({"error": "body too large"}, 413)
            status, content = await self.receive(body, dict(request.headers))
            return json_response(content, status)

        return router

    async def receive(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Handle one delivery; the HTTP status and body to answer."""
        try:
            event = self._sdk.webhooks.unwrap(body, headers)
        except InvalidWebhookSignatureError as exc:
            self.metrics.events.labels("invalid").inc()
            log.warning("webhook.rejected", reason=str(exc)[:200])
            return 400, {"error": "invalid signature or timestamp"}
        except ValueError as exc:  # a missing header, or a body that is not JSON
            self.metrics.events.labels("invalid").inc()
            log.warning("webhook.rejected", reason=str(exc)[:200])
            return 400, {"error": "missing webhook headers or unreadable body"}
        webhook_id = next(v for k, v in headers.items() if k.lower() == "webhook-id")
        if webhook_id in self.seen:
            self.metrics.events.labels("replayed").inc()
            log.warning("webhook.replayed", webhook_id=webhook_id[:100])
            return 409, {"error": "webhook-id already received"}
        event_type = str(getattr(event, "type", ""))
        data = getattr(event, "data", None)
        batch_id = getattr(data, "id", None)
        if event_type not in BATCH_EVENTS or not isinstance(batch_id, str) or not batch_id:
            self.seen.add(webhook_id)
            self.metrics.events.labels("ignored").inc()
            log.info("webhook.ignored", event_type=event_type[:100])
            return 200, {"status": "ignored"}
        hurried = self._hurry(batch_id)
        nudge = NudgeRecord(
            batch_id=batch_id,
            event_type=event_type,
            webhook_id=webhook_id,
            received_at=time.time(),
        )
        try:
            await self._publish(nudge)
        except (KafkaError, OSError, TimeoutError, RuntimeError) as exc:
            if not hurried:
                self.metrics.events.labels("unavailable").inc()
                log.error("webhook.nudge_failed", batch_id=batch_id, error=repr(exc)[:300])
                return 503, {"error": "could not hand the event over; deliver it again"}
            log.warning("webhook.nudge_failed", batch_id=batch_id, error=repr(exc)[:300])
        if not hurried:
            self.recent.add(batch_id)  # in case its partition comes here
        self.seen.add(webhook_id)
        self.metrics.events.labels("accepted").inc()
        log.info(
            "webhook.accepted", batch_id=batch_id, event_type=event_type, followed_here=hurried
        )
        return 200, {"status": "accepted"}

    async def _publish(self, nudge: NudgeRecord) -> None:
        producer = self._producer
        if producer is None or not self.ready.is_set():
            raise RuntimeError("the nudge producer is not started")
        await asyncio.wait_for(
            producer.send_and_wait(self.topic, encode(nudge), key=key_bytes(nudge.batch_id)),
            PRODUCE_TIMEOUT_SECONDS,
        )

    def warm_up(self) -> None:
        """Verify one self-signed event: the SDK builds its event types on the first
        ``unwrap`` (about 0.3 s of CPU), which would otherwise stall the event loop when the
        first real events arrive, typically several at once."""
        secret = self.settings.openai_webhook_secret
        assert secret is not None
        raw = secret.get_secret_value()
        key = (
            base64.b64decode(raw.removeprefix("whsec_"))
            if raw.startswith("whsec_")
            else raw.encode()
        )
        body = b'{"id":"evt_warm_up","object":"event","created_at":0,"type":"batch.completed",'
        body += b'"data":{"id":"batch_warm_up"}}'
        at = str(int(time.time()))
        mac = hmac.new(key, b"wh_warm_up." + at.encode() + b"." + body, hashlib.sha256)
        headers = {
            "webhook-id": "wh_warm_up",
            "webhook-timestamp": at,
            "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
        }
        self._sdk.webhooks.unwrap(body, headers)

    # --- nudges ---------------------------------------------------------------------------
    def apply(self, nudge: NudgeRecord) -> str:
        """One nudge read from the topic; its effect (a metrics label)."""
        if nudge.webhook_id in self.seen:
            return "own"  # accepted here (already hurried or remembered) or read twice
        self.seen.add(nudge.webhook_id, nudge.received_at)
        return self._nudged(nudge.batch_id)

    async def run(self) -> None:
        """Start the producer, read the nudges from ``NUDGE_MEMORY_SECONDS`` ago, then apply
        every new one until cancelled."""
        producer = make_producer(self.settings, linger_ms=0)
        await producer.start()
        consumer = make_consumer(self.settings, group_id=None, isolation_level="read_uncommitted")
        await consumer.start()
        try:
            await self._assign(consumer, producer)
            self.warm_up()
            self._producer = producer
            self.ready.set()
            log.info("webhooks.ready", path=WEBHOOK_PATH, nudges_topic=self.topic)
            while True:
                fetched = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in fetched.values():
                    for msg in records:
                        try:
                            nudge = decode(NudgeRecord, msg.value or b"")
                        except ValueError as exc:
                            log.warning("webhook.nudge_unreadable", error=str(exc)[:200])
                            continue
                        self.metrics.nudges.labels(self.apply(nudge)).inc()
        finally:
            self.ready.clear()
            self._producer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            self._sdk.close()

    async def _assign(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        partitions = await producer.partitions_for(self.topic)  # waits for the metadata
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        since = int((time.time() - NUDGE_MEMORY_SECONDS) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            at = found.get(tp)
            if at is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)
