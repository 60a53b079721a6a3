"""Test fixtures: one real Kafka broker per session, fresh topics per test, client factories.

- ``kafka_bootstrap``: a real KRaft broker started for the session (``devtools.local_kafka``),
  or ``BATCHPIPE_TEST_KAFKA_BOOTSTRAP`` if set. Always stopped at the end.
- ``settings``: a ``Settings`` pointing at that broker with fresh uuid topic names, every
  topic of the registry created before the test (FastStream's ``queue`` fixture habit).
- ``producer_factory`` / ``consumer_factory``: started aiokafka clients built by the shared
  helpers, stopped after the test (Quix Streams' fixture-factory habit).
Tests that use the broker are marked ``kafka`` automatically; ``-m "not kafka"`` skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from batchpipe.devtools.local_kafka import LocalKafka, running_kafka
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer
from batchpipe.shared.settings import Settings

pytest_plugins = ["tests.fixtures_emulator"]

KAFKA_FIXTURES = {"kafka_bootstrap", "kafka_broker", "settings"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    if os.environ.get("BATCHPIPE_TEST_KAFKA_BOOTSTRAP"):
        yield None
        return
    with running_kafka(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka | None) -> str:
    return os.environ.get("BATCHPIPE_TEST_KAFKA_BOOTSTRAP") or (
        kafka_broker.bootstrap if kafka_broker else ""
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_test_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings for one test: fresh topic names, 3 partitions, the given overrides."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "requests_topic": unique("requests"),
        "batches_topic": unique("batches"),
        "results_topic": unique("results"),
        "dead_letters_topic": unique("dead-letters"),
        "poller_state_topic": unique("poller-state"),
        "topic_partitions": 3,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def settings(kafka_bootstrap: str) -> Settings:
    """Settings with fresh topics (all of ``topic_specs``) that exist on the broker."""
    test_settings = make_test_settings(kafka_bootstrap)
    await ensure_topics(test_settings)
    return test_settings


ProducerFactory = Callable[..., Awaitable[AIOKafkaProducer]]
ConsumerFactory = Callable[..., Awaitable[AIOKafkaConsumer]]


@pytest.fixture
async def producer_factory(settings: Settings) -> AsyncIterator[ProducerFactory]:
    started: list[AIOKafkaProducer] = []

    async def factory(**kwargs: Any) -> AIOKafkaProducer:
        producer = make_producer(settings, **kwargs)
        await producer.start()
        started.append(producer)
        return producer

    yield factory
    for producer in started:
        await producer.stop()


@pytest.fixture
async def consumer_factory(settings: Settings) -> AsyncIterator[ConsumerFactory]:
    started: list[AIOKafkaConsumer] = []

    async def factory(*topics: str, group_id: str | None = None, **kwargs: Any) -> AIOKafkaConsumer:
        consumer = make_consumer(settings, *topics, group_id=group_id, **kwargs)
        await consumer.start()
        started.append(consumer)
        return consumer

    yield factory
    for consumer in started:
        await consumer.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
