"""The local replicated cluster: one quorum of processes, replication decided by settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from batchpipe.devtools.kafka_cluster import LocalCluster
from batchpipe.devtools.kafka_provision import cluster_env
from batchpipe.devtools.kafka_security import load_settings_from
from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.kafka import ensure_topics, make_admin, make_producer
from batchpipe.shared.topics import topic_specs
from tests.conftest import make_test_settings


def props_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_every_node_votes_in_one_quorum_and_internal_topics_are_replicated(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path, size=3, port=19092)
    nodes = [props_of(node.server_properties()) for node in cluster.nodes]
    assert [n["node.id"] for n in nodes] == ["1", "2", "3"]
    assert [n["listeners"].split(",")[0] for n in nodes] == [
        "PLAINTEXT://127.0.0.1:19092",
        "PLAINTEXT://127.0.0.1:19093",
        "PLAINTEXT://127.0.0.1:19094",
    ]
    voters = {n["controller.quorum.voters"] for n in nodes}
    assert len(voters) == 1 and voters.pop().count("@") == 3
    for node in nodes:
        assert node["offsets.topic.replication.factor"] == "3"
        assert node["transaction.state.log.replication.factor"] == "3"
        assert node["transaction.state.log.min.isr"] == "2"
    assert {n.cluster_id for n in cluster.nodes} == {cluster.nodes[0].cluster_id}
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    # The layout is kept: the same data directory gives the same ports again.
    again = LocalCluster(tmp_path, size=3, port=19092)
    assert [n.controller_port for n in again.nodes] == [n.controller_port for n in cluster.nodes]


def test_replication_comes_from_the_settings_a_cluster_prints(tmp_path: Path) -> None:
    env = cluster_env(LocalCluster(tmp_path, size=3, port=19092))
    settings = load_settings_from(env)
    for spec in topic_specs(settings):
        assert spec.replication_factor == 3
        assert spec.config["min.insync.replicas"] == "2"
    single = load_settings_from(cluster_env(LocalCluster(tmp_path / "one", size=1, port=19092)))
    assert all("min.insync.replicas" not in s.config for s in topic_specs(single))
    assert all(s.replication_factor == 1 for s in topic_specs(single))


async def until_ok(step: Callable[[], Awaitable[None]], seconds: float = 60.0) -> None:
    """Run ``step`` until it passes: right after a kill, clients may still dial the dead
    broker until their metadata says it is gone."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await step()
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


def exports(lines: list[str]) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(240)
def test_kafka_brokers_3_survives_one_broker_killed(tmp_path: Path) -> None:
    """`batchpipe kafka --brokers 3` prints its bootstrap list and settings; topics made from
    them have 3 replicas and min.insync.replicas=2, and acks=all writes go on with one broker
    killed -9 alone."""
    data = tmp_path / "k"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "batchpipe.services.cli", "kafka", "--brokers", "3"),
            *("--port", str(free_port()), "--heap", "256m", "--data-dir", str(data)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BATCHPIPE_")},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        if not all(lines):  # it exited: say why
            proc.wait(30)
            pytest.fail(f"batchpipe kafka exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        env = exports(lines)
        assert len(env["BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS"].split(",")) == 3
        assert (data / "client.env").read_text().splitlines() == lines
        settings = make_test_settings(
            env["BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS"],
            topic_replication_factor=int(env["BATCHPIPE_TOPIC_REPLICATION_FACTOR"]),
            topic_min_insync_replicas=int(env["BATCHPIPE_TOPIC_MIN_INSYNC_REPLICAS"]),
        )

        async def check() -> None:
            await ensure_topics(settings)
            admin = make_admin(settings)
            await admin.start()
            try:
                [described] = await admin.describe_topics([settings.requests_topic])
                assert {len(p["replicas"]) for p in described["partitions"]} == {3}
                [config] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, settings.requests_topic)]
                )
                values = {c[0]: c[1] for c in config.resources[0][4]}
                assert values["min.insync.replicas"] == "2"
            finally:
                await admin.close()
            producer = make_producer(settings, request_timeout_ms=20_000)
            await producer.start()
            try:
                for i in range(20):
                    await (await producer.send(settings.requests_topic, b"v", key=str(i).encode()))
            finally:
                await producer.stop()

        asyncio.run(check())
        pid = int((data / "node-2.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        asyncio.run(until_ok(check))  # two of three in sync: acks=all still succeeds
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
