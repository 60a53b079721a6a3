"""Helpers for the dispatcher's integration tests: run workers as processes, feed requests,
read batch records back and check every request is in exactly one batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.contracts import BatchRecord, attempt_headers, decode, key_bytes
from batchpipe.shared.providers.input_store import InputRef, InputStore
from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import Settings, settings_env

BATCHPIPE = str(Path(sys.executable).with_name("batchpipe"))


def request(custom_id: str, model: str = "gpt-4o-mini", pad: int = 0, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"hello {custom_id}" + "x" * pad}],
        "max_tokens": 5,
    }
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    line.update(extra)
    return orjson.dumps(line)


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    values: Iterable[tuple[str, bytes]],
    *,
    attempt: int = 0,
    partition: int | None = None,
) -> None:
    futures = [
        await producer.send(
            topic,
            value,
            key=key_bytes(key),
            headers=attempt_headers(attempt),
            partition=partition,
        )
        for key, value in values
    ]
    await asyncio.gather(*futures)


class Worker:
    """One ``batchpipe dispatcher`` process."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.web_port = free_port()
        full = {**os.environ, **settings_env(settings), **env}
        full["BATCHPIPE_DISPATCHER_WEB_PORT"] = str(self.web_port)
        full.setdefault("BATCHPIPE_LOG_FORMAT", "console")
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [BATCHPIPE, "dispatcher"], env=full, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def metrics_text(worker: Worker) -> str:
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5)
        return response.text


def dispatcher_settings(base: Settings, emulator: Any, **overrides: Any) -> Settings:
    values = base.model_dump()
    values.update(
        openai_base_url=emulator.base_url,
        openai_api_key=emulator.api_key,
        anthropic_base_url=emulator.anthropic_base_url,
        anthropic_api_key=emulator.api_key or "sk-emulator",
        dispatcher_group_id=f"dispatcher-{base.requests_topic}",
        openai_max_retries=2,
        dispatcher_session_timeout_seconds=6.0,
        log_level="INFO",
    )
    values.update(overrides)
    return Settings(**values)


async def read_batches(consumer: Any, timeout: float, *, until: Any) -> list[BatchRecord]:
    """Read batch records until ``until(records)`` is true (or fail after ``timeout``)."""
    records: list[BatchRecord] = []
    deadline = time.monotonic() + timeout
    while not until(records):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out with {len(records)} batch records: {records}")
        got = await consumer.getmany(timeout_ms=500)
        for part in got.values():
            records.extend(decode(BatchRecord, r.value) for r in part)
    return records


async def custom_ids_of(settings: Settings, records: Iterable[BatchRecord]) -> list[str]:
    """Every custom_id in the input files of these batches (one per line, with repeats); an
    Anthropic batch's input is read back from the input store."""
    client = make_openai(settings)
    store = InputStore(settings)
    ids: list[str] = []
    try:
        for record in {r.batch_id: r for r in records}.values():
            assert record.input_file_id is not None
            if record.provider == "anthropic":
                ref = InputRef.parse(record.input_file_id)
                ids += [orjson.loads(line)["custom_id"] async for line in store.read(ref)]
                continue
            content = await client.files.content(record.input_file_id)
            for line in content.content.splitlines():
                if line.strip():
                    ids.append(orjson.loads(line)["custom_id"])
    finally:
        await client.close()
        await store.close()
    return ids


async def committed_offsets(settings: Settings, group_id: str) -> dict[int, int]:
    """The group's committed offset of each requests partition (missing = nothing committed)."""
    from batchpipe.shared.kafka import make_admin

    admin = make_admin(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == settings.requests_topic and meta.offset >= 0
    }


async def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def unique(records: list[BatchRecord]) -> list[BatchRecord]:
    """Batch records by batch id (a record re-published after a crash counts once)."""
    return list({r.batch_id: r for r in records}.values())


def total(records: list[BatchRecord]) -> int:
    return sum(r.request_count for r in unique(records))


async def assert_exactly_once(
    s: Settings, emulator: Any, records: list[BatchRecord], ids: list[str]
) -> None:
    """Every request in exactly one batch (read from the batch input files), no other batch."""
    got = await custom_ids_of(s, records)
    assert Counter(got) == Counter(ids), "every request in exactly one batch"
    assert total(records) == len(ids)
    stats = emulator.stats()
    assert stats["duplicate_custom_ids"] == 0
    assert stats["batches_created"] == len(unique(records)), "a created batch was not published"
