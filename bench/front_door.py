"""Benchmark of ingest under load at the front door: 1,000 concurrent connections, with and
without slow clients.

Run: ``.venv/bin/python bench/front_door.py`` (about a minute on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``),
with ``batchpipe ingest`` as its own process:

1. baseline: ``--connections`` (1,000) keep-alive connections, each POSTing the original
   sample's two-question body again as soon as it is answered, for ``--seconds``;
2. under attack: the same, plus ``--slow`` (200) slow clients, half sending their headers a
   byte every 0.5 s and half their body, each reconnecting as soon as it is cut off.

Per phase: requests/s answered, p50/p99 latency of the normal clients, answers by status
(and connection errors), and for the slow clients how they ended (408, closed) and how long
they were held. The ratio of the two phases' requests/s is the figure to watch (the client
runs on the same 2 cores, so the absolute rate is the pair's, not ingest's alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchpipe.devtools.local_kafka import free_port, running_kafka  # noqa: E402
from batchpipe.shared.kafka import ensure_topics  # noqa: E402
from batchpipe.shared.settings import Settings, settings_env  # noqa: E402
from bench.support import BIN, wait_http  # noqa: E402

BODY = orjson.dumps(
    {
        "data": [
            [{"role": "user", "content": "How can I learn Python?"}],
            [{"role": "user", "content": "Who is the first president of the United States?"}],
        ]
    }
)
REQUEST = (
    b"POST /requests HTTP/1.1\r\nhost: ingest\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
HEAD_END = REQUEST.index(b"\r\n\r\n") + 4


async def read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


class Phase:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.slow: Counter[str] = Counter()
        self.slow_held: list[float] = []


async def normal_client(port: int, until: float, phase: Phase) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            phase.statuses[f"connect:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while time.monotonic() < until:
                started = time.perf_counter()
                writer.write(REQUEST)
                await writer.drain()
                status = await read_status(reader)
                phase.latencies.append(time.perf_counter() - started)
                phase.statuses[str(status)] += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            phase.statuses[f"error:{type(exc).__name__}"] += 1
        finally:
            writer.close()


async def slow_client(port: int, until: float, phase: Phase, *, body: bool) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            start = HEAD_END if body else 0
            if body:
                writer.write(REQUEST[:HEAD_END])
            answer = asyncio.create_task(read_status(reader))
            for byte in REQUEST[start:]:
                if answer.done() or time.monotonic() >= until:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
            if time.monotonic() < until or answer.done():
                status = await asyncio.wait_for(answer, 30)
                phase.slow[f"{'body' if body else 'headers'}:{status}"] += 1
                phase.slow_held.append(time.monotonic() - started)
            else:
                answer.cancel()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            phase.slow[f"{'body' if body else 'headers'}:{type(exc).__name__}"] += 1
        finally:
            writer.close()


async def phase_run(port: int, args: argparse.Namespace, slow: int) -> dict[str, Any]:
    phase = Phase()
    until = time.monotonic() + args.seconds
    started = time.monotonic()
    tasks = [normal_client(port, until, phase) for _ in range(args.connections)]
    tasks += [slow_client(port, until, phase, body=i % 2 == 1) for i in range(slow)]
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    latencies = sorted(phase.latencies)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {
        "connections": args.connections,
        "slow_clients": slow,
        "answered_per_s": round(len(latencies) / elapsed),
        "p50_ms": pct(0.5) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
        "statuses": dict(phase.statuses),
        "slow_outcomes": dict(phase.slow),
        "slow_held_median_s": round(statistics.median(phase.slow_held), 1)
        if phase.slow_held
        else None,
    }


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        requests_topic=f"bench-requests-{suffix}",
        batches_topic=f"bench-batches-{suffix}",
        results_topic=f"bench-results-{suffix}",
        dead_letters_topic=f"bench-dead-letters-{suffix}",
        poller_state_topic=f"bench-poller-state-{suffix}",
        topic_partitions=6,
        ingest_header_timeout_seconds=args.header_timeout,
        ingest_body_timeout_seconds=args.body_timeout,
        log_format="json",
        log_level="WARNING",
    )
    await ensure_topics(settings)
    port = free_port()
    env = {**os.environ, **settings_env(settings)}
    log = (work / "ingest.log").open("wb")
    ingest = subprocess.Popen(
        [str(BIN / "batchpipe"), "ingest", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, ok=lambda s: s == 200)
        rounds = []
        for number in range(1, args.rounds + 1):
            baseline = await phase_run(port, args, 0)
            attacked = await phase_run(port, args, args.slow)
            ratio = round(attacked["answered_per_s"] / max(1, baseline["answered_per_s"]), 3)
            result = {"round": number, "baseline": baseline, "with_slow": attacked, "ratio": ratio}
            print(orjson.dumps(result).decode(), flush=True)
            rounds.append(result)
    finally:
        ingest.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            ingest.wait(20)
    return {
        "seconds_per_phase": args.seconds,
        "header_timeout_s": args.header_timeout,
        "body_timeout_s": args.body_timeout,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_baseline_per_s": statistics.median(r["baseline"]["answered_per_s"] for r in rounds),
        "median_with_slow_per_s": statistics.median(
            r["with_slow"]["answered_per_s"] for r in rounds
        ),
        "median_with_slow_p99_ms": statistics.median(r["with_slow"]["p99_ms"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--body-timeout", type=float, default=10.0)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(prefix="bench-front-door-") as tmp:
        work = Path(tmp)
        bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
        with contextlib.ExitStack() as stack:
            if not bootstrap:
                bootstrap = stack.enter_context(running_kafka(work / "kafka")).bootstrap
            result = asyncio.run(run(args, bootstrap, work))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
