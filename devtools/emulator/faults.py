"""Request-level fault injection: 429 with Retry-After on create/upload, 529 (Anthropic's
overloaded) on create, 5xx on retrieve, latency.

Each kind of fault draws from its own generator seeded from the emulator's seed, so the
sequence of injected faults is reproducible. ``counts`` tells tests how often each fired.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.determinism import digest
from batchpipe.devtools.emulator.errors import overloaded, rate_limited, server_error


class FaultInjector:
    def __init__(self, config: EmulatorConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self._rngs: dict[str, random.Random] = {}

    def _draw(self, kind: str) -> float:
        rng = self._rngs.get(kind)
        if rng is None:
            rng = self._rngs[kind] = random.Random(digest(self.seed, "fault", kind))
        return rng.random()

    def _fires(self, kind: str, rate: float) -> bool:
        if rate <= 0:
            return False
        if self._draw(kind) < rate:
            self.counts[kind] += 1
            return True
        return False

    async def slow(self) -> None:
        if self.config.slow_seconds > 0:
            await asyncio.sleep(self.config.slow_seconds)

    def check_create(self) -> None:
        if self._fires("create_429", self.config.create_429_rate):
            raise rate_limited(self.config.retry_after_seconds)

    def check_overloaded(self) -> None:
        """Anthropic's create: 529 ``overloaded_error`` at ``create_529_rate``."""
        if self._fires("create_529", self.config.create_529_rate):
            raise overloaded()

    def check_upload(self) -> None:
        if self._fires("upload_429", self.config.upload_429_rate):
            raise rate_limited(self.config.retry_after_seconds)

    def check_retrieve(self) -> None:
        if self._fires("retrieve_5xx", self.config.retrieve_5xx_rate):
            raise server_error()
