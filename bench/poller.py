"""Benchmark of the poller: results/s from a completed 50,000-line batch vs a raw producer.

Run: ``.venv/bin/python bench/poller.py`` (about a minute on 2 cores). In one run, on one
machine and one broker (a ``LocalKafka`` started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``),
with the emulator (``batchpipe openai-emulator``) and the poller (``batchpipe poller``, JSON
logs) each in their own process, ``--rounds`` (3) times:

1. a 50,000-line batch is uploaded and created with the official SDK and left to complete;
2. raw: an aiokafka transactional producer (``make_producer``, the poller's linger/batch size)
   sends the same 50,000 result messages (built beforehand from the output file, not timed) in
   one transaction and commits (``raw_send_batch``, for reference only: the same with the
   poller's per-partition ``send_batch`` record batches, i.e. the Kafka part of the poller);
3. poller: the batch's record is published to ``batches``; the poller's own log timestamps
   give "completion seen" (``batch.ended``) → last result committed
   (``batch.results_committed``): download, classify, produce in transactions of ``--chunk``
   messages with their progress records, commit. A read_committed consumer here checks that
   all 50,000 custom_ids are visible exactly once.

``--provider anthropic``: the batch is an Anthropic one (staged inputs, inline create, results
mapped back to the users' ids); the raw baseline sends the same messages.

Prints each round and the medians: results/s of both and their ratio (target ≥ 50%), the
time from the batch's completion being seen to its last result committed (target: < 2 s; the
poll interval comes on top), and the poller's RSS idle and peak (VmHWM).
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
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402

from batchpipe.devtools.local_kafka import free_port, running_kafka  # noqa: E402
from batchpipe.services.poller.record_batcher import RecordBatcher  # noqa: E402
from batchpipe.services.poller.results import emissions  # noqa: E402
from batchpipe.shared.contracts import BatchRecord, encode, key_bytes  # noqa: E402
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer  # noqa: E402
from batchpipe.shared.providers.anthropic import AnthropicProvider  # noqa: E402
from batchpipe.shared.providers.base import (  # noqa: E402
    BatchOutcome,
    BatchProvider,
    CreateRequest,
)
from batchpipe.shared.providers.files_api import outcome_of  # noqa: E402
from batchpipe.shared.providers.openai import OpenAIProvider  # noqa: E402
from batchpipe.shared.settings import Settings, settings_env  # noqa: E402
from batchpipe.shared.topics import TopicSpec  # noqa: E402
from bench.support import BIN, rss_kib, start_emulator, wait_http  # noqa: E402

ANTHROPIC_MODEL = "claude-3-5-haiku-latest"


def input_jsonl(lines: int, model: str = "gpt-4o-mini") -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"bench-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": f"How can I learn Python? #{i}"}],
                },
            }
        )
        + b"\n"
        for i in range(lines)
    )


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


async def create_completed_anthropic_batch(
    provider: AnthropicProvider, lines: int, work: Path
) -> tuple[BatchRecord, BatchOutcome]:
    """The same batch through the Anthropic provider: staged in the batch-inputs topic,
    created inline (translated), followed to its end."""
    content = input_jsonl(lines, ANTHROPIC_MODEL)
    path = work / f"bench-{uuid.uuid4().hex[:8]}.jsonl"
    path.write_bytes(content)
    dispatch_id = f"bench-{uuid.uuid4().hex[:8]}"
    staged = await provider.stage(path, dispatch_id)
    submitted = await provider.create(
        CreateRequest(
            dispatch_id=dispatch_id,
            endpoint="/v1/chat/completions",
            model=ANTHROPIC_MODEL,
            path=path,
            staged=staged,
            request_count=lines,
            tags={},
        )
    )
    path.unlink()
    while (progress := await provider.retrieve(submitted.batch_id)).outcome is None:
        await asyncio.sleep(0.5)
    assert progress.outcome.status == "completed", progress
    record = BatchRecord(
        batch_id=submitted.batch_id,
        provider="anthropic",
        input_file_id=staged,
        endpoint="/v1/chat/completions",
        model=ANTHROPIC_MODEL,
        request_count=lines,
        dispatch_id=dispatch_id,
        input_bytes=len(content),
        window_opened_at=time.time(),
        submitted_at=submitted.created_at,
    )
    return record, progress.outcome


async def raw_producer(
    settings: Settings, topic: str, messages: list[tuple[bytes, bytes]], *, batched: bool = False
) -> float:
    """Seconds for one transaction of ``messages`` to ``topic`` (begin → sends → commit);
    ``batched``: with the poller's own per-partition record batches instead of ``send()``."""
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
        if batched:
            batcher = RecordBatcher(producer)
            for key, value in messages:
                await batcher.add(topic, key, value, [])
            futures = await batcher.submit()
        else:
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
    emulator, base_url = start_emulator(work, 1)
    poller: subprocess.Popen[bytes] | None = None
    try:
        await wait_http(f"{base_url}/models")
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
            openai_base_url=base_url,
            openai_api_key="sk-bench",
            anthropic_base_url=base_url.removesuffix("/v1"),
            anthropic_api_key="sk-bench",
            log_format="json",
        )
        raw_topic = f"bench-raw-results-{run_id}"
        await ensure_topics(settings)
        await ensure_topics(settings, [TopicSpec(raw_topic, 6, 1)])
        client = AsyncOpenAI(base_url=base_url, api_key="sk-bench")
        provider: BatchProvider = (
            AnthropicProvider.from_settings(settings)
            if args.provider == "anthropic"
            else OpenAIProvider(client)
        )

        # The poller, as a process, followed over several rounds.
        log = work / "poller.log"
        env = {**os.environ, **settings_env(settings)}
        poller = subprocess.Popen(
            [str(BIN / "batchpipe"), "poller"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        # until the poller has joined its group and loaded its state
        await wait_http(
            f"http://127.0.0.1:{settings.poller_http_port}/readyz",
            timeout=60,
            ok=lambda status: status == 200,
        )
        rss_before = rss_kib(poller.pid, "VmRSS")
        consumer = make_consumer(settings, settings.results_topic, group_id=None)
        await consumer.start()
        producer = make_producer(settings)
        await producer.start()
        rounds: list[dict[str, Any]] = []
        for number in range(1, args.rounds + 1):
            t = time.perf_counter()
            if isinstance(provider, AnthropicProvider):
                record, outcome = await create_completed_anthropic_batch(provider, args.lines, work)
            else:
                record, batch = await create_completed_batch(client, args.lines)
                found = outcome_of(batch)
                assert found is not None
                outcome = found
            created = time.perf_counter() - t
            # The exact messages the poller will publish, built outside the timed section.
            messages = [
                (key_bytes(e.custom_id), e.value)
                async for e in emissions(record, outcome, provider, max_attempts=3, now=0)
            ]
            assert len(messages) == args.lines
            raw_seconds = await raw_producer(settings, raw_topic, messages)
            batched_seconds = await raw_producer(settings, raw_topic, messages, batched=True)
            del messages

            published_at = time.time()
            await producer.send_and_wait(
                settings.batches_topic, encode(record), key=key_bytes(record.batch_id)
            )
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
            assert len(seen) == args.lines == count, (len(seen), count)  # exactly once
            times: dict[str, float] = {}
            for _ in range(100):  # the commit is visible before the poller logs it
                times = log_times(log, record.batch_id)
                if "batch.results_committed" in times:
                    break
                await asyncio.sleep(0.1)
            publish = times["batch.results_committed"] - times["batch.ended"]
            result = {
                "round": number,
                "raw_msgs_per_s": round(args.lines / raw_seconds),
                "raw_send_batch_msgs_per_s": round(args.lines / batched_seconds),
                "poller_results_per_s": round(args.lines / publish),
                "ratio": round(raw_seconds / publish, 3),
                "completion_seen_to_last_committed_s": round(publish, 2),
                "record_published_to_all_visible_s": round(visible_at - published_at, 2),
                "batch_created_and_completed_s": round(created, 1),
            }
            print(orjson.dumps(result).decode(), flush=True)
            rounds.append(result)
        peak = rss_kib(poller.pid, "VmHWM")
        await producer.stop()
        await consumer.stop()
        await client.close()
        await provider.close()
    finally:
        for proc in (poller, emulator):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in rounds))

    return {
        "provider": args.provider,
        "lines": args.lines,
        "rounds": args.rounds,
        "chunk": args.chunk,
        "poll_interval_s": args.poll_interval,
        "median_raw_msgs_per_s": median("raw_msgs_per_s"),
        "median_raw_send_batch_msgs_per_s": median("raw_send_batch_msgs_per_s"),
        "median_poller_results_per_s": median("poller_results_per_s"),
        "median_ratio": median("ratio"),
        "median_completion_seen_to_last_committed_s": median("completion_seen_to_last_committed_s"),
        "median_record_published_to_all_visible_s": median("record_published_to_all_visible_s"),
        "poller_rss_idle_mib": round(rss_before / 1024, 1),
        "poller_peak_rss_mib": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument(
        "--provider",
        choices=("openai", "anthropic"),
        default="openai",
        help="anthropic: the batch is an Anthropic one (inline, staged inputs, results mapped)",
    )
    parser.add_argument("--chunk", type=int, default=5000, help="POLLER_TXN_MAX_MESSAGES")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="raw + poller rounds (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-poller-") as tmp:
        work = Path(os.environ.get("BENCH_POLLER_WORKDIR") or tmp)
        work.mkdir(parents=True, exist_ok=True)
        bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
        with contextlib.ExitStack() as stack:
            if not bootstrap:
                bootstrap = stack.enter_context(running_kafka(work / "kafka")).bootstrap
            result = asyncio.run(run(args, bootstrap, work))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    ratio = result["median_ratio"]
    verdict = "OK" if ratio >= 0.5 else "BELOW TARGET"
    print(f"poller / raw = {ratio:.0%} (median of {args.rounds}; target >= 50%): {verdict}")


if __name__ == "__main__":
    main()
