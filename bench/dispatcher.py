"""Benchmark of the dispatcher: requests/s from the requests topic to submitted batches.

Run: ``.venv/bin/python bench/dispatcher.py`` (about 30 s on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``),
with the emulator in its own process (``batchpipe openai-emulator``, a fresh one per engine):

1. ``--requests`` request lines of ~1 KB are produced to a fresh requests topic (not timed);
2. raw: an aiokafka consumer (``make_consumer``, no group, all partitions from the start) reads
   them all; requests/s = N / (just before its first fetch -> last message). It runs before
   the core-only run and after each engine's run; the baseline is the median of those
   samples. "Core only": the same consumer handing each fetched chunk to
   ``Dispatcher.handle_many`` (validation, windows, offsets; nothing submitted), to show what
   the per-request work costs next to the fetch;
3. dispatcher, once per engine (``--engines faust,aiokafka``; each its own group, so both read
   the same N messages): ``batchpipe dispatcher`` as a subprocess (JSON logs,
   BATCH_MAX_REQUESTS=50,000, BATCH_MAX_WAIT_SECONDS=``--wait``); the time is from its log's
   "partitions assigned" to this process reading the batch record that completes N requests
   (validate, window, write JSONL, upload, create, publish, ledger; each engine with its own
   ledger topic and emulator).
   Its peak RSS (VmHWM) and its RSS once started (before any request) are reported;
4. memory of one cut: in this process, ``tracemalloc`` peak while 50,000 raw ~1 KB values
   are made (a fetch at a time), validated, windowed, cut, written as JSONL, uploaded and
   created against the emulator, relative to the window's JSONL size (target < 3x).

Prints each engine's requests/s, raw requests/s, the ratios (target >= 50%) and the memory
figures. ``--model claude-3-5-haiku-latest``: the same with Anthropic windows (staged in the
batch-inputs topic, translated, created inline; no one-cut memory run, which is OpenAI's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import TopicPartition  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from batchpipe.devtools.local_kafka import free_port, running_kafka  # noqa: E402
from batchpipe.services.dispatcher.dispatcher import Dispatcher  # noqa: E402
from batchpipe.services.dispatcher.jsonl import write_jsonl  # noqa: E402
from batchpipe.services.dispatcher.ledger import LedgerState  # noqa: E402
from batchpipe.services.dispatcher.validate import Valid, validate  # noqa: E402
from batchpipe.services.dispatcher.window import Window, Windows  # noqa: E402
from batchpipe.shared.contracts import BatchRecord, decode, key_bytes  # noqa: E402
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer  # noqa: E402
from batchpipe.shared.providers.openai import OpenAIProvider  # noqa: E402
from batchpipe.shared.providers.registry import Providers  # noqa: E402
from batchpipe.shared.settings import Settings, settings_env  # noqa: E402
from bench.support import (  # noqa: E402
    BIN,
    cpu_seconds,
    rss_kib,
    start_emulator,
    tree_cpu_seconds,
    wait_http,
)

WINDOW = 50_000


MODEL = ["gpt-4o-mini"]  # --model: a claude-* model sends every window to Anthropic


def request_value(i: int, size: int = 1024) -> bytes:
    line = {
        "custom_id": f"bench-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL[0],
            "messages": [{"role": "user", "content": ""}],
            "max_tokens": 100,
        },
    }
    pad = size - len(orjson.dumps(line))
    body: Any = line["body"]
    body["messages"][0]["content"] = f"How can I learn Python? #{i} " + "x" * max(0, pad - 30)
    return orjson.dumps(line)


async def produce_all(settings: Settings, n: int) -> None:
    producer = make_producer(settings, linger_ms=20, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        pending = []
        for i in range(n):
            pending.append(
                await producer.send(
                    settings.requests_topic, request_value(i), key=key_bytes(f"bench-{i}")
                )
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class _NoLedger:
    """The in-memory ledger state only (nothing is dispatched in the core-only run)."""

    def __init__(self) -> None:
        self.state = LedgerState()


async def core_only(settings: Settings, n: int) -> tuple[float, float]:
    """``raw_consumer`` feeding every fetched chunk to ``Dispatcher.handle_many`` (validate,
    window, track offsets) in this process, with no submission: what the per-request work
    costs next to the fetch."""

    async def commit(_: Any) -> bool:
        return True

    dispatcher = Dispatcher(
        settings,
        producer=None,  # (no dead letters in this input)
        ledger=_NoLedger(),  # type: ignore[arg-type]
        providers=Providers.single(OpenAIProvider(cast(Any, None))),
        commit=commit,
        queue_size=n // WINDOW + 2,
    )
    dispatcher.ready.set()
    return await raw_consumer(settings, n, dispatcher.handle_many)


async def raw_consumer(
    settings: Settings, n: int, handle: Callable[[list[Any]], Awaitable[None]] | None = None
) -> tuple[float, float]:
    """Seconds for a plain aiokafka consumer to read all ``n`` messages, and its CPU seconds
    (``handle``, if given, gets each fetched chunk)."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.requests_topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # The clock starts before the first fetch, as the dispatcher's starts at its
        # assignment, before its first fetch: starting it when the first fetch returned
        # counted that fetch's records (up to 10,000 of N) in no time.
        got = 0
        started = time.perf_counter()
        cpu = time.process_time()
        first_fetch: float | None = None
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if first_fetch is None and batch:
                first_fetch = time.perf_counter() - started
                first_count = sum(len(r) for r in batch.values())
            for records in batch.values():
                got += len(records)
                if handle is not None:
                    await handle(records)
        elapsed = time.perf_counter() - started
        assert first_fetch is not None
        print(
            f"  first fetch {first_fetch:.3f} s ({first_count} records) of {elapsed:.3f} s",
            file=sys.stderr,
        )
        return elapsed, time.process_time() - cpu
    finally:
        await consumer.stop()


