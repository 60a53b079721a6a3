"""The enqueued-token budget per model (opt-in: ``BATCHPIPE_DISPATCHER_MAX_ENQUEUED_TOKENS``).

OpenAI caps the tokens an organization may have enqueued per model in batches that have not
ended; a batch created over the cap fails validation with ``token_limit_exceeded`` (the poller
then re-submits its requests: a wasted round trip for a whole window). With a budget set, the
dispatcher avoids that instead of suffering it:

- tokens are estimated from the JSONL size, ``BYTES_PER_TOKEN`` = 4 bytes per token (OpenAI's
  rule of thumb for English text; the JSON around the prompts makes it an over-estimate, the
  safe side);
- windows are cut at the budget's size (``max_window_bytes``), so one window always fits;
- each batch carries its estimate in its tags (OpenAI: ``metadata.batchpipe_est_tokens``);
- before uploading a window, the model's provider adds up the estimates of this model's
  batchpipe batches that have not ended (``BatchProvider.enqueued_tokens``; OpenAI: from
  ``GET /batches``, newest first, down to the batches older than 26 h): what the provider
  says is the truth every worker shares. The
  window waits, re-checking every ``BATCHPIPE_DISPATCHER_TOKEN_CHECK_SECONDS``, while it would
  not fit; consumption stops meanwhile (the submit queue is full), so memory stays bounded.

Limits: batches created outside batchpipe are not counted (their tokens are unknown), and two
workers checking at the same moment may both submit: the budget is a guard, not a lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from batchpipe.services.dispatcher.backoff import Backoff
from batchpipe.services.dispatcher.metrics import Metrics
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.registry import Providers

log = get_logger(__name__)

BYTES_PER_TOKEN: Final = 4


def estimate_tokens(nbytes: int) -> int:
    """Estimated input tokens of a JSONL file of ``nbytes`` bytes (rounded up)."""
    return -(-nbytes // BYTES_PER_TOKEN)


def max_window_bytes(max_tokens: int) -> int:
    """The largest window whose estimate fits in a budget of ``max_tokens``."""
    return max_tokens * BYTES_PER_TOKEN


class TokenBudget:
    """One worker's side of the budget: waits a window until it fits, and counts the windows
    that passed the check but whose batch is not created yet (so not in the listing), which
    the listing cannot show and concurrent dispatches would otherwise miss."""

    def __init__(
        self,
        providers: Providers,
        *,
        budget: int | None,
        check_seconds: float,
        metrics: Metrics,
        backoff: Backoff,
    ) -> None:
        self.providers = providers
        self.budget = budget
        self.check_seconds = check_seconds
        self.metrics = metrics
        self.backoff = backoff
        self._lock = asyncio.Lock()
        # dispatch id -> (model, tokens) of windows past the check, not created yet; and
        # their sum per model
        self._held: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, int] = {}

    async def wait(
        self, dispatch_id: str, model: str, input_bytes: int, aborting: Callable[[], bool]
    ) -> bool:
        """Wait until this window's estimated tokens fit next to the model's batches that
        have not ended and this worker's held windows. True once it fits (at once without a
        budget); False if ``aborting()`` (revocation) turns true meanwhile."""
        budget = self.budget
        if budget is None or dispatch_id in self._held:
            return True
        needed = estimate_tokens(input_bytes)
        provider = self.providers.for_model(model)
        transient = provider.retryable
        enqueued: int | None
        waiting = False
        attempt = 0
        try:
            while not aborting():
                async with self._lock:  # one check at a time: none misses another
                    # read before the listing: a window created meanwhile is then counted
                    # twice (safe), never missed
                    held = self._pending.get(model, 0)
                    try:
                        enqueued = held + await provider.enqueued_tokens(model)
                    except transient as exc:
                        log.warning("dispatch.token_budget_check_failed", error=repr(exc))
                        enqueued = None
                    fits = enqueued is not None and enqueued + needed <= budget
                    if fits:
                        self._held[dispatch_id] = (model, needed)
                        self._pending[model] = self._pending.get(model, 0) + needed
                if enqueued is None:
                    await self.backoff.sleep(attempt)
                    attempt += 1
                    continue
                if fits:
                    if waiting:
                        log.info(
                            "dispatch.token_budget_free",
                            dispatch_id=dispatch_id,
                            enqueued=enqueued,
                            tokens=needed,
                        )
                    return True
                if not waiting:
                    waiting = True
                    self.metrics.token_waits.inc()
                    self.metrics.token_waiting.inc()
                    log.info(
                        "dispatch.token_budget_wait",
                        dispatch_id=dispatch_id,
                        model=model,
                        enqueued=enqueued,
                        tokens=needed,
                        budget=budget,
                    )
                await asyncio.sleep(self.check_seconds)
            return False
        finally:
            if waiting:
                self.metrics.token_waiting.dec()

    def release(self, dispatch_id: str) -> None:
        """The window's batch now exists (it is in the listing) or never will."""
        held = self._held.pop(dispatch_id, None)
        if held is not None:
            model, tokens = held
            self._pending[model] -= tokens
