"""A real Apache Kafka (KRaft) node run as a local process, for development and tests.

Docker does not run on the development machines and no OS package ships Kafka, so the broker's
jars are resolved from Maven Central with ``mvn`` into a cache (or taken from ``KAFKA_HOME``),
storage is formatted on first start, and ``kafka.Kafka`` runs with Java 17 in the foreground.
Data stays in ``data_dir`` across restarts. The Kafka version is pinned here, in one place.

A ``LocalKafka`` is one combined broker+controller process: alone it is a single-node cluster;
``devtools.kafka_cluster`` runs several of them as one quorum (``node_id``, ``voters``,
``cluster_id``, ``replication``), and ``devtools.kafka_security`` gives a node TLS listeners,
SCRAM users and the ACL authorizer (``security``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchpipe.devtools import launch
from batchpipe.devtools.kafka_security import BrokerSecurity

KAFKA_VERSION = "3.9.2"
SCALA_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>batchpipe</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[kafka %d{{ISO8601}}] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
"""


class KafkaSetupError(RuntimeError):
    """The broker could not be fetched, formatted or started; the message says why."""


def default_cache_dir() -> Path:
    base = os.environ.get("BATCHPIPE_KAFKA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "batchpipe"
    )
    return Path(base) / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}"


def kafka_libs(cache_dir: Path | None = None, *, log: Callable[[str], None] = print) -> Path:
    """The directory of the broker's jars: ``$KAFKA_HOME/libs`` or the Maven-resolved cache."""
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise KafkaSetupError(f"KAFKA_HOME={home} has no libs/kafka_*.jar")
        return libs
    cache = cache_dir or default_cache_dir()
    libs = cache / "libs"
    if (cache / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError("Maven (mvn) is not installed and KAFKA_HOME is not set")
    log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {cache} ...")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, slf4j=SLF4J_VERSION))
        staged = Path(tmp) / "libs"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staged}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise KafkaSetupError(f"mvn failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        if libs.exists():
            shutil.rmtree(libs)
        staged.rename(libs)
    (cache / ".complete").write_text(KAFKA_VERSION)
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class LocalKafka:
    """One KRaft broker+controller process listening on 127.0.0.1.

    Defaults make a single-node cluster. In a quorum every node shares ``cluster_id`` and
    ``voters`` (``id@host:port`` of each controller) and ``replication`` is the cluster's size,
    which sets the replication of Kafka's own offsets and transaction topics (and their
    ``min.isr``, one less than that, so one node may be down).
    """

    data_dir: Path
    port: int = 9092
    controller_port: int = 0
    host: str = "127.0.0.1"
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    security: BrokerSecurity | None = None
    heap: str = "512m"
    log_level: str = "WARN"
    auto_create_topics: bool = False
    extra_config: dict[str, str] = field(default_factory=dict)
    # The signal the JVMs get when this process dies (Linux; ``devtools.launch``); None: none.
    # Set it only when the broker is started from the main thread (the signal follows the
    # thread that forked).
    parent_death_signal: signal.Signals | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Where clients connect: ``localhost`` with TLS (the name its certificate carries)."""
        host = self.security.advertised_host if self.security else self.host
        return f"{host}:{self.port}"

    def server_properties(self) -> str:
        replicas = str(self.replication)
        min_isr = str(max(1, self.replication - 1))
        listeners: dict[str, str] = {
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        }
        if self.security is not None:
            listeners = self.security.server_properties(self.host, self.port, self.controller_port)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters
            or f"{self.node_id}@{self.host}:{self.controller_port}",
            **listeners,
            "log.dirs": str(self.data_dir / "log"),
            "num.partitions": "1",
            "default.replication.factor": replicas,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "message.max.bytes": str(8 * 1024 * 1024),
            "replica.fetch.max.bytes": str(8 * 1024 * 1024),
            "log.retention.hours": "168",
            **self.extra_config,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            raise KafkaSetupError("Java 17+ is required to run Kafka (java not found)")
        return java

    def _launched(self, cmd: list[str]) -> list[str]:
        sig = self.parent_death_signal
        return cmd if sig is None else list(launch.command(cmd, sig))

    def _prepare(self, libs: Path) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.controller_port == 0:
            self.controller_port = free_port()
        props = self.data_dir / "server.properties"
        props.write_text(self.server_properties())
        props.chmod(0o600)  # with security it holds the inter-broker password
        log4j = self.data_dir / "log4j.properties"
        log4j.write_text(_LOG4J.format(level=self.log_level))
        base = [
            self._java(),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            f"{libs}/*",
        ]
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = self.cluster_id or _cluster_id(self.data_dir)
            fmt = [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
            fmt.append("--ignore-formatted")
            if self.security is not None:
                fmt += self.security.format_args()
            done = subprocess.run(  # noqa: S603
                self._launched(fmt), capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise KafkaSetupError(f"formatting storage failed:\n{done.stdout}{done.stderr}")
        return [*base, "kafka.Kafka", str(props)]

    def start(self, libs: Path | None = None, *, stdout: int | None = None) -> None:
        """Start the broker process (non-blocking); use ``wait_ready`` next."""
        if _port_open(self.host, self.port):
            raise KafkaSetupError(f"port {self.port} is already in use on {self.host}")
        cmd = self._launched(self._prepare(libs or kafka_libs()))
        self.process = subprocess.Popen(  # noqa: S603
            cmd, stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the broker accepts connections; return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaSetupError(f"Kafka exited with code {self.process.returncode}")
            if _port_open(self.host, self.port):
                return time.monotonic() - started
            time.sleep(0.1)
        raise KafkaSetupError(f"Kafka did not open {self.bootstrap} within {timeout:.0f}s")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (a clean, flushed shutdown), SIGKILL if it takes longer than ``timeout``.

        Returns True if the broker shut down by itself (the JVM exits 143 after its shutdown
        hooks ran on SIGTERM), False if it had to be killed or was not running.
        """
        proc = self.process
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout) in (0, 128 + signal.SIGTERM)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False

    def kill(self) -> None:
        """SIGKILL, for failure tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running_kafka(
    data_dir: Path, *, heap: str = "512m", ready_timeout: float = 90.0
) -> Iterator[LocalKafka]:
    """A started, ready broker on a free port for the block (tests, benchmarks); stopped after.

    The broker's output goes to ``data_dir/broker.log``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    broker = LocalKafka(data_dir=data_dir, port=free_port(), heap=heap)
    with (data_dir / "broker.log").open("ab") as log:
        try:
            broker.start(stdout=log.fileno())
            broker.wait_ready(timeout=ready_timeout)
            yield broker
        finally:
            broker.stop()


def _cluster_id(data_dir: Path) -> str:
    """A stable cluster id per data directory (Kafka wants 22 base64url characters)."""
    path = data_dir / "cluster.id"
    if path.exists():
        kept = path.read_text().strip()
        if not kept.startswith("-"):
            return kept
    import base64

    # Like Kafka's own Uuid.randomUuid: never start with "-", which the storage tool's argument
    # parser would take for an option (one id in 64 did, failing the format at random).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            break
    path.write_text(cid)
    return cid