def log_time(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


async def dispatcher_run(
    settings: Settings, n: int, work: Path, emulator_pid: int
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings), "BATCHPIPE_LOG_FORMAT": "json"}
    log_path = work / "dispatcher.log"
    # BENCH_DISPATCHER_WRAP: a command prefix for the worker, e.g. a profiler
    # ("py-spy record -r 200 -f raw -o /tmp/dispatcher.txt --")
    wrap = os.environ.get("BENCH_DISPATCHER_WRAP", "").split()
    proc = subprocess.Popen(
        [*wrap, str(BIN / "batchpipe"), "dispatcher"],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    batches = make_consumer(settings, settings.batches_topic, group_id=None)
    await batches.start()
    peak = 0
    cpu_ready = (0.0, 0.0)
    idle_rss = 0
    try:
        total = nbatches = 0
        deadline = time.monotonic() + 600
        report = time.monotonic() + 5
        while total < n:
            if time.monotonic() > report:
                report = time.monotonic() + 5
                print(f"  {total} of {n} submitted", file=sys.stderr, flush=True)
            if proc.poll() is not None:
                raise RuntimeError(f"dispatcher exited ({proc.returncode}) after {total} requests")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{total} of {n} requests submitted")
            got = await batches.getmany(timeout_ms=200)
            for records in got.values():
                total += sum(decode(BatchRecord, r.value).request_count for r in records)
                nbatches += len(records)
            if not idle_rss and "dispatcher.assigned" in log_path.read_text(errors="replace"):
                idle_rss = rss_kib(proc.pid, "VmRSS")
                cpu_ready = cpu_seconds(proc.pid), tree_cpu_seconds(emulator_pid)
            peak = max(peak, rss_kib(proc.pid, "VmHWM"))
        done_at = time.time()  # the record completing N requests is visible in ``batches``
        cpu_done = cpu_seconds(proc.pid), tree_cpu_seconds(emulator_pid)
        peak = max(peak, rss_kib(proc.pid, "VmHWM"))
    finally:
        await batches.stop()
        # SIGINT to the wrapper and the worker (py-spy writes its profile on SIGINT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT if wrap else signal.SIGTERM)
        proc.wait(30)
    # (Faust's terminal escapes may prefix a line)
    lines = [orjson.loads(x[x.index("{") :]) for x in log_path.read_text().splitlines() if "{" in x]
    assigned = [log_time(x) for x in lines if x.get("event") == "dispatcher.assigned"]
    t0 = assigned[-1]
    planned = [log_time(x) for x in lines if x.get("event") == "dispatch.planned"]
    return {
        "seconds": done_at - t0,
        # the last window: from its cut (planned) to its batch record read here; this part
        # follows the last request read and is the same whatever the number of requests
        "last_window_seconds": round(done_at - planned[-1], 3) if planned else None,
        "batches": nbatches,
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_when_ready_mib": round(idle_rss / 1024, 1),
        # CPU from "ready" (polled, so a little late) to done: the worker, the emulator
        "cpu_seconds": round(cpu_done[0] - cpu_ready[0], 2),
        "emulator_cpu_seconds": round(cpu_done[1] - cpu_ready[1], 2),
    }


async def one_cut_memory(base_url: str, work: Path) -> dict[str, Any]:
    """tracemalloc peak of validating, windowing, cutting, writing, uploading one window.

    The consumed values are made inside the traced region, a fetch (5,000) at a time, as
    exact-size bytes like aiokafka's, and dropped once handled: the window keeps the values
    it needs (it does not copy them), so they count."""
    client = AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=2)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    windows = Windows(max_requests=WINDOW, max_bytes=190_000_000, max_wait=3600)
    cut: list[Window] = []
    for start in range(0, WINDOW, 5000):
        fetched = [bytes(memoryview(request_value(i))) for i in range(start, start + 5000)]
        for offset, value in enumerate(fetched, start):
            result = validate(value, 190_000_000)
            assert isinstance(result, Valid)
            cut += (
                windows.add(
                    endpoint=result.endpoint,
                    model=result.model,
                    custom_id=result.custom_id,
                    line=result.line,
                    position=("requests", 0, offset),
                )
                or ()
            )
        del fetched
    (window,) = cut
    size = window.nbytes
    path = await asyncio.to_thread(write_jsonl, window.lines, work)
    window.release_lines()
    with path.open("rb") as f:
        uploaded = await client.files.create(file=(path.name, f), purpose="batch")
    await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    path.unlink()
    await client.close()
    return {
        "window_jsonl_mib": round(size / 2**20, 1),
        "peak_traced_mib": round((peak - base) / 2**20, 1),
        "peak_over_jsonl": round((peak - base) / size, 2),
    }


