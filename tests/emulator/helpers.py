"""Helpers for the emulator tests: build JSONL request files, upload them, wait for batches."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI
from openai.types import Batch

from batchpipe.devtools.emulator.runner import RunningEmulator

ENDED = {"completed", "failed", "expired", "cancelled"}


def client(emulator: RunningEmulator, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=emulator.base_url, api_key=emulator.api_key, **kwargs)


def aclient(emulator: RunningEmulator, **kwargs: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emulator.base_url, api_key=emulator.api_key, **kwargs)


def azure_client(emulator: RunningEmulator, **kwargs: Any) -> AzureOpenAI:
    options: dict[str, Any] = {"api_key": emulator.api_key, "api_version": emulator.api_version}
    return AzureOpenAI(azure_endpoint=emulator.azure_endpoint, **(options | kwargs))


def azure_aclient(emulator: RunningEmulator, **kwargs: Any) -> AsyncAzureOpenAI:
    options: dict[str, Any] = {"api_key": emulator.api_key, "api_version": emulator.api_version}
    return AsyncAzureOpenAI(azure_endpoint=emulator.azure_endpoint, **(options | kwargs))


def chat_line(
    custom_id: str,
    text: str = "hello",
    model: str = "gpt-4o-mini",
    url: str = "/v1/chat/completions",
    **body: Any,
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def chat_file(n: int, prefix: str = "req") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}", f"question number {i}") for i in range(n)])


def upload(c: OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return c.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def create(c: OpenAI, file_id: str, endpoint: str = "/v1/chat/completions", **kwargs: Any) -> Batch:
    return c.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **kwargs,
    )


def wait(c: OpenAI, batch_id: str, timeout: float = 20, statuses: set[str] = ENDED) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s")
        time.sleep(0.05)


async def await_batch(
    c: AsyncOpenAI, batch_id: str, timeout: float = 20, statuses: set[str] = ENDED
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = await c.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s")
        await asyncio.sleep(0.05)


def read_jsonl(c: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines() if line]
