"""The enqueued-token budget per model (opt-in: ``BATCHPIPE_DISPATCHER_MAX_ENQUEUED_TOKENS``).

OpenAI caps the tokens an organization may have enqueued per model in batches that have not
ended; a batch created over the cap fails validation with ``token_limit_exceeded`` (the poller
then re-submits its requests: a wasted round trip for a whole window). With a budget set, the
dispatcher avoids that instead of suffering it:

- tokens are estimated from the JSONL size, ``BYTES_PER_TOKEN`` = 4 bytes per token (OpenAI's
  rule of thumb for English text; the JSON around the prompts makes it an over-estimate, the
  safe side);
- windows are cut at the budget's size (``max_window_bytes``), so one window always fits;
- each batch carries its estimate in ``metadata.batchpipe_est_tokens``;
- before uploading a window, ``enqueued_tokens`` adds up the estimates of this model's
  batchpipe batches that have not ended, from ``GET /batches`` (newest first, down to the
  batches older than ``HORIZON_SECONDS``): the listing is the truth every worker shares. The
  window waits, re-checking every ``BATCHPIPE_DISPATCHER_TOKEN_CHECK_SECONDS``, while it would
  not fit; consumption stops meanwhile (the submit queue is full), so memory stays bounded.

Limits: batches created outside batchpipe are not counted (their tokens are unknown), and two
workers checking at the same moment may both submit: the budget is a guard, not a lock.
"""

from __future__ import annotations

import time
from typing import Final

from openai import AsyncOpenAI
from openai.types import Batch

BYTES_PER_TOKEN: Final = 4
TOKENS_KEY: Final = "batchpipe_est_tokens"
MODEL_KEY: Final = "batchpipe_model"
# Statuses in which a batch's tokens count as enqueued.
ENQUEUED: Final = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# A "24h" batch ends within its completion window plus finalizing; older batches have ended.
HORIZON_SECONDS: Final = 26 * 3600


def estimate_tokens(nbytes: int) -> int:
    """Estimated input tokens of a JSONL file of ``nbytes`` bytes (rounded up)."""
    return -(-nbytes // BYTES_PER_TOKEN)


def max_window_bytes(max_tokens: int) -> int:
    """The largest window whose estimate fits in a budget of ``max_tokens``."""
    return max_tokens * BYTES_PER_TOKEN


def model_tag(model: str) -> str:
    """The model as stored in batch metadata (values are limited to 512 characters)."""
    return model[:512]


def tokens_of(batch: Batch, model: str) -> int:
    """Estimated tokens ``batch`` holds enqueued for ``model`` (0 once it ended, for another
    model, or for a batch batchpipe did not create)."""
    if batch.status not in ENQUEUED:
        return 0
    metadata = batch.metadata or {}
    if metadata.get(MODEL_KEY) != model_tag(model):
        return 0
    try:
        return max(0, int(metadata.get(TOKENS_KEY, "0")))
    except ValueError:
        return 0


async def enqueued_tokens(client: AsyncOpenAI, model: str, now: float | None = None) -> int:
    """Estimated tokens enqueued for ``model`` in batchpipe's batches that have not ended."""
    oldest = (time.time() if now is None else now) - HORIZON_SECONDS
    total = 0
    async for batch in client.batches.list(limit=100):
        if batch.created_at < oldest:
            break
        total += tokens_of(batch, model)
    return total
