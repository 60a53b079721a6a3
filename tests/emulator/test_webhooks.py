"""The emulator's webhooks (devtools/emulator/webhooks.py): each OpenAI batch that ends is
announced once with a signed ``batch.<status>`` event the official SDK's
``client.webhooks.unwrap`` accepts; a non-2xx answer is retried on the configured schedule
with the same ``webhook-id``; dropped events and Azure batches send nothing; retrieve calls
are counted in ``/_emulator/stats``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from openai import OpenAI

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.webhooks import new_secret
from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.ops_http import serve_in_background
from tests.emulator.helpers import aclient, await_batch, azure_aclient, chat_file, chat_line, jsonl

SECRET = new_secret()
FAST_RETRIES = [0.0, 0.2, 0.2]


@dataclass
class Receiver:
    """A webhook endpoint that verifies with the SDK and fails the first ``fail`` attempts."""

    url: str
    fail: int = 0
    deliveries: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    attempts: int = 0


@contextlib.asynccontextmanager
async def receiver(fail: int = 0) -> AsyncIterator[Receiver]:
    port = free_port()
    got = Receiver(f"http://127.0.0.1:{port}/hook", fail)
    sdk = OpenAI(api_key="unused", webhook_secret=SECRET)
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        got.attempts += 1
        body = await request.body()
        event = sdk.webhooks.unwrap(body, dict(request.headers))  # raises if not signed well
        if got.attempts <= got.fail:
            return Response(status_code=500)
        got.deliveries.append((dict(request.headers), event))
        return Response(status_code=204)

    server, task = await serve_in_background(app, "127.0.0.1", port)
    try:
        yield got
    finally:
        server.should_exit = True
        await task
        sdk.close()


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def run_batch(emulator: Any, *, cancel: bool = False) -> str:
    c = aclient(emulator)
    uploaded = await c.files.create(file=("in.jsonl", io.BytesIO(chat_file(3))), purpose="batch")
    batch = await c.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    if cancel:
        await c.batches.cancel(batch.id)
    await await_batch(c, batch.id)
    await c.close()
    return batch.id


async def test_each_ending_is_announced_once_signed_as_the_sdk_expects(
    emulator_factory: Any,
) -> None:
    async with receiver() as got:
        emulator = emulator_factory(
            webhook_url=got.url, webhook_secret=SECRET, webhook_retry_delays=FAST_RETRIES
        )
        done = await run_batch(emulator)
        cancelled = await run_batch(emulator, cancel=True)
        emulator.set_faults(validation_failure_rate=1.0)
        failed = await run_batch(emulator)
        await until(lambda: len(got.deliveries) == 3)
        await asyncio.sleep(0.3)
        events = {event.data.id: event for _, event in got.deliveries}
        assert {b: e.type for b, e in events.items()} == {
            done: "batch.completed",
            cancelled: "batch.cancelled",
            failed: "batch.failed",
        }
        assert all(e.object == "event" and e.id.startswith("evt_") for e in events.values())
        assert len({h["webhook-id"] for h, _ in got.deliveries}) == 3
        stats = emulator.stats()
        assert stats["webhooks"] | {"pending": 0} == {
            "events": 3,
            "attempts": 3,
            "delivered": 3,
            "failed_attempts": 0,
            "dropped": 0,
            "exhausted": 0,
            "pending": 0,
        }
        assert stats["calls"]["openai.batches.retrieve"] >= 3
        ended = emulator.ended_at(done)
        assert ended is not None and abs(ended - time.time()) < 30


async def test_forced_expiry_is_announced(emulator_factory: Any) -> None:
    async with receiver() as got:
        emulator = emulator_factory(
            webhook_url=got.url,
            webhook_secret=SECRET,
            webhook_retry_delays=FAST_RETRIES,
            force_expire=1.0,
        )
        expired = await run_batch(emulator)
        await until(lambda: len(got.deliveries) == 1)
        assert got.deliveries[0][1].type == "batch.expired"
        assert got.deliveries[0][1].data.id == expired


async def test_a_failed_delivery_is_retried_with_the_same_id_then_given_up(
    emulator_factory: Any,
) -> None:
    async with receiver(fail=1) as got:
        emulator = emulator_factory(
            webhook_url=got.url, webhook_secret=SECRET, webhook_retry_delays=FAST_RETRIES
        )
        await run_batch(emulator)
        await until(lambda: len(got.deliveries) == 1)
        assert got.attempts == 2
        assert emulator.stats()["webhooks"]["failed_attempts"] == 1
    async with receiver(fail=100) as never:
        emulator = emulator_factory(
            webhook_url=never.url, webhook_secret=SECRET, webhook_retry_delays=FAST_RETRIES
        )
        await run_batch(emulator)
        await until(lambda: emulator.stats()["webhooks"]["exhausted"] == 1)
        assert never.attempts == len(FAST_RETRIES) and never.deliveries == []


async def test_dropped_events_and_azure_batches_send_nothing(emulator_factory: Any) -> None:
    async with receiver() as got:
        emulator = emulator_factory(
            webhook_url=got.url,
            webhook_secret=SECRET,
            webhook_retry_delays=FAST_RETRIES,
            webhook_drop_rate=1.0,
        )
        await run_batch(emulator)
        azure = azure_aclient(emulator)
        lines = [
            chat_line(f"az-{i}", model="gpt-4o-batch", url="/chat/completions") for i in (1, 2)
        ]
        uploaded = await azure.files.create(
            file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch"
        )
        emulator.set_faults(webhook_drop_rate=0.0)
        batch = await azure.batches.create(
            input_file_id=uploaded.id,
            endpoint="/chat/completions",  # type: ignore[arg-type]
            completion_window="24h",
        )
        for _ in range(200):
            if (await azure.batches.retrieve(batch.id)).status == "completed":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert got.attempts == 0
        stats = emulator.stats()
        assert stats["webhooks"]["events"] == 1 and stats["webhooks"]["dropped"] == 1
        assert stats["calls"]["azure.batches.retrieve"] >= 1


def test_a_webhook_url_needs_a_secret_in_whsec_form() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        EmulatorConfig(webhook_url="http://127.0.0.1:1/hook")
    with pytest.raises(ValueError, match="whsec_"):
        EmulatorConfig(webhook_url="http://127.0.0.1:1/hook", webhook_secret="plain")
    assert EmulatorConfig(webhook_retry_delays="0, 1,2").webhook_retry_delays == [0.0, 1.0, 2.0]


async def test_the_cli_takes_the_webhook_options_from_its_environment() -> None:
    import os
    import re
    import subprocess
    import sys

    from openai import AsyncOpenAI

    async with receiver() as got:
        env = os.environ | {
            "BATCHPIPE_EMULATOR_WEBHOOK_URL": got.url,
            "BATCHPIPE_EMULATOR_WEBHOOK_SECRET": SECRET,
            "BATCHPIPE_EMULATOR_PROCESSING_SECONDS": "0.2",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchpipe.devtools.emulator", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            match = re.search(r"OPENAI_BASE_URL=(http://\S+/v1)", line)
            assert match, line
            hooks = await asyncio.to_thread(proc.stdout.readline)
            assert got.url in hooks and SECRET not in hooks  # a given secret is not printed
            c = AsyncOpenAI(base_url=match.group(1), api_key="sk-cli")
            uploaded = await c.files.create(
                file=("in.jsonl", io.BytesIO(chat_file(2))), purpose="batch"
            )
            batch = await c.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            await until(lambda: len(got.deliveries) == 1, timeout=20)
            assert got.deliveries[0][1].data.id == batch.id
            await c.close()
        finally:
            proc.kill()
            proc.wait()
