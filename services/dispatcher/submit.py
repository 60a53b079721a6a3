"""Submission to OpenAI: upload the JSONL file, create the batch; retry until it is done.

- ``upload``: ``files.create(purpose="batch")`` with the SDK's own retries (429/5xx, honouring
  ``Retry-After``), wrapped in an outer loop that never gives up: a duplicate *file* is harmless.
  Given a synchronous client (``upload_client``), the upload runs in a thread: streaming a
  49 MiB file through the async client costs the event loop ~0.07-0.1 s of CPU (64 KiB
  chunks through anyio), time the consuming loop needs; in a thread the socket writes release
  the GIL and the whole upload costs the process ~0.04 s (bench/README.md, Dispatcher).
- ``create``: ``batches.create(completion_window="24h", metadata={"batchpipe_dispatch_id": ...})``
  with the SDK's retries OFF, because a retried create is a duplicate batch (no idempotency
  keys). After every failure the outer loop first looks the dispatch up by its metadata
  (``lookup``); only if OpenAI has no such batch does it create again.
- Backoff: exponential with jitter, capped, but a server's ``Retry-After`` / ``retry-after-ms``
  wins. While this loop waits, the agent's submit queue stays full and the agent stops
  consuming (backpressure); it resumes by itself when OpenAI answers again.
- ``abort``: checked before each attempt (set when the window's partitions are revoked); a
  create is never aborted once attempted.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI, OpenAI
from openai.types import Batch

from batchpipe.shared.logs import get_logger

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
        client: AsyncOpenAI,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[str, BaseException], None] | None = None,
        upload_client: OpenAI | None = None,
    ) -> None:
        self.client = client
        self.upload_client = upload_client
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

    async def upload(self, path: Path, abort: Callable[[], bool] = lambda: False) -> str:
        attempt = 0
        while True:
            if abort():
                raise Aborted("upload")
            try:
                if self.upload_client is not None:
                    return await asyncio.to_thread(_upload, self.upload_client, path)
                with path.open("rb") as f:
                    created = await self.client.files.create(
                        file=(path.name, f, "application/jsonl"), purpose="batch"
                    )
                return created.id
            except (openai.APIError, OSError) as exc:
                await self._wait("upload", attempt, exc)
                attempt += 1

    async def create(
        self,
        *,
        file_id: str,
        endpoint: str,
        metadata: dict[str, str],
        lookup: Callable[[], Awaitable[Batch | None]],
        abort: Callable[[], bool] = lambda: False,
        on_attempt: Callable[[], Awaitable[None]] | None = None,
    ) -> Batch:
        """Create the batch exactly once: before each retry, ``lookup`` finds a batch that an
        earlier attempt may have created. ``on_attempt`` runs before the first attempt (the
        ledger records that a create may exist from now on)."""
        attempt = 0
        client = self.client.with_options(max_retries=0)
        attempted = False
        while True:
            if attempted:
                try:
                    existing = await lookup()
                except (openai.APIError, OSError) as exc:
                    await self._wait("lookup", attempt, exc)
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
                kwargs: dict[str, Any] = {
                    "input_file_id": file_id,
                    "endpoint": endpoint,
                    "completion_window": "24h",
                    "metadata": metadata,
                }
                return await client.batches.create(**kwargs)
            except (openai.APIError, OSError) as exc:
                await self._wait("create", attempt, exc)
                attempt += 1


UPLOAD_CHUNK = 8 << 20


class _LargeReads(io.FileIO):
    """The JSONL file, read at least ``UPLOAD_CHUNK`` bytes at a time: httpx asks a file part
    for 64 KiB at a time, and from a thread each chunk must win back the GIL from the busy
    consuming loop (a switch interval, 5 ms, per chunk): a 49 MiB upload took 0.3-0.5 s while
    consuming instead of ~0.1 s. Eight 8 MiB ``sendall`` calls each run without the GIL.
    (httpx only iterates what ``read`` returns; the length still comes from ``fstat``.)"""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return super().read()
        return super().read(max(size, UPLOAD_CHUNK))


def _upload(client: OpenAI, path: Path) -> str:
    with _LargeReads(path) as f:
        return client.files.create(file=(path.name, f, "application/jsonl"), purpose="batch").id
