"""A real multi-node Apache Kafka (KRaft) cluster on one machine, one process per node.

Role: the replicated cluster the reliability suite and ``batchpipe kafka --brokers N`` run, so
that a leader can die, a broker can roll, and the guarantees are measured where users run them.

Each node is a ``LocalKafka`` (combined broker+controller) with a data directory of its own
under ``data_dir/node-<id>``; all of them vote in one controller quorum, so any one can be
killed (``kill``) and restarted (``start_node``) alone while the other two keep a majority.
The ports and the cluster id are chosen once and kept in ``data_dir/cluster.json``, so a
restarted cluster reuses its data with the same addresses; ``node-<id>.log`` holds a node's
output and ``node-<id>.pid`` its process id.

Invariant: every node of a cluster shares ``cluster_id``, ``voters`` and ``replication`` (the
cluster's size), which sets the replication of Kafka's internal topics; the replication of
batchpipe's own topics comes from the settings (``topic_replication_factor``,
``topic_min_insync_replicas``) that ``settings_env`` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchpipe.devtools.kafka_security import ADMIN, BrokerSecurity, load_settings_from
from batchpipe.devtools.local_kafka import KafkaSetupError, LocalKafka, _cluster_id, free_port
from batchpipe.shared.settings import Settings


@dataclass
class LocalCluster:
    """``size`` KRaft nodes on 127.0.0.1, client ports ``port``, ``port + 1``, ... (0: free)."""

    data_dir: Path
    size: int = 3
    port: int = 0
    heap: str = "256m"
    security: BrokerSecurity | None = None
    log_level: str = "WARN"
    nodes: list[LocalKafka] = field(default_factory=list)
    _logs: dict[int, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise KafkaSetupError("a cluster needs at least one broker")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        layout = self._layout()
        voters = ",".join(f"{n['id']}@127.0.0.1:{n['controller_port']}" for n in layout)
        cluster_id = _cluster_id(self.data_dir)
        self.nodes = [
            LocalKafka(
                data_dir=self.data_dir / f"node-{n['id']}",
                port=n["port"],
                controller_port=n["controller_port"],
                node_id=n["id"],
                voters=voters,
                cluster_id=cluster_id,
                replication=min(3, self.size),
                heap=self.heap,
                log_level=self.log_level,
                security=self.security,
            )
            for n in layout
        ]

    def _layout(self) -> list[dict[str, int]]:
        """Node ids and ports, chosen on first start and kept for restarts."""
        path = self.data_dir / "cluster.json"
        if path.exists():
            kept: list[dict[str, int]] = json.loads(path.read_text())
            if len(kept) == self.size and (self.port == 0 or kept[0]["port"] == self.port):
                return kept
            raise KafkaSetupError(
                f"{self.data_dir} holds a {len(kept)}-broker cluster on port {kept[0]['port']}; "
                "use another --data-dir for a different shape"
            )
        layout = [
            {
                "id": i + 1,
                "port": self.port + i if self.port else free_port(),
                "controller_port": free_port(),
            }
            for i in range(self.size)
        ]
        path.write_text(json.dumps(layout))
        return layout

    @property
    def bootstrap(self) -> str:
        """The comma-separated bootstrap list of every node."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def log_path(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}.log"

    def start_node(self, node_id: int) -> None:
        """Start one node (non-blocking), its output appended to ``node-<id>.log`` and its
        process id written to ``node-<id>.pid`` (so a user can ``kill -9`` one broker)."""
        node = self.node(node_id)
        with self.log_path(node_id).open("ab") as log:
            node.start(stdout=log.fileno())
        assert node.process is not None
        (self.data_dir / f"node-{node_id}.pid").write_text(f"{node.process.pid}\n")

    def start(self) -> None:
        """Start every node (non-blocking); use ``wait_ready`` next."""
        for node in self.nodes:
            self.start_node(node.node_id)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until every node accepts connections and the cluster answers metadata with
        all its brokers registered; return the seconds waited."""
        started = time.monotonic()
        for node in self.nodes:
            node.wait_ready(max(1.0, timeout - (time.monotonic() - started)))
        remaining = max(1.0, timeout - (time.monotonic() - started))
        asyncio.run(self._wait_registered(remaining))
        return time.monotonic() - started

    async def _wait_registered(self, seconds: float) -> None:
        from batchpipe.devtools.kafka_admin import broker_ids

        deadline = time.monotonic() + seconds
        wanted = {node.node_id for node in self.nodes if node.alive}
        seen: set[int] = set()
        settings = self.admin_settings()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = await broker_ids(settings)
                if wanted <= seen:
                    return
            await asyncio.sleep(0.3)
        raise KafkaSetupError(f"brokers {sorted(wanted - seen)} did not register in {seconds:.0f}s")

    def stop_node(self, node_id: int) -> bool:
        return self.node(node_id).stop()

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, like ``kill -9``."""
        self.node(node_id).kill()

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM every node at once (a quorum shuts down together), SIGKILL what is still
        running after ``timeout``; True if every running node exited cleanly."""
        running = [node.process for node in self.nodes if node.alive and node.process]
        for proc in running:
            proc.terminate()
        clean = True
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                clean = False
                continue
            clean = clean and code in (0, 128 + signal.SIGTERM)
        return clean

    def admin_settings(self) -> Settings:
        """Settings that reach the cluster as its administrator (a super user when secured)."""
        env = self.security.client_env(ADMIN) if self.security else {}
        return load_settings_from(env, kafka_bootstrap_servers=self.bootstrap)


@contextlib.contextmanager
def running_cluster(
    data_dir: Path,
    *,
    size: int = 3,
    heap: str = "256m",
    security: BrokerSecurity | None = None,
    ready_timeout: float = 180.0,
) -> Iterator[LocalCluster]:
    """A started, ready cluster on free ports for the block (tests, chaos); stopped after."""
    cluster = LocalCluster(data_dir=data_dir, size=size, heap=heap, security=security)
    try:
        cluster.start()
        cluster.wait_ready(ready_timeout)
        yield cluster
    finally:
        cluster.stop()
