"""How long the dispatcher waits before trying a failed step again.

Every loop in the dispatcher that retries (a Kafka write, a fetch, a ledger read-back, a token
budget check, a dispatch that hit an unexpected error) waits ``Backoff.delay(attempt)``:
exponential from ``base`` seconds, capped at ``cap``. The loops never give up: the worker
waits (and stops consuming, so memory stays bounded) rather than lose or skip work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt + 1``."""
        return float(min(self.cap, self.base * 2.0**attempt))

    async def sleep(self, attempt: int) -> None:
        await asyncio.sleep(self.delay(attempt))
