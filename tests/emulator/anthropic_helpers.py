"""Helpers for the Anthropic emulator tests: clients, request lists, waiting for batches."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from anthropic import Anthropic, AsyncAnthropic
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from batchpipe.devtools.emulator.runner import RunningEmulator


def claude(emulator: RunningEmulator, **kwargs: Any) -> Anthropic:
    options: dict[str, Any] = {"api_key": emulator.api_key, "max_retries": 0}
    return Anthropic(base_url=emulator.anthropic_base_url, **(options | kwargs))


def aclaude(emulator: RunningEmulator, **kwargs: Any) -> AsyncAnthropic:
    options: dict[str, Any] = {"api_key": emulator.api_key, "max_retries": 0}
    return AsyncAnthropic(base_url=emulator.anthropic_base_url, **(options | kwargs))


def params(text: Any = "hello", model: str = "claude-sonnet-4-5", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def requests(n: int, prefix: str = "req") -> list[Any]:
    """``n`` valid requests (typed loosely: tests also pass envelopes the SDK types refuse)."""
    return [{"custom_id": f"{prefix}-{i}", "params": params(f"question {i}")} for i in range(n)]


def wait_ended(c: Anthropic, batch_id: str, timeout: float = 20, beta: bool = False) -> Any:
    batches = c.beta.messages.batches if beta else c.messages.batches
    deadline = time.monotonic() + timeout
    while True:
        batch = batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"{batch_id} still {batch.processing_status} after {timeout}s")
        time.sleep(0.05)


async def await_ended(
    c: AsyncAnthropic, batch_id: str, timeout: float = 20, beta: bool = False
) -> Any:
    batches = c.beta.messages.batches if beta else c.messages.batches
    deadline = time.monotonic() + timeout
    while True:
        batch = await batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"{batch_id} still {batch.processing_status} after {timeout}s")
        await asyncio.sleep(0.05)


def results(c: Anthropic, batch: MessageBatch) -> dict[str, MessageBatchIndividualResponse]:
    return {line.custom_id: line for line in c.messages.batches.results(batch.id)}
