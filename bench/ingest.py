"""Benchmark of the ingest service: items/s through ``POST /requests`` against its ceilings.

Run: ``.venv/bin/python bench/ingest.py`` (about 1.5 minutes on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``):

- raw producer: aiokafka (the same ``make_producer`` config as ingest, ``acks=all``, uvloop)
  sending the very request lines ingest produces, 32 concurrent senders of 100 lines each,
  once with aiokafka's own partitioner and once with ingest's ``partition_of`` (same mapping);
- bare FastAPI: an endpoint that reads the same body and does nothing (the HTTP ceiling);
- ingest: the shipped ``batchpipe ingest`` command (1 worker), 100 and 1 item(s) per POST.

HTTP load comes from a separate process (aiohttp, concurrency 32, keep-alive); every server
runs in its own process. Each figure is the steady state over ``--seconds`` after a warm-up,
plus the CPU time the producing process (raw producer, or the server) spent per item, which
hardly depends on what else the machine is doing. The raw producer and ingest(100) run in
alternating pairs (``--rounds``) so that both see the same machine load.
Target: ingest with 100-item POSTs ≥ 50% of the raw producer's items/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds  # noqa: E402

CONCURRENCY = 32
ITEMS_PER_CHUNK = 100


def body_of(items: int) -> bytes:
    """The seed's shape: ``{"data": [[{"role": "user", "content": ...}], ...]}``."""
    return orjson.dumps(
        {
            "data": [
                [{"role": "user", "content": f"How can I learn Python? Question number {i}."}]
                for i in range(items)
            ]
        }
    )


# --- servers (each in its own process) -----------------------------------------------------


