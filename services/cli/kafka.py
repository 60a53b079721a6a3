"""``batchpipe kafka`` (run a local KRaft broker or cluster) and ``batchpipe topics``."""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from batchpipe.services.cli.support import settings_or_exit


class Security(enum.StrEnum):
    none = "none"
    sasl_ssl = "sasl_ssl"


def kafka(
    port: Annotated[
        int, typer.Option(help="Client port on 127.0.0.1 (of the first broker).")
    ] = 9092,
    data_dir: Annotated[
        Path, typer.Option(help="Where the broker keeps its data (kept across restarts).")
    ] = Path(".batchpipe/kafka"),
    heap: Annotated[str, typer.Option(help="JVM heap size (of each broker).")] = "512m",
    brokers: Annotated[
        int, typer.Option(min=1, max=9, help="Brokers: 3 makes a replicated cluster.")
    ] = 1,
    security: Annotated[
        Security, typer.Option(help="sasl_ssl: TLS listeners, SCRAM-SHA-512 users, ACLs.")
    ] = Security.none,
    fetch_only: Annotated[
        bool, typer.Option("--fetch-only", help="Only resolve the jars into the cache, then exit.")
    ] = False,
) -> None:
    """Run Apache Kafka (KRaft) in the foreground until Ctrl-C: one broker, or a cluster.

    Uses KAFKA_HOME if set, otherwise fetches the broker's jars from Maven Central with mvn
    into ~/.cache/batchpipe (BATCHPIPE_KAFKA_CACHE overrides). Needs Java 17+.

    With --brokers 3 each broker is its own process (ports PORT, PORT+1, PORT+2; kill one to
    see failover) and topics get 3 replicas and min.insync.replicas=2. With --security
    sasl_ssl the brokers get a generated CA and certificate, a SCRAM user per service and the
    ACL authorizer; batchpipe's topics (named by the BATCHPIPE_* settings) and every service's
    ACLs are created. The client settings are printed as export lines and written to
    DATA_DIR/client.env (administrator) and DATA_DIR/<service>.env.
    """
    from batchpipe.devtools.local_kafka import KAFKA_VERSION, KafkaSetupError, kafka_libs

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        started = time.monotonic()
        libs = kafka_libs(log=say)
        if fetch_only:
            say(f"Kafka {KAFKA_VERSION} jars ready in {libs} ({time.monotonic() - started:.1f}s)")
            return
    except KafkaSetupError as exc:
        typer.secho(f"batchpipe kafka: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    if brokers == 1 and security is Security.none:
        _run_single(data_dir.resolve(), port, heap, libs, say, started)
    else:
        _run_cluster(data_dir.resolve(), port, heap, brokers, security, say, started)


def _run_single(
    data_dir: Path, port: int, heap: str, libs: Path, say: Callable[[str], None], started: float
) -> None:
    from batchpipe.devtools.local_kafka import KAFKA_VERSION, KafkaSetupError, LocalKafka

    try:
        broker = LocalKafka(data_dir=data_dir, port=port, heap=heap)
        broker.start(libs)
        broker.wait_ready()
    except KafkaSetupError as exc:
        typer.secho(f"batchpipe kafka: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    process = broker.process
    assert process is not None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        # Only signal the JVM here: the main thread is already in process.wait(), and waiting
        # again inside the handler deadlocks Popen. A second signal kills the broker.
        nonlocal stopping
        if stopping:
            process.kill()
            return
        stopping = True
        say("stopping Kafka ... (again to kill)")
        process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    say(
        f"Kafka {KAFKA_VERSION} ready on {broker.bootstrap} "
        f"in {time.monotonic() - started:.1f}s (data: {broker.data_dir}); Ctrl-C stops it"
    )
    code = process.wait()
    if stopping and code in (0, 128 + signal.SIGTERM):
        say("Kafka stopped cleanly")
        return
    if code != 0:
        raise typer.Exit(code)


def _run_cluster(
    data_dir: Path,
    port: int,
    heap: str,
    brokers: int,
    security: Security,
    say: Callable[[str], None],
    started: float,
) -> None:
    """Several brokers (or a secured one) until a signal; a broker that dies is reported and
    the others keep running (each can be killed and restarted alone)."""
    from batchpipe.devtools.kafka_cluster import LocalCluster
    from batchpipe.devtools.kafka_provision import cluster_env, provision, write_client_env
    from batchpipe.devtools.kafka_security import BrokerSecurity, render_env
    from batchpipe.devtools.local_kafka import KAFKA_VERSION, KafkaSetupError

    settings = settings_or_exit("kafka")
    secured = BrokerSecurity.create(data_dir) if security is Security.sasl_ssl else None
    try:
        cluster = LocalCluster(data_dir, size=brokers, port=port, heap=heap, security=secured)
    except KafkaSetupError as exc:
        typer.secho(f"batchpipe kafka: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    try:
        cluster.start()
        cluster.wait_ready()
        acls = asyncio.run(provision(cluster, settings))
    except BaseException as exc:
        cluster.stop()  # never leave brokers behind
        if not isinstance(exc, Exception):
            raise
        typer.secho(f"batchpipe kafka: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            for node in cluster.nodes:
                node.kill()
            return
        stopping = True
        say("stopping Kafka ... (again to kill)")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    env_file = write_client_env(cluster)
    shape = f"{brokers} brokers" if brokers > 1 else "1 broker"
    extra = f", TLS + SCRAM-SHA-512, {acls} ACLs" if secured else ""
    say(
        f"Kafka {KAFKA_VERSION} ready: {shape} on {cluster.bootstrap}{extra} "
        f"in {time.monotonic() - started:.1f}s (data: {data_dir}); Ctrl-C stops it"
    )
    typer.echo(render_env(cluster_env(cluster)), nl=False)
    say(f"client settings (administrator) in {env_file}")
    if secured:
        say(f"each service's own principal: {data_dir}/<ingest|dispatcher|poller|reader>.env")

    reported: set[int] = set()
    while not stopping:
        for node in cluster.nodes:
            if not node.alive and node.node_id not in reported:
                reported.add(node.node_id)
                say(f"broker {node.node_id} ({node.bootstrap}) exited")
            elif node.alive:
                reported.discard(node.node_id)
        if len(reported) == len(cluster.nodes):
            raise typer.Exit(1)
        time.sleep(0.5)
    clean = cluster.stop()
    say("Kafka stopped cleanly" if clean else "Kafka stopped (some brokers had to be killed)")


def topics() -> None:
    """Create every topic batchpipe uses, with its partitions and configs, if missing; list them.

    Names from BATCHPIPE_*_TOPIC, partitions from BATCHPIPE_TOPIC_PARTITIONS (the dispatch
    ledger has one), replication from BATCHPIPE_TOPIC_REPLICATION_FACTOR. Existing topics are
    left as they are.
    """
    from batchpipe.shared.kafka import ensure_topics
    from batchpipe.shared.topics import topic_specs

    settings = settings_or_exit("topics")
    specs = topic_specs(settings)
    try:
        created = asyncio.run(ensure_topics(settings, specs))
    except Exception as exc:  # a CLI reports any failure in one line
        typer.secho(f"batchpipe topics: {type(exc).__name__}: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None
    for spec in specs:
        status = "created" if spec.name in created else "exists"
        plural = "" if spec.partitions == 1 else "s"
        configs = "".join(f", {key}={value}" for key, value in sorted(spec.config.items()))
        typer.echo(f"{spec.name}: {status} ({spec.partitions} partition{plural}{configs})")


def kafka_acls(
    principal: Annotated[
        str | None, typer.Option(help="Only this service principal (default: all of them).")
    ] = None,
) -> None:
    """Print the Kafka ACLs each batchpipe service needs, as kafka-acls.sh arguments.

    Topic names, groups and transactional ids come from the BATCHPIPE_* settings, so run it
    with the same environment as the services. Append --bootstrap-server and
    --command-config (an administrator's client config) to each line.
    """
    from batchpipe.shared.acls import SERVICE_PRINCIPALS, service_acls

    settings = settings_or_exit("kafka-acls")
    if principal is not None and principal not in SERVICE_PRINCIPALS:
        typer.secho(f"batchpipe kafka-acls: no principal {principal!r}", err=True, fg="red")
        raise typer.Exit(2)
    for name in [principal] if principal else SERVICE_PRINCIPALS:
        typer.echo(f"# {name}")
        for acl in service_acls(settings, name):
            typer.echo(f"kafka-acls.sh {acl.cli_args()}")
