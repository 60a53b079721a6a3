"""Benchmark of the ingest service: items/s through ``POST /requests`` against its baselines.

Run: ``.venv/bin/python bench/ingest.py`` (about 4 minutes on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``),
with the rest of the pipeline running (emulator, ``batchpipe dispatcher`` and ``batchpipe
poller`` consuming what ingest produces; ``--no-pipeline`` leaves them out):

- seed baseline: what the original sample does on a POST — FastAPI validates the body with a
  pydantic model ``{data: List}`` and appends the items to an in-memory list through
  ``asyncio.to_thread``; served by uvicorn as ingest is;
- bare FastAPI: an endpoint that reads the body and does nothing (the HTTP ceiling);
- raw producer: aiokafka (``make_producer``, ``acks=all``, idempotent, uvloop) sending the very
  request lines ingest produces, ``send()`` per line, 32 concurrent senders of 100 lines;
- ingest: the shipped ``batchpipe ingest`` command (1 worker), 100 and 1 item(s) per POST;
  with ``--before-src DIR`` also the ingest of another checkout (``DIR/src`` on PYTHONPATH).

HTTP load comes from a separate process (aiohttp, ``--concurrency`` keep-alive connections,
the seed's item shape). Every scenario runs once per round (``--rounds``), one after the
other, so each round's ratios compare runs under the same machine load; the table gives
medians over rounds. Before each run the dispatcher catches up on the requests topic and the
pipeline falls idle (the emulator and poller done with earlier batches), so every scenario
starts from the same state and the pipeline works only on what the run itself produces.
"CPU µs/item" is the CPU time of the serving (or raw producing) process per item; "machine",
"pipeline" and "broker cores" the CPU the whole machine, the pipeline's processes and the
broker used during the run (load process start to end), in cores.

Last, ``--memory-mib`` (64): a fresh ingest takes one body of that size (10,000 items) and its
peak RSS (VmHWM) is read before and after.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List  # noqa: UP035 (the sample's own annotation)

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import BIN, cpu_seconds, rss_kib, start_emulator, tree_cpu_seconds  # noqa: E402

ITEMS_PER_CHUNK = 100
RAW_SENDERS = 32


def body_of(items: int, content_chars: int = 0) -> bytes:
    """The seed's shape: ``{"data": [[{"role": "user", "content": ...}], ...]}``."""
    pad = "x" * content_chars
    return orjson.dumps(
        {
            "data": [
                [{"role": "user", "content": f"How can I learn Python? Question number {i}.{pad}"}]
                for i in range(items)
            ]
        }
    )


# --- servers (each in its own process) -----------------------------------------------------


class MessagesList(BaseModel):
    """The original sample's body model (``data: List``, unparametrised)."""

    data: List  # type: ignore[type-arg]  # noqa: UP006


