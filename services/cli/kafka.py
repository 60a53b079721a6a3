"""``batchpipe kafka`` (run a local KRaft broker) and ``batchpipe topics`` (create topics)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from batchpipe.services.cli.support import settings_or_exit


def kafka(
    port: Annotated[int, typer.Option(help="Client port on 127.0.0.1.")] = 9092,
    data_dir: Annotated[
        Path, typer.Option(help="Where the broker keeps its data (kept across restarts).")
    ] = Path(".batchpipe/kafka"),
    heap: Annotated[str, typer.Option(help="JVM heap size.")] = "512m",
    fetch_only: Annotated[
        bool, typer.Option("--fetch-only", help="Only resolve the jars into the cache, then exit.")
    ] = False,
) -> None:
    """Run a single-node Apache Kafka (KRaft) in the foreground until Ctrl-C.

    Uses KAFKA_HOME if set, otherwise fetches the broker's jars from Maven Central with mvn
    into ~/.cache/batchpipe (BATCHPIPE_KAFKA_CACHE overrides). Needs Java 17+.
    """
    from batchpipe.devtools.local_kafka import (
        KAFKA_VERSION,
        KafkaSetupError,
        LocalKafka,
        kafka_libs,
    )

    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        started = time.monotonic()
        libs = kafka_libs(log=say)
        if fetch_only:
            say(f"Kafka {KAFKA_VERSION} jars ready in {libs} ({time.monotonic() - started:.1f}s)")
            return
        broker = LocalKafka(data_dir=data_dir.resolve(), port=port, heap=heap)
        broker.start(libs)
        broker.wait_ready()
    except KafkaSetupError as exc:
        typer.secho(f"batchpipe kafka: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    say(
        f"Kafka {KAFKA_VERSION} ready on {broker.bootstrap} "
        f"in {time.monotonic() - started:.1f}s (data: {broker.data_dir}); Ctrl-C stops it"
    )

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
    code = process.wait()
    if stopping and code in (0, 128 + signal.SIGTERM):
        say("Kafka stopped cleanly")
        return
    if code != 0:
        raise typer.Exit(code)


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
