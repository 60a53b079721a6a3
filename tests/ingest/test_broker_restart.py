"""Broker stopped under a running ingest → 503 with Retry-After (never 202, never 500); broker
back → ingest accepts again by itself, and what it accepted is on the topic."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from batchpipe.devtools.local_kafka import LocalKafka, free_port
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.kafka import ensure_topics, make_consumer
from tests.conftest import make_test_settings
from tests.ingest.conftest import running
from tests.support import drain

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_broker_stopped_then_restarted(tmp_path: Path) -> None:
    broker = LocalKafka(data_dir=tmp_path / "kafka", port=free_port())
    out = (tmp_path / "broker.out").open("wb")
    try:
        await asyncio.to_thread(broker.start, stdout=out.fileno())
        await asyncio.to_thread(broker.wait_ready, 90)
        settings = make_test_settings(broker.bootstrap, ingest_publish_timeout_seconds=2.0)
        await ensure_topics(settings)
        async with running(settings, connect_timeout=2.0) as (app, client):
            before = await client.post("/requests", json={"custom_id": "before", "messages": MSG})
            assert before.status_code == 202, before.text

            assert await asyncio.to_thread(broker.stop)  # a clean stop of the only broker
            started = time.monotonic()
            down = await client.post("/requests", json={"data": [MSG, MSG]})
            assert down.status_code == 503, down.text
            assert int(down.headers["retry-after"]) > 0
            assert time.monotonic() - started < 10
            assert (await client.get("/readyz")).status_code == 503

            await asyncio.to_thread(broker.start, stdout=out.fileno())  # same port and data
            await asyncio.to_thread(broker.wait_ready, 90)
            deadline = time.monotonic() + 90
            while True:  # the producer reconnects by itself; clients retry after Retry-After
                after = await client.post("/requests", json={"custom_id": "after", "messages": MSG})
                if after.status_code == 202 or time.monotonic() > deadline:
                    break
                assert after.status_code == 503, after.text
                await asyncio.sleep(1)
            assert after.status_code == 202, after.text
            assert app.state.publisher.connected

        consumer = make_consumer(settings, settings.requests_topic, group_id=None)
        await consumer.start()
        try:
            records = await drain(consumer, 2, timeout=30, settle=1.0)
        finally:
            await consumer.stop()
        keys = {r.key for r in records}
        assert {b"before", b"after"} <= keys
        assert all(decode(RequestLine, r.value) for r in records)
    finally:
        await asyncio.to_thread(broker.stop)
        out.close()
