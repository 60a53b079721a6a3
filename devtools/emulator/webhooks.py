"""OpenAI's batch webhooks, emulated: a signed ``batch.*`` event each time an OpenAI batch ends.

Role: with ``webhook_url`` and ``webhook_secret`` configured, every OpenAI batch that reaches
``completed``, ``failed``, ``expired`` or ``cancelled`` is announced to ``webhook_url`` the
way OpenAI does it: a JSON event ``{"id": "evt_...", "object": "event", "created_at",
"type": "batch.<status>", "data": {"id": <batch id>}}`` signed the Standard Webhooks way
(headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body" keyed with the base64-decoded part of the whsec_ secret>``), which the
official SDK's ``client.webhooks.unwrap`` verifies.

- Retries: a delivery answered with anything but 2xx (or not answered within
  ``webhook_timeout_seconds``) is tried again after each of ``webhook_retry_delays`` (default:
  Standard Webhooks' schedule, immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), with
  the same ``webhook-id`` and a fresh timestamp and signature each time.
- Faults: ``webhook_drop_rate`` of the events are never sent (a lost webhook).
- ``stats()``: events, attempts, deliveries, failed attempts, drops and events given up.

Deliveries live in memory: a restarted emulator does not resend the events of batches that
ended before. Azure OpenAI and Anthropic batches send none (those APIs have no such events).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import secrets
import time
from collections import Counter
from typing import Final

import httpx
import orjson

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.determinism import digest
from batchpipe.shared.logs import get_logger

log = get_logger(__name__)

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
EVENT_TYPES: Final = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}


def new_secret() -> str:
    """A fresh signing secret in OpenAI's format (``whsec_`` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    return secret.encode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one delivery (``v1,<base64 HMAC-SHA256>``)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest_bytes = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest_bytes).decode()


def signed_headers(
    secret: str, webhook_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one delivery of ``body``, signed at ``timestamp`` (default: now)."""
    at = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(at),
        "webhook-signature": signature(secret, webhook_id, at, body),
    }


def batch_event(batch_id: str, status: str, at: int | None = None) -> bytes:
    """The body of the event announcing that ``batch_id`` reached ``status``."""
    return orjson.dumps(
        {
            "id": f"evt_{secrets.token_hex(16)}",
            "object": "event",
            "created_at": int(time.time()) if at is None else at,
            "type": EVENT_TYPES[status],
            "data": {"id": batch_id},
        }
    )


class WebhookSender:
    """Sends the events of ended OpenAI batches to ``config.webhook_url``, with retries."""

    def __init__(self, config: EmulatorConfig, seed: int) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(digest(seed, "fault", "webhook_drop"))
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def batch_ended(self, batch_id: str, status: str, flavour: str) -> None:
        """Announce an ended batch (called by the lifecycle; returns at once)."""
        url, secret = self.config.webhook_url, self.config.webhook_secret
        if flavour != "openai" or url is None or secret is None or status not in EVENT_TYPES:
            return
        self.counts["events"] += 1
        rate = self.config.webhook_drop_rate
        if rate > 0 and self._rng.random() < rate:
            self.counts["dropped"] += 1
            log.info("emulator.webhook_dropped", batch_id=batch_id)
            return
        body = batch_event(batch_id, status)
        webhook_id = f"wh_{secrets.token_hex(16)}"
        task = asyncio.create_task(self._deliver(url, secret, webhook_id, body, batch_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, url: str, secret: str, webhook_id: str, body: bytes, batch_id: str
    ) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.config.webhook_timeout_seconds)
        for attempt, delay in enumerate(self.config.webhook_retry_delays, start=1):
            if delay > 0:
                await asyncio.sleep(delay)
            self.counts["attempts"] += 1
            try:
                response = await self._client.post(
                    url, content=body, headers=signed_headers(secret, webhook_id, body)
                )
                status: int | str = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if isinstance(status, int) and 200 <= status < 300:
                self.counts["delivered"] += 1
                log.info("emulator.webhook_delivered", batch_id=batch_id, attempt=attempt)
                return
            self.counts["failed_attempts"] += 1
            log.info(
                "emulator.webhook_failed", batch_id=batch_id, attempt=attempt, status=str(status)
            )
        self.counts["exhausted"] += 1
        log.warning("emulator.webhook_gave_up", batch_id=batch_id)

    def stats(self) -> dict[str, int]:
        names = ("events", "attempts", "delivered", "failed_attempts", "dropped", "exhausted")
        return {name: self.counts[name] for name in names} | {"pending": len(self._tasks)}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
