"""Fixtures of the ingest tests: a running app (lifespan included) behind an httpx client,
and a look at how many records the requests topic holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka.structs import TopicPartition
from fastapi import FastAPI

from batchpipe.services.ingest.app import create_app
from batchpipe.shared.kafka import make_consumer
from batchpipe.shared.settings import Settings

SEED_CURL_BODY = b"""{
        "data": [
            [
                {
                    "role": "user",
                    "content": "How can I learn Python?"
                }
            ],
            [
                {
                    "role": "user",
                    "content": "Who is the first president of the United States?"
                }
            ]
        ]
   }"""
SEED_HEADERS = {"accept": "application/json", "Content-Type": "application/json"}


@asynccontextmanager
async def running(
    settings: Settings, **app_kwargs: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan entered, and a client talking to it in-process."""
    app = create_app(settings, **app_kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield app, client


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The ingest app on the test's fresh topics, connected to the real broker."""
    async with running(settings) as (app, client):
        assert app.state.publisher.connected
        yield app, client


EndOffsets = Callable[[Settings], Awaitable[int]]


@pytest.fixture
def topic_size() -> EndOffsets:
    """Total records on a settings' requests topic (sum of end offsets)."""

    async def size(settings: Settings) -> int:
        consumer = make_consumer(settings, group_id=None)
        await consumer.start()
        try:
            parts = [
                TopicPartition(settings.requests_topic, p) for p in range(settings.topic_partitions)
            ]
            ends = await consumer.end_offsets(parts)
            return int(sum(ends.values()))
        finally:
            await consumer.stop()

    return size
