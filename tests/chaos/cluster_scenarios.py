"""The reliability scenarios on a 3-broker cluster: leaders die, brokers roll, nothing is lost.

Each runs the pipeline on a ``LocalCluster`` (one process per broker, topics with 3 replicas
and ``min.insync.replicas=2``) while requests flow, and counts lost requests, duplicate
submissions and duplicate results like the single-broker scenarios (``scenarios.Row``):

7. kill -9 of the broker leading the busiest ``requests`` partition, restarted later;
8. kill -9 of the broker leading most ``results`` partitions, restarted later;
9. a rolling restart (SIGTERM, start, wait) of all three brokers while traffic flows.

Recovery is the time from each fault to the next result published after it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from aiokafka import TopicPartition

from batchpipe.devtools.kafka_admin import partition_leaders
from batchpipe.devtools.kafka_cluster import LocalCluster
from batchpipe.shared.kafka import make_consumer
from tests.chaos.scenarios import Fault, Row, Run, Size, run_scenario

DOWN_SECONDS = 10.0


def cluster_of(run: Run) -> LocalCluster:
    assert isinstance(run.broker, LocalCluster)
    return run.broker


async def busiest_partition(run: Run, topic: str) -> int:
    """The partition of ``topic`` with the most records so far."""
    consumer = make_consumer(run.pipeline.settings, group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in range(run.pipeline.settings.topic_partitions)
        ]
        ends = await consumer.end_offsets(partitions)
        busiest: int = max(partitions, key=lambda tp: ends[tp]).partition
        return busiest
    finally:
        await consumer.stop()


async def leader_of(run: Run, topic: str, partition: int | None) -> int:
    """The leader of ``partition`` of ``topic``, or of most of its partitions (None)."""
    leaders = await partition_leaders(cluster_of(run).admin_settings(), topic)
    if partition is not None:
        return leaders[partition]
    return Counter(leaders.values()).most_common(1)[0][0]


async def kill_and_restart(run: Run, node_id: int) -> None:
    """kill -9 one broker, keep it down for a while, start it again; measure the recovery."""
    cluster = cluster_of(run)
    moment = time.time()
    cluster.kill(node_id)
    recovery = asyncio.create_task(run.measure_recovery(moment))
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(cluster.start_node, node_id)
    await asyncio.to_thread(cluster.node(node_id).wait_ready, 120)
    await recovery


def kill_leader(topic_of: str) -> Fault:
    async def fault(run: Run) -> None:
        await asyncio.sleep(run.size.load_seconds / 3)
        settings = run.pipeline.settings
        topic = settings.requests_topic if topic_of == "requests" else settings.results_topic
        if topic_of == "requests":
            partition: int | None = await busiest_partition(run, topic)
        else:
            deadline = time.monotonic() + run.size.timeout
            while not run.follower.results and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # results flowing: the kill lands mid-stream
            partition = None
        await kill_and_restart(run, await leader_of(run, topic, partition))

    return fault


def rolling_restart() -> Fault:
    async def fault(run: Run) -> None:
        cluster = cluster_of(run)
        await asyncio.sleep(run.size.load_seconds / 4)
        for node in cluster.nodes:
            moment = time.time()
            await asyncio.to_thread(node.stop)
            await asyncio.to_thread(cluster.start_node, node.node_id)
            await asyncio.to_thread(node.wait_ready, 120)
            await asyncio.to_thread(cluster.wait_ready, 120)  # registered again
            await run.measure_recovery(moment)
            await asyncio.sleep(2.0)  # let its replicas catch up before the next one rolls

    return fault


async def cluster_scenario(number: int, workdir: Path, size: Size) -> Row:
    """Run cluster scenario ``number`` (7 to 9)."""
    if number == 7:
        return await run_scenario(
            "requests leader kill -9 (3 brokers)",
            workdir,
            size,
            fault=kill_leader("requests"),
            via_ingest=True,
            brokers=3,
        )
    if number == 8:
        return await run_scenario(
            "results leader kill -9 (3 brokers)",
            workdir,
            size,
            fault=kill_leader("results"),
            brokers=3,
        )
    if number == 9:
        return await run_scenario(
            "rolling restart (3 brokers)", workdir, size, fault=rolling_restart(), brokers=3
        )
    raise ValueError(f"no cluster scenario {number}")
