"""Submission through a window's provider: stage the file, create the batch; retry until done.

- ``upload``: the provider's ``stage`` (OpenAI: ``files.create(purpose="batch")`` with the
  SDK's own retries, 429/5xx honouring ``Retry-After``), wrapped in an outer loop that never
  gives up: a duplicate *file* is harmless.
- ``create``: the provider's ``create``, which never retries by itself, because a retried
  create is a duplicate batch (no idempotency keys). After every failure the outer loop first
  looks the dispatch up (``lookup``: the provider's ``find``); only if the provider has no
  such batch does it create again.
- Which failures are retried is the provider's call (``transient_errors``; ``OSError``
  always). Backoff: exponential with jitter, capped, but a server's ``Retry-After`` /
  ``retry-after-ms`` wins. While this loop waits, the agent's submit queue stays full and the
  agent stops consuming (backpressure); it resumes by itself when the provider answers again.
- ``abort``: checked before each attempt (set when the window's partitions are revoked); a
  create is never aborted once attempted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import BatchProvider, CreateRequest, Pending, Submission

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Aborted(Exception):
    """The dispatch was given up before ``batches.create`` was attempted."""


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``retry-after``."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            continue
    return None


def backoff(attempt: int, base: float, cap: float, server: float | None) -> float:
    if server is not None:
        return min(max(server, 0.0), cap * 4)
    delay: float = min(cap, base * (2 ** min(attempt, 20)))
    return delay * (0.5 + random.random() / 2)


class Submitter:
    def __init__(
        self,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._on_retry = on_retry

    async def _wait(self, step: str, attempt: int, exc: BaseException) -> None:
        delay = backoff(attempt, self.base_delay, self.max_delay, retry_after(exc))
        log.warning(
            "dispatch.retry", step=step, attempt=attempt, delay=round(delay, 3), error=repr(exc)
        )
        if self._on_retry is not None:
            self._on_retry(step, exc)
        await self._sleep(delay)

    async def upload(
        self,
        provider: BatchProvider,
        path: Path,
        dispatch_id: str,
        abort: Callable[[], bool] = lambda: False,
    ) -> str | None:
        """Stage the window's file with ``provider`` (its id, or None if it needs none)."""
        transient = provider.retryable
        attempt = 0
        while True:
            if abort():
                raise Aborted("upload")
            try:
                return await provider.stage(path, dispatch_id)
            except transient as exc:
                await self._wait("upload", attempt, exc)
                attempt += 1

    async def create(
        self,
        provider: BatchProvider,
        request: CreateRequest,
        *,
        lookup: Callable[[], Awaitable[Submission | Pending | None]],
        abort: Callable[[], bool] = lambda: False,
        on_attempt: Callable[[], Awaitable[None]] | None = None,
    ) -> Submission:
        """Create the batch exactly once: before each retry, ``lookup`` finds a batch that an
        earlier attempt may have created (while it answers ``Pending``, no create is tried:
        the lookup is repeated after a backoff). ``on_attempt`` runs before the first attempt (the
        ledger records that a create may exist from now on)."""
        transient = provider.retryable
        attempt = 0
        attempted = False
        while True:
            if attempted:
                try:
                    existing = await lookup()
                except transient as exc:
                    await self._wait("lookup", attempt, exc)
                    attempt += 1
                    continue
                if isinstance(existing, Pending):
                    await self._wait("lookup_pending", attempt, TimeoutError(existing.batch_id))
                    attempt += 1
                    continue
                if existing is not None:
                    return existing
            elif abort():
                raise Aborted("create")
            if not attempted and on_attempt is not None:
                await on_attempt()
            attempted = True
            try:
                return await provider.create(request)
            except transient as exc:
                await self._wait("create", attempt, exc)
                attempt += 1
