"""Benchmark of the poller: results/s from a completed 50,000-line batch vs a raw producer.

Run: ``.venv/bin/python bench/poller.py`` (about a minute on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``),
with the emulator in its own process (``batchpipe openai-emulator``):

1. a 50,000-line batch is uploaded and created with the official SDK and left to complete;
2. raw: an aiokafka transactional producer (``make_producer``, same config as the poller)
   sends the same 50,000 result messages (built beforehand from the output file, not timed)
   in one transaction, then commits;
3. poller: ``batchpipe poller`` as a subprocess (JSON logs) is given the batch's record; its
   own log timestamps give detect → last result committed (download, classify, produce in
   transactions of ``--chunk`` messages, commit); a read_committed consumer in this process
   confirms all 50,000 are visible exactly once and measures record published → all visible.

Prints results/s of both, the ratio (target ≥ 50%), the poller's peak RSS (VmHWM) and its RSS
before the batch, and the time from the batch being retrievable as completed to its last
result committed (target: < 2 s + the poll interval).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402

from services.poller.classify import outcome_of  # noqa: E402
from services.poller.results import emissions, openai_line_opener  # noqa: E402
from shared.contracts import BatchRecord, encode, key_bytes  # noqa: E402
from shared.kafka import TopicSpec, ensure_topics, make_consumer, make_producer  # noqa: E402
from shared.local_kafka import LocalKafka, free_port  # noqa: E402
from shared.settings import Settings, settings_env  # noqa: E402

BIN = Path(sys.executable).parent


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def input_jsonl(lines: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"bench-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"How can I learn Python? #{i}"}],
                },
            }
        )
        + b"\n"
        for i in range(lines)
    )


async def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Until the poller has joined its group and loaded its state (/readyz 200)."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def create_completed_batch(client: AsyncOpenAI, lines: int) -> tuple[BatchRecord, Any]:
    content = input_jsonl(lines)
    uploaded = await client.files.create(file=("bench.jsonl", content), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        await asyncio.sleep(0.5)
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    record = BatchRecord(
        batch_id=batch.id,
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_count=lines,
        dispatch_id="bench",
        input_bytes=len(content),
        window_opened_at=time.time(),
        submitted_at=batch.created_at,
    )
    return record, batch


async def raw_producer(
    settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    """Seconds for one transaction of ``messages`` to ``topic`` (begin → sends → commit)."""
    producer = make_producer(
        settings,
        transactional_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        linger_ms=10,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        start = time.perf_counter()
        await producer.begin_transaction()
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        await producer.commit_transaction()
        return time.perf_counter() - start
    finally:
        await producer.stop()


def log_times(path: Path, batch_id: str) -> dict[str, float]:
    times: dict[str, float] = {}
    for raw in path.read_text().splitlines():
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("batch_id") != batch_id:
            continue
        name = event.get("event")
        if name in ("batch.following", "batch.ended", "batch.results_committed"):
            times[name] = datetime.fromisoformat(event["timestamp"]).timestamp()
    return times


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    emulator_port = free_port()
    emulator = subprocess.Popen(
        [
            str(BIN / "batchpipe"),
            "openai-emulator",
            "--port",
            str(emulator_port),
            "--processing-seconds",
            "1",
            "--data-dir",
            str(work / "emulator"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "emulator.log").open("wb"),
    )
    poller: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{emulator_port}"
        await wait_http(f"{base}/v1/models")
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            requests_topic=f"bench-requests-{run_id}",
            batches_topic=f"bench-batches-{run_id}",
            results_topic=f"bench-results-{run_id}",
            dead_letters_topic=f"bench-dead-letters-{run_id}",
            poller_state_topic=f"bench-poller-state-{run_id}",
            topic_partitions=6,
            poll_interval_seconds=args.poll_interval,
            poller_txn_max_messages=args.chunk,
            poller_http_port=free_port(),
            openai_base_url=f"{base}/v1",
            openai_api_key="sk-bench",
            log_format="json",
        )
        raw_topic = f"bench-raw-results-{run_id}"
        await ensure_topics(settings)
        await ensure_topics(settings, [TopicSpec(raw_topic, 6, 1)])
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-bench")

        t = time.perf_counter()
        record, batch = await create_completed_batch(client, args.lines)
        print(
            f"batch of {args.lines} lines completed on the emulator in "
            f"{time.perf_counter() - t:.1f}s"
        )

        # The exact messages the poller will publish, built outside the timed section.
        outcome = outcome_of(batch)
        assert outcome is not None
        messages = [
            (key_bytes(e.custom_id), e.value)
            async for e in emissions(
                record, outcome, openai_line_opener(client), max_attempts=3, now=0
            )
        ]
        assert len(messages) == args.lines
        raw_seconds = await raw_producer(settings, raw_topic, messages)
        print(f"raw transactional producer: {args.lines / raw_seconds:,.0f} msg/s")

        # The poller, as a process.
        log = work / "poller.log"
        env = {**os.environ, **settings_env(settings)}
        poller = subprocess.Popen(
            [str(BIN / "batchpipe"), "poller"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        await wait_ready(f"http://127.0.0.1:{settings.poller_http_port}/readyz")
        rss_before = rss_kib(poller.pid, "VmRSS")
        consumer = make_consumer(settings, settings.results_topic, group_id=None)
        await consumer.start()
        producer = make_producer(settings)
        await producer.start()
        published_at = time.time()
        await producer.send_and_wait(
            settings.batches_topic, encode(record), key=key_bytes(record.batch_id)
        )
        await producer.stop()
        seen: set[bytes] = set()
        count = 0
        deadline = time.monotonic() + 120
        while len(seen) < args.lines and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=500)
            for part in got.values():
                for r in part:
                    seen.add(r.key or b"")
                    count += 1
        visible_at = time.time()
        await consumer.stop()
        for _ in range(100):  # the commit is visible before the poller logs it
            times = log_times(log, record.batch_id)
            if "batch.results_committed" in times:
                break
            await asyncio.sleep(0.1)
        peak = rss_kib(poller.pid, "VmHWM")
        poller.terminate()
        # The raw producer again, after the poller (the machine is shared: the faster of the
        # two raw runs is the reference, which makes the ratio conservative).
        raw_again = await raw_producer(settings, raw_topic, messages)
        print(f"raw transactional producer (again): {args.lines / raw_again:,.0f} msg/s")
        raw_rate = args.lines / min(raw_seconds, raw_again)
        del messages
        await client.close()
    finally:
        for proc in (poller, emulator):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert len(seen) == args.lines == count, (len(seen), count)
    publish_seconds = times["batch.results_committed"] - times["batch.ended"]
    poller_rate = args.lines / publish_seconds
    return {
        "lines": args.lines,
        "raw_msgs_per_s": round(raw_rate),
        "raw_runs_msgs_per_s": [round(args.lines / raw_seconds), round(args.lines / raw_again)],
        "poller_results_per_s": round(poller_rate),
        "ratio": round(poller_rate / raw_rate, 3),
        "detect_to_last_committed_s": round(publish_seconds, 2),
        "record_published_to_followed_s": round(times["batch.following"] - published_at, 2),
        "followed_to_completion_seen_s": round(times["batch.ended"] - times["batch.following"], 2),
        "record_published_to_all_visible_s": round(visible_at - published_at, 2),
        "poll_interval_s": args.poll_interval,
        "chunk": args.chunk,
        "poller_rss_before_mib": round(rss_before / 1024, 1),
        "poller_peak_rss_mib": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=5000, help="POLLER_TXN_MAX_MESSAGES")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-poller-") as tmp:
        work = Path(os.environ.get("BENCH_POLLER_WORKDIR") or tmp)
        work.mkdir(parents=True, exist_ok=True)
        bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
        broker = None
        if not bootstrap:
            broker = LocalKafka(data_dir=work / "kafka", port=free_port())
            broker_log = (work / "kafka.log").open("wb")
            broker.start(stdout=broker_log.fileno())
            broker.wait_ready(timeout=90)
            bootstrap = broker.bootstrap
        try:
            result = asyncio.run(run(args, bootstrap, work))
        finally:
            if broker is not None:
                broker.stop()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    ok = result["ratio"] >= 0.5
    print(f"poller / raw = {result['ratio']:.0%} (target >= 50%): {'OK' if ok else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