def start_ingest(
    env: dict[str, str], port: int, src: Path | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``batchpipe ingest --port PORT`` (1 worker): this checkout's, or ``src``'s."""
    command = [str(BIN / "batchpipe"), "ingest", "--port", str(port)]
    full_env = {**os.environ, **env}
    if src is not None:
        command = [sys.executable, "-c", "from batchpipe.services.cli import main; main()"]
        command += ["ingest", "--port", str(port)]
        full_env["PYTHONPATH"] = str(src / "src")
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)


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

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def serve_seed(port: int) -> None:
    """The original sample's POST /requests, with its in-memory queue (``InMemoryRequestQueue``
    keeps a list; ``add_requests`` extends it under a lock, in a thread)."""
    import threading

    import uvicorn

    queue: list[Any] = []
    lock = threading.Lock()

    def add_requests(requests: list[Any]) -> None:
        with lock:
            queue.extend(requests)

    app = FastAPI()

    @app.post("/requests")
    async def handle_requests_api(messages_list: MessagesList) -> dict[str, str]:
        try:
            await asyncio.to_thread(add_requests, list(messages_list.data))
            return {"status": "success"}
        except Exception as e:
            raise HTTPException(status_code=500, detail=str(e)) from e

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {}

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


# --- load (separate process) ---------------------------------------------------------------


async def cpu_during(pid: int, warmup: float, seconds: float) -> float:
    """CPU seconds ``pid`` uses in the measured window."""
    await asyncio.sleep(warmup)
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - before


def load(url: str, pid: int, items: int, args: tuple[float, float, int], out: Any) -> None:
    out.put(asyncio.run(_load(url, pid, items, *args)))


def summary(stats: dict[str, Any], latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)
    return {
        **stats,
        "p50_ms": 1000 * latencies[n // 2] if n else 0.0,
        "p99_ms": 1000 * latencies[int(n * 0.99)] if n else 0.0,
    }


async def _load(
    url: str, pid: int, items: int, seconds: float, warmup: float, concurrency: int
) -> dict[str, Any]:
    import aiohttp

    body = body_of(items)
    headers = {"Content-Type": "application/json", "accept": "application/json"}
    measure_from = time.monotonic() + warmup
    stop = measure_from + seconds
    stats: dict[str, Any] = {"items": 0, "posts": 0, "errors": 0, "seconds": seconds}
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while (now := time.monotonic()) < stop:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status in (200, 202)
            done = time.monotonic()
            if now >= measure_from and done <= stop:
                if ok:
                    stats["items"] += items
                    stats["posts"] += 1
                    latencies.append(done - now)
                else:
                    stats["errors"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    cpu = asyncio.ensure_future(cpu_during(pid, warmup, seconds))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    stats["cpu"] = await cpu
    return summary(stats, latencies)


# --- raw producer (separate process) -------------------------------------------------------


def raw_producer(env: dict[str, str], args: tuple[float, float, int], out: Any) -> None:
    import uvloop  # the event loop uvicorn runs ingest on, for a like-for-like baseline

    os.environ.update(env)
    out.put(uvloop.run(_raw_producer(args[0], args[1])))


async def _raw_producer(seconds: float, warmup: float) -> dict[str, Any]:
    from batchpipe.services.ingest.publish import PRODUCER_OVERRIDES
    from batchpipe.shared.kafka import make_producer
    from batchpipe.shared.request_items import new_custom_id
    from batchpipe.shared.settings import load_settings

    settings = load_settings()
    # Request lines as ingest produces them: 20 chunks of 100 (distinct custom_ids).
    chunks = []
    for _ in range(20):
        chunk = []
        for i in range(ITEMS_PER_CHUNK):
            custom_id = new_custom_id()
            line = {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": settings.default_model,
                    **settings.default_request_kwargs,
                    "messages": [{"role": "user", "content": f"How can I learn Python? {i}."}],
                },
            }
            chunk.append((custom_id.encode(), orjson.dumps(line)))
        chunks.append(chunk)
    producer = make_producer(settings, **PRODUCER_OVERRIDES)
    await producer.start()
    topic = settings.requests_topic
    measure_from = time.monotonic() + warmup
    stop = measure_from + seconds
    stats: dict[str, Any] = {"items": 0, "posts": 0, "errors": 0, "seconds": seconds}
    latencies: list[float] = []

    async def sender(n: int) -> None:
        i = n
        while (now := time.monotonic()) < stop:
            chunk = chunks[i % len(chunks)]
            i += 1
            futures = [await producer.send(topic, value=v, key=k) for k, v in chunk]
            await asyncio.wait(futures)
            done = time.monotonic()
            if now >= measure_from and done <= stop:
                stats["items"] += len(chunk)
                stats["posts"] += 1
                latencies.append(done - now)

    cpu = asyncio.ensure_future(cpu_during(os.getpid(), warmup, seconds))
    try:
        await asyncio.gather(*(sender(n) for n in range(RAW_SENDERS)))
    finally:
        await producer.stop()
    stats["cpu"] = await cpu
    return summary(stats, latencies)


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


def mean_publish_ms(url: str) -> float:
    """Mean time from a POST's first record to its last ack (ingest's own histogram)."""
    import httpx

    values = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("batchpipe_ingest_publish_seconds_") and name[-4:] in ("_sum", "ount"):
            values[name.rsplit("_", 1)[1]] = float(value)
    return 1000 * values["sum"] / values["count"] if values.get("count") else 0.0


def run_in_process(ctx: Any, target: Any, *args: Any) -> dict[str, Any]:
    out = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, out))
    process.start()
    result: dict[str, Any] = out.get(timeout=300)
    process.join(30)
    return result


class Bench:
    """One run: the broker's settings, the pipeline's processes, the scenarios' results."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, work: Path) -> None:
        from batchpipe.devtools.local_kafka import free_port
        from batchpipe.shared.settings import Settings, settings_env

        self.args = args
        self.work = work
        self.ctx = mp.get_context("spawn")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.broker_pid = 0
        run = uuid.uuid4().hex[:8]
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            requests_topic=f"bench-requests-{run}",
            batches_topic=f"bench-batches-{run}",
            results_topic=f"bench-results-{run}",
            dead_letters_topic=f"bench-dead-letters-{run}",
            poller_state_topic=f"bench-poller-state-{run}",
            dispatcher_group_id=f"bench-dispatcher-{run}",
            dispatcher_web_port=free_port(),
            dispatcher_data_dir=work / "dispatcher",
            poller_http_port=free_port(),
            batch_max_wait_seconds=5.0,
            poll_interval_seconds=1.0,
            openai_api_key="sk-bench",
            log_level="WARNING",
        )
        self.env = settings_env(self.settings)
        self.results: dict[str, list[dict[str, Any]]] = {}

    async def create_topics(self) -> None:
        from batchpipe.shared.kafka import ensure_topics

        await ensure_topics(self.settings)

    def start_pipeline(self) -> None:
        emulator, base_url = start_emulator(self.work, 1.0)
        self.processes.append(emulator)
        self.env = {**self.env, "OPENAI_BASE_URL": base_url, "BATCHPIPE_OPENAI_BASE_URL": base_url}
        wait_http(base_url.removesuffix("/v1") + "/_emulator/healthz")
        for service in ("dispatcher", "poller"):
            log = (self.work / f"{service}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [str(BIN / "batchpipe"), service],
                    env={**os.environ, **self.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_http(f"http://127.0.0.1:{self.settings.dispatcher_web_port}/readyz", 120)
        wait_http(f"http://127.0.0.1:{self.settings.poller_http_port}/readyz", 120)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    async def dispatcher_lag(self) -> int:
        """Requests not yet committed by the dispatcher's group (all partitions)."""
        from aiokafka.admin import AIOKafkaAdminClient

        from batchpipe.shared.kafka import client_config, make_consumer

        admin = AIOKafkaAdminClient(**client_config(self.settings))
        consumer = make_consumer(self.settings, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.dispatcher_group_id)
            topic = self.settings.requests_topic
            parts = [tp for tp in await self._partitions(consumer, topic)]
            ends = await consumer.end_offsets(parts)
            return sum(
                end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
            )
        finally:
            await consumer.stop()
            await admin.close()

    @staticmethod
    async def _partitions(consumer: Any, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        await consumer._client._wait_on_metadata(topic)
        return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]

    def pipeline_cpu(self) -> float:
        return sum(tree_cpu_seconds(p.pid) for p in self.processes)

    def settle(self) -> None:
        """Wait (at most 180 s) until the dispatcher has taken every request so far and the
        pipeline is idle (its processes used under 5% of a CPU over the last second), so
        that no run pays for the work an earlier one left behind."""
        if self.args.no_pipeline:
            return
        deadline = time.monotonic() + 180
        lag, busy = 1, 1.0
        while time.monotonic() < deadline:
            lag = asyncio.run(self.dispatcher_lag())
            before = self.pipeline_cpu()
            time.sleep(1.0)
            busy = self.pipeline_cpu() - before
            if lag == 0 and busy < 0.05:
                return
        print(f"    (pipeline not idle: {lag} requests behind, {busy:.0%} CPU)", flush=True)

    @contextmanager
    def server(self, kind: str) -> Iterator[tuple[int, int]]:
        """A server of ``kind`` (ingest, before, bare, seed): yields (port, pid)."""
        from batchpipe.devtools.local_kafka import free_port

        port = free_port()
        server: Any
        if kind in ("ingest", "before"):
            src = self.args.before_src if kind == "before" else None
            server = start_ingest(self.env, port, src, self.work / f"{kind}.log")
        else:
            target = serve_bare if kind == "bare" else serve_seed
            server = self.ctx.Process(target=target, args=(port,), daemon=True)
            server.start()
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            yield port, server.pid
        finally:
            server.terminate()  # SIGTERM: ingest drains and stops its producer
            if isinstance(server, subprocess.Popen):
                server.wait(30)
            else:
                server.join(30)

    def machine(self) -> tuple[float, float, float, float]:
        """(wall, machine busy CPU-seconds, pipeline CPU-seconds, broker CPU-seconds) so far."""
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        broker = tree_cpu_seconds(self.broker_pid) if self.broker_pid else 0.0
        return time.monotonic(), busy, self.pipeline_cpu(), broker

    def shares(self, before: tuple[float, float, float, float]) -> dict[str, float]:
        """Cores used during a run: the whole machine, the pipeline, the broker."""
        after = self.machine()
        wall = after[0] - before[0]
        return {
            "machine_cores": (after[1] - before[1]) / wall,
            "pipeline_cores": (after[2] - before[2]) / wall,
            "broker_cores": (after[3] - before[3]) / wall,
        }

    def http(self, key: str, kind: str, items: int) -> None:
        self.settle()
        print(f"  {key} ...", flush=True)
        a = self.args
        with self.server(kind) as (port, pid):
            url = f"http://127.0.0.1:{port}/requests"
            before = self.machine()
            result = run_in_process(
                self.ctx, load, url, pid, items, (a.seconds, a.warmup, a.concurrency)
            )
            result.update(self.shares(before))
            if kind in ("ingest", "before"):
                result["publish_ms"] = mean_publish_ms(f"http://127.0.0.1:{port}/metrics")
        self.results.setdefault(key, []).append(result)

    def raw(self) -> None:
        self.settle()
        print("  raw ...", flush=True)
        a = self.args
        before = self.machine()
        result = run_in_process(
            self.ctx, raw_producer, self.env, (a.seconds, a.warmup, a.concurrency)
        )
        result.update(self.shares(before))
        self.results.setdefault("raw", []).append(result)

    def memory(self, mib: int, kind: str = "ingest") -> dict[str, Any]:
        """Peak RSS of a fresh ingest around one ``mib`` MiB body of 10,000 items."""
        import httpx

        items = 10_000
        size = mib * 1024 * 1024 - 4096  # just under the default body limit (64 MiB)
        body = body_of(items, max(0, size // items - 80))
        body = body_of(items, max(0, size // items - 80 - (len(body) - size) // items - 1))
        self.settle()
        print(f"  memory ({kind}): one {len(body) / 2**20:.1f} MiB body ...", flush=True)
        with self.server(kind) as (port, pid):
            before = rss_kib(pid, "VmHWM")
            started = time.monotonic()
            response = httpx.post(
                f"http://127.0.0.1:{port}/requests",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
            seconds = time.monotonic() - started
            peak = rss_kib(pid, "VmHWM")
        return {
            "kind": kind,
            "status": response.status_code,
            "body_bytes": len(body),
            "hwm_before_kib": before,
            "hwm_after_kib": peak,
            "seconds": seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP connections")
    parser.add_argument("--no-pipeline", action="store_true", help="no dispatcher and poller")
    parser.add_argument("--before-src", type=Path, help="also measure this checkout's ingest")
    parser.add_argument("--memory-mib", type=int, default=64, help="0: skip the memory run")
    parser.add_argument("--only", help="comma-separated scenario keys (default: all)")
    args = parser.parse_args()

    from batchpipe.devtools.local_kafka import LocalKafka, free_port

    broker = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-ingest-")
    work = Path(tmp.name)
    bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = LocalKafka(data_dir=work / "kafka", port=free_port(), heap="768m")
        log = (work / "broker.log").open("wb")
        print(f"starting a local Kafka broker on {broker.bootstrap} ...", flush=True)
        broker.start(stdout=log.fileno())
        broker.wait_ready(timeout=120)
        bootstrap = broker.bootstrap
    bench = Bench(args, bootstrap, work)
    if broker is not None and broker.process is not None:
        bench.broker_pid = broker.process.pid
    memory: list[dict[str, Any]] = []
    try:
        asyncio.run(bench.create_topics())
        if not args.no_pipeline:
            print("starting the pipeline (emulator, dispatcher, poller) ...", flush=True)
            bench.start_pipeline()
        scenarios: list[tuple[str, Any]] = [
            ("seed100", lambda: bench.http("seed100", "seed", 100)),
            ("ingest100", lambda: bench.http("ingest100", "ingest", 100)),
            ("bare1", lambda: bench.http("bare1", "bare", 1)),
            ("ingest1", lambda: bench.http("ingest1", "ingest", 1)),
            ("bare100", lambda: bench.http("bare100", "bare", 100)),
            ("raw", bench.raw),
        ]
        if args.before_src:
            scenarios.insert(2, ("before100", lambda: bench.http("before100", "before", 100)))
        only = set(args.only.split(",")) if args.only else None
        for number in range(1, args.rounds + 1):
            print(f"round {number}/{args.rounds}", flush=True)
            for key, run in scenarios:
                if only is None or key in only:
                    run()
        if args.memory_mib:
            memory.append(bench.memory(args.memory_mib))
            if args.before_src:
                memory.append(bench.memory(args.memory_mib, "before"))
    finally:
        bench.stop()
        if broker is not None:
            broker.stop()
        tmp.cleanup()
    report(bench.results, memory, args)


ROWS = [
    ("seed baseline (pydantic `{data: List}` + to_thread append), 100 items/POST", "seed100"),
    ("bare FastAPI endpoint, 100 items/POST", "bare100"),
    ("bare FastAPI endpoint, 1 item/POST", "bare1"),
    ("raw aiokafka producer, send() per line, acks=all", "raw"),
    ("ingest before (--before-src), 100 items/POST", "before100"),
    ("**ingest POST /requests, 100 items/POST**", "ingest100"),
    ("**ingest POST /requests, 1 item/POST**", "ingest1"),
]


def rate(result: dict[str, Any]) -> float:
    return float(result["items"] / result["seconds"])


def report(
    results: dict[str, list[dict[str, Any]]], memory: list[dict[str, Any]], args: Any
) -> None:
    def median(key: str, value: Any) -> float:
        return float(statistics.median(value(r) for r in results[key]))

    print()
    print(
        f"{args.rounds} rounds x {args.seconds:g} s per run, {args.concurrency} HTTP connections, "
        f"pipeline {'off' if args.no_pipeline else 'on'}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}; medians over rounds"
    )
    print()
    print(
        "| scenario | items/s | POSTs/s | p50 ms | p99 ms | publish ms | CPU µs/item | errors "
        "| machine cores | pipeline cores | broker cores |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, key in ROWS:
        if key not in results:
            continue
        items = median(key, rate)
        posts = median(key, lambda r: r["posts"] / r["seconds"])
        cpu = median(key, lambda r: 1e6 * r["cpu"] / r["items"] if r["items"] else 0.0)
        errors = sum(r["errors"] for r in results[key])
        publish = median(key, lambda r: r.get("publish_ms", 0.0))
        print(
            f"| {label} | {items:,.0f} | {posts:,.0f} | {median(key, lambda r: r['p50_ms']):.1f} "
            f"| {median(key, lambda r: r['p99_ms']):.1f} | {f'{publish:.1f}' if publish else '—'} "
            f"| {cpu:.1f} | {errors} | {median(key, lambda r: r['machine_cores']):.2f} "
            f"| {median(key, lambda r: r['pipeline_cores']):.2f} "
            f"| {median(key, lambda r: r['broker_cores']):.2f} |"
        )
    print()
    for name, top, bottom, target in (
        ("ingest 100/POST vs seed baseline", "ingest100", "seed100", 1.0),
        ("ingest 100/POST vs ingest before", "ingest100", "before100", 2.0),
        ("ingest 1/POST vs bare endpoint 1/POST", "ingest1", "bare1", 0.5),
        ("ingest 100/POST vs raw producer", "ingest100", "raw", None),
    ):
        if top not in results or bottom not in results:
            continue
        pairs = zip(results[top], results[bottom], strict=False)
        ratios = [rate(t) / rate(b) for t, b in pairs if rate(b)]
        if not ratios:
            continue
        verdict = ""
        if target is not None:
            met = statistics.median(ratios) >= target
            verdict = f" (target >= {target:.1f}x: {'met' if met else 'NOT met'})"
        print(
            f"{name}: per round {', '.join(f'{x:.2f}x' for x in ratios)}; "
            f"median {statistics.median(ratios):.2f}x{verdict}"
        )
    for run in memory:
        body = run["body_bytes"]
        peak = run["hwm_after_kib"] * 1024
        print(
            f"memory ({run['kind']}): one {body / 2**20:.1f} MiB body of 10,000 items -> "
            f"HTTP {run['status']} "
            f"in {run['seconds']:.1f} s; peak RSS {peak / 2**20:.0f} MiB (idle "
            f"{run['hwm_before_kib'] / 1024:.0f} MiB) = {peak / body:.2f}x the body "
            f"(target < 3x: {'met' if peak < 3 * body else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