def start_ingest(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``batchpipe ingest --port PORT`` itself (1 worker), as shipped."""
    command = [str(Path(sys.executable).with_name("batchpipe")), "ingest", "--port", str(port)]
    return subprocess.Popen(command, env={**os.environ, **env})


def serve_bare(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.post("/requests", status_code=202)
    async def requests(request: Request) -> Response:
        await request.body()
        return Response(b'{"status":"success"}', 202, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"{}", media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def cpu_during(pid: int, warmup: float, seconds: float) -> float:
    """CPU seconds ``pid`` uses in the measured window."""
    await asyncio.sleep(warmup)
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - before


# --- load (separate process) ---------------------------------------------------------------


def load(url: str, pid: int, items: int, seconds: float, warmup: float, out: Any) -> None:
    out.put(asyncio.run(_load(url, pid, items, seconds, warmup)))


async def _load(url: str, pid: int, items: int, seconds: float, warmup: float) -> dict[str, Any]:
    import aiohttp

    body = body_of(items)
    headers = {"Content-Type": "application/json", "accept": "application/json"}
    start = time.monotonic()
    measure_from = start + warmup
    stop = measure_from + seconds
    stats = {"items": 0, "posts": 0, "errors": 0}
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while (now := time.monotonic()) < stop:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 202
            done = time.monotonic()
            if now >= measure_from and done <= stop:
                if ok:
                    stats["items"] += items
                    stats["posts"] += 1
                    latencies.append(done - now)
                else:
                    stats["errors"] += 1

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    cpu = asyncio.ensure_future(cpu_during(pid, warmup, seconds))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    latencies.sort()
    return {
        **stats,
        "cpu": await cpu,
        "seconds": seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
    }


# --- raw producer (separate process) -------------------------------------------------------


def raw_producer(
    env: dict[str, str], seconds: float, warmup: float, own_partitioner: bool, out: Any
) -> None:
    import uvloop  # the event loop uvicorn runs ingest on, for a like-for-like baseline

    os.environ.update(env)
    out.put(uvloop.run(_raw_producer(seconds, warmup, own_partitioner)))


async def _raw_producer(seconds: float, warmup: float, own_partitioner: bool) -> dict[str, Any]:
    from batchpipe.services.ingest.publish import PRODUCER_OVERRIDES, encode_lines
    from batchpipe.services.ingest.validate import parse_body, validate_items
    from batchpipe.shared.kafka import make_producer
    from batchpipe.shared.partitioner import partition_of
    from batchpipe.shared.settings import load_settings

    settings = load_settings()
    # The very records ingest sends: 20 chunks of 100 request lines (distinct custom_ids).
    chunks = []
    for _ in range(20):
        lines = validate_items(
            parse_body(body_of(ITEMS_PER_CHUNK)).items,
            default_model=settings.default_model,
            default_kwargs=settings.default_request_kwargs,
        ).lines
        chunks.append([(r.key, r.value) for r in encode_lines(lines)[0]])
    producer = make_producer(settings, **PRODUCER_OVERRIDES)
    await producer.start()
    topic = settings.requests_topic
    partitions = sorted(await producer.partitions_for(topic))
    start = time.monotonic()
    measure_from = start + warmup
    stop = measure_from + seconds
    stats = {"items": 0, "posts": 0, "errors": 0}
    latencies: list[float] = []

    async def sender(n: int) -> None:
        i = n
        while (now := time.monotonic()) < stop:
            chunk = chunks[i % len(chunks)]
            i += 1
            if own_partitioner:  # as ingest does: the same key -> partition mapping
                send = producer.send
                futures = [
                    await send(topic, value=v, key=k, partition=partition_of(k, partitions))
                    for k, v in chunk
                ]
            else:  # plain aiokafka: its default partitioner hashes each key
                futures = [await producer.send(topic, value=v, key=k) for k, v in chunk]
            await asyncio.wait(futures)
            done = time.monotonic()
            if now >= measure_from and done <= stop:
                stats["items"] += len(chunk)
                stats["posts"] += 1
                latencies.append(done - now)

    cpu = asyncio.ensure_future(cpu_during(os.getpid(), warmup, seconds))
    try:
        await asyncio.gather(*(sender(n) for n in range(CONCURRENCY)))
    finally:
        await producer.stop()
    latencies.sort()
    return {
        **stats,
        "cpu": await cpu,
        "seconds": seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


# --- orchestration -------------------------------------------------------------------------


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready within {timeout}s")


def run_in_process(ctx: Any, target: Any, *args: Any) -> dict[str, Any]:
    out = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, out))
    process.start()
    result: dict[str, Any] = out.get(timeout=300)
    process.join(30)
    return result


def http_scenario(ctx: Any, name: str, env: dict[str, str] | None, items: int, args: Any) -> Any:
    """Load one server (ingest if ``env`` is given, else the bare endpoint) for one run."""
    from batchpipe.devtools.local_kafka import free_port

    port = free_port()
    server: Any
    if env is not None:
        server = start_ingest(env, port)
    else:
        server = ctx.Process(target=serve_bare, args=(port,), daemon=True)
        server.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        print(f"  {name} ...", flush=True)
        url = f"http://127.0.0.1:{port}/requests"
        return run_in_process(ctx, load, url, server.pid, items, args.seconds, args.warmup)
    finally:
        server.terminate()  # SIGTERM: ingest drains and stops its producer
        if env is not None:
            server.wait(30)
        else:
            server.join(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time first")
    parser.add_argument("--rounds", type=int, default=3, help="runs of raw vs ingest(100)")
    args = parser.parse_args()

    from batchpipe.devtools.local_kafka import LocalKafka, free_port
    from batchpipe.shared.kafka import ensure_topics
    from batchpipe.shared.settings import Settings, settings_env
    from batchpipe.shared.topics import topic_specs

    ctx = mp.get_context("spawn")
    broker = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-ingest-")
    bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka(data_dir=Path(tmp.name), port=free_port(), heap="768m")
        log = (Path(tmp.name) / "broker.log").open("wb")
        print(f"starting a local Kafka broker on {broker.bootstrap} ...", flush=True)
        broker.start(stdout=log.fileno())
        broker.wait_ready(timeout=120)
        bootstrap = broker.bootstrap
    try:
        run = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            requests_topic=f"bench-requests-{run}",
            batches_topic=f"bench-batches-{run}",
            results_topic=f"bench-results-{run}",
            dead_letters_topic=f"bench-dead-letters-{run}",
            log_level="WARNING",
        )
        specs = [s for s in topic_specs(settings) if s.name == settings.requests_topic]
        asyncio.run(ensure_topics(settings, specs))
        env = settings_env(settings)

        results: dict[str, list[dict[str, Any]]] = {}

        def raw(key: str, own_partitioner: bool) -> None:
            print(f"  {key} ...", flush=True)
            result = run_in_process(
                ctx, raw_producer, env, args.seconds, args.warmup, own_partitioner
            )
            results.setdefault(key, []).append(result)

        def http(key: str, env: dict[str, str] | None, items: int) -> None:
            result = http_scenario(ctx, key, env, items, args)
            results.setdefault(key, []).append(result)

        # The headline pair runs in alternating rounds, so that both see the same machine load.
        for _ in range(args.rounds):
            raw("raw", own_partitioner=False)
            http("ingest100", env, 100)
        raw("raw_own_partitioner", own_partitioner=True)
        http("bare100", None, 100)
        http("bare1", None, 1)
        http("ingest1", env, 1)
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()
    report(results, args)


def report(results: dict[str, list[dict[str, Any]]], args: Any) -> None:
    def rate(result: dict[str, Any]) -> float:
        return float(result["items"] / result["seconds"])

    def best(key: str) -> dict[str, Any]:
        return max(results[key], key=rate)

    raw = rate(best("raw"))
    rows = [
        ("raw aiokafka producer, acks=all, 100 per gather", "raw", None),
        ("  same, with ingest's partition_of (same mapping)", "raw_own_partitioner", None),
        ("bare FastAPI endpoint, 100 items/POST", "bare100", None),
        ("bare FastAPI endpoint, 1 item/POST", "bare1", None),
        ("**ingest POST /requests, 100 items/POST**", "ingest100", "bare100"),
        ("ingest POST /requests, 1 item/POST", "ingest1", "bare1"),
    ]
    print()
    print(
        f"concurrency {CONCURRENCY}, {args.seconds:g} s measured per run, best of "
        f"{args.rounds} alternating runs for rows 1 and 5, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print()
    print(
        "| scenario | items/s | POSTs/s | p50 ms | p99 ms | vs raw producer | vs bare HTTP "
        "| CPU µs/item |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, key, bare in rows:
        r = best(key)
        items = rate(r)
        posts = r["posts"] / r["seconds"]
        bare_rate = rate(best(bare)) if bare else 0.0
        vs_bare = f"{items / bare_rate:.0%}" if bare_rate else "—"
        errors = f" ({r['errors']} errors)" if r["errors"] else ""
        cpu = 1e6 * r["cpu"] / r["items"] if r["items"] else 0.0
        print(
            f"| {label}{errors} | {items:,.0f} | {posts:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {items / raw:.0%} | {vs_bare} | {cpu:.1f} |"
        )
    pairs = list(zip(results["raw"], results["ingest100"], strict=True))
    ratios = [rate(i) / rate(r) for r, i in pairs]
    median = statistics.median(ratios)
    best_ratio = rate(best("ingest100")) / raw
    print()
    print(
        "ingest (100 items/POST) / raw producer, per round (each pair run back to back): "
        + ", ".join(f"{x:.0%}" for x in ratios)
    )
    print(f"  median {median:.0%}, best vs best {best_ratio:.0%}")
    print(f"target >= 50% (median of rounds): {'met' if median >= 0.5 else 'NOT met'}")
    cpu_raw = best("raw")["cpu"] / best("raw")["items"]
    cpu_ingest = best("ingest100")["cpu"] / best("ingest100")["items"]
    own = best("raw_own_partitioner")
    cpu_own = own["cpu"] / own["items"]
    print(
        f"CPU per item (hardly depends on machine load): raw producer {1e6 * cpu_raw:.1f} µs, "
        f"raw with ingest's partitioner {1e6 * cpu_own:.1f} µs, ingest {1e6 * cpu_ingest:.1f} µs"
    )
    print(
        f"  -> ingest's items per CPU-second: {cpu_raw / cpu_ingest:.0%} of the raw producer's, "
        f"{cpu_own / cpu_ingest:.0%} of the raw producer with the same partitioner's"
    )


if __name__ == "__main__":
    main()
