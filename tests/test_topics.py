"""shared/topics.py: one registry of every topic, used by ``batchpipe topics`` and the services."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from batchpipe.services.cli import app
from batchpipe.services.dispatcher.ledger import Ledger
from batchpipe.services.poller.app import Poller
from batchpipe.shared.kafka import ensure_topics, make_admin
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import (
    LEDGER_MAX_MESSAGE_BYTES,
    MAX_REQUEST_SIZE,
    TopicSpec,
    dispatcher_ledger_spec,
    poller_state_spec,
    topic_specs,
)
from tests.conftest import make_test_settings


@dataclass(frozen=True)
class Described:
    partitions: int
    config: dict[str, str]


async def describe(settings: Settings, specs: list[TopicSpec]) -> dict[str, Described]:
    """Partition count and the configs the specs set, as the broker reports them."""
    names = [spec.name for spec in specs]
    admin = make_admin(settings)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in topics}
    configs: dict[str, dict[str, str]] = {}
    for error_code, _message, _type, name, entries in response.resources:
        assert error_code == 0, (name, error_code)
        configs[name] = {entry[0]: entry[1] for entry in entries}
    wanted = {spec.name: set(spec.config) for spec in specs}
    return {
        name: Described(
            partitions[name], {k: v for k, v in configs[name].items() if k in wanted[name]}
        )
        for name in names
    }


def expected(specs: list[TopicSpec]) -> dict[str, Described]:
    return {spec.name: Described(spec.partitions, dict(spec.config)) for spec in specs}


def test_the_registry_lists_all_eight_topics_with_their_settings() -> None:
    s = Settings(
        requests_topic="rq",
        batches_topic="bt",
        results_topic="rs",
        dead_letters_topic="dl",
        poller_state_topic="ps",
        topic_partitions=4,
        topic_replication_factor=3,
    )
    big = {"max.message.bytes": str(MAX_REQUEST_SIZE + 1024 * 1024)}
    assert topic_specs(s) == [
        TopicSpec("rq", 4, 3, big),
        TopicSpec(
            "rq.dispatch-ledger",
            1,
            3,
            {"cleanup.policy": "compact", "max.message.bytes": str(LEDGER_MAX_MESSAGE_BYTES)},
        ),
        TopicSpec("bt", 4, 3, {}),
        TopicSpec("ps", 4, 3, {"cleanup.policy": "compact"}),
        TopicSpec("rs", 4, 3, {"max.message.bytes": str(1024 * 1024)}),
        TopicSpec("dl", 4, 3, big),
        TopicSpec("rq.batch-inputs", 4, 3, {"retention.ms": str(31 * 24 * 3600 * 1000), **big}),
        TopicSpec("bt.nudges", 4, 3, {"retention.ms": str(24 * 3600 * 1000)}),
    ]
    assert dispatcher_ledger_spec(s) in topic_specs(s)
    small = s.model_copy(update={"results_max_message_bytes": 65536})
    assert TopicSpec("rs", 4, 3, {"max.message.bytes": "65536"}) in topic_specs(small)
    assert poller_state_spec(s) in topic_specs(s)
    named = s.model_copy(update={"dispatcher_ledger_topic": "my-ledger"})
    assert dispatcher_ledger_spec(named).name == "my-ledger"
    assert [t.name for t in topic_specs(named)].count("my-ledger") == 1


def test_topics_command_creates_every_topic_with_its_configs(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_test_settings(kafka_bootstrap, topic_partitions=2)
    for name, value in {
        "BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "BATCHPIPE_REQUESTS_TOPIC": settings.requests_topic,
        "BATCHPIPE_BATCHES_TOPIC": settings.batches_topic,
        "BATCHPIPE_RESULTS_TOPIC": settings.results_topic,
        "BATCHPIPE_DEAD_LETTERS_TOPIC": settings.dead_letters_topic,
        "BATCHPIPE_POLLER_STATE_TOPIC": settings.poller_state_topic,
        "BATCHPIPE_TOPIC_PARTITIONS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    specs = topic_specs(settings)
    assert len(specs) == 8

    first = CliRunner().invoke(app, ["topics"])
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [spec.name for spec in specs]
    assert all(": created (" in line for line in lines), first.output
    assert f"{settings.poller_state_topic}: created (2 partitions, cleanup.policy=compact)" in lines
    assert asyncio.run(describe(settings, specs)) == expected(specs)

    second = CliRunner().invoke(app, ["topics"])
    assert second.exit_code == 0, second.output
    assert [line.split(": ")[1].split(" ")[0] for line in second.stdout.splitlines()] == [
        "exists"
    ] * 8


async def test_ensure_topics_creates_the_whole_registry(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap)
    specs = topic_specs(settings)
    assert sorted(await ensure_topics(settings)) == sorted(spec.name for spec in specs)
    assert await describe(settings, specs) == expected(specs)
    assert await ensure_topics(settings) == []


async def test_the_services_ensure_their_topics_as_the_registry_says(
    kafka_bootstrap: str,
) -> None:
    settings = make_test_settings(kafka_bootstrap, openai_api_key="sk-unused")
    own = [dispatcher_ledger_spec(settings), poller_state_spec(settings)]
    assert all(spec in topic_specs(settings) for spec in own)
    await ensure_topics(settings, [spec for spec in topic_specs(settings) if spec not in own])
    ledger = Ledger(settings)
    await ledger.start()
    await ledger.stop()
    poller = Poller(settings)
    poller.stopping.set()  # ensure its topic, subscribe, then stop at once
    await poller.run()
    assert await describe(settings, own) == expected(own)