@contextlib.asynccontextmanager
async def emulator_at(work: Path, nice: int) -> AsyncIterator[tuple[str, int]]:
    """A fresh emulator (its own data under ``work``): its base URL and pid."""
    work.mkdir(parents=True, exist_ok=True)
    emulator, base_url = start_emulator(work, 600, nice=nice)
    try:
        await wait_http(f"{base_url}/models")
        yield base_url, emulator.pid
    finally:
        emulator.terminate()
        emulator.wait(30)


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        requests_topic=f"bench-requests-{suffix}",
        batches_topic=f"bench-batches-{suffix}",
        results_topic=f"bench-results-{suffix}",
        dead_letters_topic=f"bench-dead-letters-{suffix}",
        topic_partitions=args.partitions,
        batch_max_requests=WINDOW,
        batch_max_wait_seconds=args.wait,
        dispatcher_group_id=f"bench-dispatcher-{suffix}",
        dispatcher_web_port=free_port(),
        dispatcher_session_timeout_seconds=10,
        openai_api_key="bench",
        anthropic_api_key="bench",
        log_level="INFO",
    )
    await ensure_topics(settings)
    await produce_all(settings, args.requests)
    # The raw consumer is measured before the core-only run and after each engine's run: the
    # baseline is the median of those samples (one 0.5 s sample moved by +-25% between runs).
    raws = [await raw_consumer(settings, args.requests)]
    core_seconds, core_cpu = await core_only(settings, args.requests)
    engines: dict[str, Any] = {}
    for engine in args.engines.split(","):
        # each engine against a fresh emulator: one that already holds the other engine's
        # batches (the same custom_ids) spends the second run updating its duplicate counters
        async with emulator_at(work / f"emulator-{engine}", args.emulator_nice) as (url, pid):
            engine_settings = settings.model_copy(
                update={
                    "dispatcher_engine": engine,
                    "dispatcher_group_id": f"bench-dispatcher-{engine}-{suffix}",
                    "batches_topic": f"bench-batches-{engine}-{suffix}",
                    # its own ledger: a shared one would (rightly) skip what the other engine
                    # already submitted from the same requests topic
                    "dispatcher_ledger_topic": f"bench-ledger-{engine}-{suffix}",
                    "openai_base_url": url,
                    "anthropic_base_url": url.removesuffix("/v1"),
                }
            )
            await ensure_topics(engine_settings)
            engines[engine] = await dispatcher_run(
                engine_settings, args.requests, work / engine, pid
            )
        raws.append(await raw_consumer(settings, args.requests))
    memory = None
    if not MODEL[0].startswith("claude-"):  # (the one-cut memory run is OpenAI's upload)
        async with emulator_at(work / "emulator-memory", args.emulator_nice) as (url, _pid):
            memory = await one_cut_memory(url, work)
    raw_seconds, raw_cpu = sorted(raws)[len(raws) // 2]
    raw_rate = args.requests / raw_seconds
    for figures in engines.values():
        figures["rps"] = round(args.requests / figures["seconds"])
        figures["ratio"] = round(args.requests / figures["seconds"] / raw_rate, 3)
    return {
        "requests": args.requests,
        "model": MODEL[0],
        "request_bytes": len(request_value(0)),
        "partitions": args.partitions,
        "raw_consumer_rps": round(raw_rate),
        "raw_consumer_samples_rps": [round(args.requests / seconds) for seconds, _ in raws],
        "raw_consumer_cpu_seconds": round(raw_cpu, 2),
        # the same consumer + Dispatcher.handle_many, no submission (in this process)
        "core_only_rps": round(args.requests / core_seconds),
        "core_only_ratio": round(raw_seconds / core_seconds, 3),
        "core_only_cpu_seconds": round(core_cpu, 2),
        "engines": engines,
        "one_cut_memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--wait", type=float, default=2.0, help="BATCH_MAX_WAIT_SECONDS")
    parser.add_argument(
        "--emulator-nice",
        type=int,
        default=10,
        help="CPU niceness of the emulator (it stands for OpenAI's servers; 0 to share the CPU "
        "equally with the worker)",
    )
    parser.add_argument("--engines", default="faust,aiokafka", help="dispatcher engines to run")
    parser.add_argument(
        "--model",
        default=MODEL[0],
        help="the requests' model: claude-3-5-haiku-latest runs Anthropic windows (staged in "
        "the batch-inputs topic, translated, created inline)",
    )
    args = parser.parse_args()
    MODEL[0] = args.model
    with tempfile.TemporaryDirectory(prefix="bench-dispatcher-") as tmp:
        work = Path(os.environ.get("BENCH_DISPATCHER_WORKDIR") or tmp)
        work.mkdir(parents=True, exist_ok=True)
        bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
        with contextlib.ExitStack() as stack:
            if not bootstrap:
                bootstrap = stack.enter_context(running_kafka(work / "kafka")).bootstrap
            result = asyncio.run(run(args, bootstrap, work))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    for engine, figures in result["engines"].items():
        ok = "OK" if figures["ratio"] >= 0.5 else "BELOW"
        print(f"dispatcher ({engine}) / raw = {figures['ratio']:.0%} (target >= 50%): {ok}")
    print(f"core only (validate + window, no submission) / raw = {result['core_only_ratio']:.0%}")
    mem = result["one_cut_memory"]["peak_over_jsonl"]
    print(f"one-cut peak memory = {mem}x the window's JSONL (target < 3x)")


if __name__ == "__main__":
    main()
