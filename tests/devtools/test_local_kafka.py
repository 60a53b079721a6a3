"""The project's own broker: configuration, restart on the same data, ``batchpipe kafka``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchpipe.devtools.local_kafka import LocalKafka, free_port
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer
from tests.conftest import make_test_settings
from tests.support import drain


def test_server_properties_enable_transactions_on_one_node(tmp_path: Path) -> None:
    props = LocalKafka(data_dir=tmp_path, port=1234, controller_port=1235).server_properties()
    assert "transaction.state.log.replication.factor=1\n" in props
    assert "transaction.state.log.min.isr=1\n" in props
    assert "process.roles=broker,controller\n" in props
    assert "listeners=PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235\n" in props
    assert "auto.create.topics.enable=false\n" in props


@pytest.mark.slow
@pytest.mark.kafka
def test_a_restarted_broker_keeps_its_data(tmp_path: Path) -> None:
    broker = LocalKafka(data_dir=tmp_path / "kafka", port=free_port())
    settings = make_test_settings(broker.bootstrap)

    async def produce() -> None:
        await ensure_topics(settings)
        producer = make_producer(settings, transactional_id="restart-test")
        await producer.start()
        async with producer.transaction():
            await producer.send(settings.results_topic, b"kept", key=b"k")
        await producer.stop()

    async def consume() -> list[bytes]:
        consumer = make_consumer(settings, settings.results_topic, group_id=None)
        await consumer.start()
        try:
            return [r.value for r in await drain(consumer, 1, timeout=30)]
        finally:
            await consumer.stop()

    log = (tmp_path / "broker.log").open("wb")
    try:
        broker.start(stdout=log.fileno())
        broker.wait_ready()
        asyncio.run(produce())
        assert broker.stop(), "the broker did not shut down cleanly on SIGTERM"
        broker.start(stdout=log.fileno())
        broker.wait_ready()
        assert asyncio.run(consume()) == [b"kept"]
    finally:
        broker.stop()
        log.close()


def test_compose_runs_the_same_kafka_version_in_kraft_mode() -> None:
    import yaml

    from batchpipe.devtools.local_kafka import KAFKA_VERSION

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
    assert "kafka-data" in compose["volumes"]


def test_cluster_id_never_starts_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage tool reads "-..." as an option: such ids must be skipped (and replaced)."""
    import uuid

    from batchpipe.devtools import local_kafka

    dashed = uuid.UUID(bytes=b"\xfb" + bytes(15))  # base64url "-w..."
    plain = uuid.UUID(bytes=bytes(16))
    draws = iter([dashed, plain])
    monkeypatch.setattr("batchpipe.devtools.local_kafka.uuid.uuid4", lambda: next(draws))
    (tmp_path / "cluster.id").write_text("-wAAAAAAAAAAAAAAAAAAAA")  # left by an older version
    assert local_kafka._cluster_id(tmp_path) == "AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kafka_command_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(  # the CLI as a user runs it
        [
            sys.executable,
            "-m",
            "batchpipe.services.cli",
            "kafka",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "k"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "ready on" in line:
                break
        else:
            raise AssertionError("broker never became ready")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
