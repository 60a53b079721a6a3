"""``batchpipe poller`` as a process: ready, ``batchpipe status`` (table and --json), SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import settings_env

from .harness import create_batch, lines_for, poller_settings, publish_batches

BATCHPIPE = str(Path(sys.executable).parent / "batchpipe")


async def wait_ready(url: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready")


@pytest.mark.timeout(90)
async def test_poller_process_status_and_clean_sigterm(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any, tmp_path: Path
) -> None:
    settings = await poller_settings(kafka_bootstrap, emulator, poll_interval_seconds=0.5)
    client = make_openai(settings)
    emulator.set_faults(processing_seconds=30.0)
    batch = await create_batch(client, lines_for("cli", 4))
    await client.close()
    log = (tmp_path / "poller.log").open("wb")
    proc = subprocess.Popen(
        [BATCHPIPE, "poller"], env={**os.environ, **settings_env(settings)}, stdout=log, stderr=log
    )
    try:
        url = f"http://127.0.0.1:{settings.poller_http_port}"
        await wait_ready(f"{url}/readyz")
        await publish_batches(await producer_factory(), settings, [batch])
        doc: dict[str, Any] = {}
        for _ in range(50):
            out = subprocess.run(
                [BATCHPIPE, "status", "--url", url, "--json"], capture_output=True, check=True
            )
            doc = orjson.loads(out.stdout)
            if doc["batches"] and doc["batches"][0]["status"] == "in_progress":
                break
            await asyncio.sleep(0.2)
        assert doc["totals"]["in_flight"] == 1
        entry = doc["batches"][0]
        assert (entry["batch_id"], entry["model"], entry["request_count"]) == (
            batch.batch_id,
            "gpt-4o-mini",
            4,
        )
        assert entry["status"] == "in_progress" and entry["request_counts"]["total"] == 4
        costs = doc["costs"]  # nothing published yet: zero totals, the price table's date
        assert costs["total"]["results"] == 0 and costs["prices"]["as_of"]
        table = subprocess.run(
            [BATCHPIPE, "status", "--url", url],
            capture_output=True,
            check=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout
        assert batch.batch_id in table and "in_progress" in table and "in flight: 1" in table
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "poller.stopped" in (tmp_path / "poller.log").read_text()
    down = subprocess.run([BATCHPIPE, "status", "--url", url], capture_output=True, text=True)
    assert down.returncode == 1 and "batchpipe status" in down.stderr
