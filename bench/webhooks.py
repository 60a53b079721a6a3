"""Benchmark of batch webhooks: time from a batch's end to its last result committed, and
``batches.retrieve`` calls per batch, with webhooks (poll interval 300 s) vs polling at 1 s.

Run: ``.venv/bin/python bench/webhooks.py`` (about 2 minutes). On one broker (a ``LocalKafka``
started here, or ``BATCHPIPE_BENCH_KAFKA_BOOTSTRAP``), for each mode, with fresh topics, the
emulator (``batchpipe emulator``) and the poller (``batchpipe poller``) each in their own
process:

1. ``--batches`` batches of ``--lines`` lines are created with the official SDK, each batch's
   record published to ``batches`` right after its create; the emulator keeps each one
   ``in_progress`` for ``--processing-seconds``;
2. webhooks mode: the emulator sends its signed ``batch.completed`` events to the poller's
   ``POST /webhooks/openai``, the poller polls every 300 s; polling mode: no webhooks, the
   poller polls every 1 s (both jittered ±20%, the poller's default);
3. a read_committed consumer here notes when each batch's last result becomes visible; the
   emulator says when the batch ended (``GET /_emulator/batches/{id}/ended``, float seconds;
   it is never asked with ``batches.retrieve``, so the emulator's ``calls`` count the poller's
   retrieves alone).

Prints per mode the median, p90 and max of "batch ended → last result committed", and the
retrieve calls per batch; ``--json`` for the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from batchpipe.devtools.emulator.webhooks import new_secret  # noqa: E402
from batchpipe.devtools.local_kafka import free_port, running_kafka  # noqa: E402
from batchpipe.services.poller.webhooks import WEBHOOK_PATH  # noqa: E402
from batchpipe.shared.contracts import (  # noqa: E402
    BatchRecord,
    ResultMessage,
    decode,
    encode,
    key_bytes,
)
from batchpipe.shared.kafka import ensure_topics, make_consumer, make_producer  # noqa: E402
from batchpipe.shared.settings import Settings, settings_env  # noqa: E402
from bench.support import BIN, wait_http  # noqa: E402

MODES = {"webhooks": 300.0, "polling": 1.0}  # mode -> poll interval (seconds)


def input_jsonl(prefix: str, lines: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
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


def start_emulator(
    work: Path, processing_seconds: float, webhook_url: str | None, secret: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [
        str(BIN / "batchpipe"),
        "emulator",
        "--port",
        str(port),
        "--processing-seconds",
        str(processing_seconds),
        "--data-dir",
        str(work / "emulator"),
    ]
    if webhook_url is not None:
        argv += ["--webhook-url", webhook_url]
    process = subprocess.Popen(
        argv,
        env=os.environ | {"BATCHPIPE_EMULATOR_WEBHOOK_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=(work / "emulator.log").open("wb"),
    )
    return process, f"http://127.0.0.1:{port}"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run_mode(args: argparse.Namespace, mode: str, bootstrap: str, work: Path) -> Any:
    work.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    poller_port = free_port()
    webhook_url = f"http://127.0.0.1:{poller_port}{WEBHOOK_PATH}" if mode == "webhooks" else None
    emulator, root = start_emulator(work, args.processing_seconds, webhook_url, secret)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        requests_topic=f"bench-requests-{tag}",
        batches_topic=f"bench-batches-{tag}",
        results_topic=f"bench-results-{tag}",
        dead_letters_topic=f"bench-dead-letters-{tag}",
        poller_state_topic=f"bench-poller-state-{tag}",
        topic_partitions=3,
        openai_base_url=f"{root}/v1",
        openai_api_key=SecretStr("sk-bench"),
        poll_interval_seconds=MODES[mode],
        poller_http_port=poller_port,
        openai_webhook_secret=SecretStr(secret) if mode == "webhooks" else None,
        log_format="json",
    )
    await ensure_topics(settings)
    poller: subprocess.Popen[bytes] | None = None
    consumer = make_consumer(settings, settings.results_topic, group_id=None, fetch_max_wait_ms=50)
    producer = make_producer(settings)
    client = AsyncOpenAI(base_url=f"{root}/v1", api_key="sk-bench")
    http = httpx.AsyncClient(base_url=root, timeout=10)
    try:
        await wait_http(f"{root}/_emulator/healthz")
        poller = subprocess.Popen(
            [str(BIN / "batchpipe"), "poller"],
            env={**os.environ, **settings_env(settings)},
            stdout=(work / "poller.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        await wait_http(f"http://127.0.0.1:{poller_port}/readyz", 60, lambda s: s == 200)
        await consumer.start()
        await producer.start()
        last_seen: dict[str, float] = {}
        seen = 0
        total = args.batches * args.lines

        async def consume() -> None:
            nonlocal seen
            while seen < total:
                fetched = await consumer.getmany(timeout_ms=200)
                now = time.time()
                for records in fetched.values():
                    for msg in records:
                        result = decode(ResultMessage, msg.value or b"")
                        if result.batch_id is not None:
                            last_seen[result.batch_id] = now
                        seen += 1

        reading = asyncio.create_task(consume())
        batch_ids = []
        for b in range(args.batches):
            content = input_jsonl(f"{mode}-{b}", args.lines)
            uploaded = await client.files.create(file=("in.jsonl", content), purpose="batch")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            record = BatchRecord(
                batch_id=batch.id,
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                model="gpt-4o-mini",
                request_count=args.lines,
                dispatch_id=f"bench-{tag}-{b}",
                input_bytes=len(content),
                window_opened_at=time.time(),
                submitted_at=batch.created_at,
            )
            await producer.send_and_wait(
                settings.batches_topic, encode(record), key=key_bytes(batch.id)
            )
            batch_ids.append(batch.id)
        await asyncio.wait_for(reading, args.processing_seconds + MODES[mode] * 2 + 120)
        latencies = []
        for batch_id in batch_ids:
            ended = (await http.get(f"/_emulator/batches/{batch_id}/ended")).json()["ended_at"]
            latencies.append(last_seen[batch_id] - float(ended))
        stats = (await http.get("/_emulator/stats")).json()
        retrieves = int(stats["calls"].get("openai.batches.retrieve", 0))
        return {
            "mode": mode,
            "poll_interval_seconds": MODES[mode],
            "batches": args.batches,
            "lines_per_batch": args.lines,
            "end_to_last_result_seconds": {
                "median": statistics.median(latencies),
                "p90": percentile(latencies, 0.9),
                "max": max(latencies),
                "min": min(latencies),
            },
            "retrieves_per_batch": retrieves / args.batches,
            "webhooks": stats["webhooks"],
        }
    finally:
        await http.aclose()
        await client.close()
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        for process in (poller, emulator):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def table(results: list[Any]) -> str:
    rows = [
        "| mode | poll interval | end → last result committed: median / p90 / max | "
        "retrieves per batch |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lat = r["end_to_last_result_seconds"]
        rows.append(
            f"| {r['mode']} | {r['poll_interval_seconds']:g} s | "
            f"{lat['median'] * 1000:.0f} / {lat['p90'] * 1000:.0f} / {lat['max'] * 1000:.0f} ms | "
            f"{r['retrieves_per_batch']:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--processing-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the raw figures too")
    parser.add_argument("--keep", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        work = args.keep or Path(tmp)
        with contextlib.ExitStack() as stack:
            bootstrap = os.environ.get("BATCHPIPE_BENCH_KAFKA_BOOTSTRAP")
            if not bootstrap:
                bootstrap = stack.enter_context(running_kafka(work / "kafka")).bootstrap

            async def both() -> list[Any]:
                return [await run_mode(args, mode, bootstrap, work / mode) for mode in MODES]

            results = asyncio.run(both())
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(table(results))


if __name__ == "__main__":
    main()
