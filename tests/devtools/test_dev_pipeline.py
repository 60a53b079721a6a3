"""``batchpipe dev`` for real, as a user runs it: the original curl payload → two results.

Starts the whole pipeline (its own Kafka, the emulator, ingest, dispatcher, poller) on free
ports in a temporary state dir, POSTs the product's original example, reads the results
topic (read_committed) and stops everything with SIGINT, as Ctrl-C would.
"""

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

from batchpipe.devtools.local_kafka import free_port
from batchpipe.services.cli.results import stream_results
from tests.conftest import make_test_settings

SEED = {
    "data": [
        [{"role": "user", "content": "How can I learn Python?"}],
        [{"role": "user", "content": "Who is the first president of the United States?"}],
    ]
}


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_make_dev_then_the_original_curl_yields_two_results(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("kafka", "ingest", "emulator", "poller", "dispatcher")}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    log = (tmp_path / "dev.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHPIPE_", "OPENAI_"))}
    script = Path(sys.executable).parent / "batchpipe"
    dev = subprocess.Popen(
        [str(script), "dev", "--data-dir", str(tmp_path / "state"), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    dev_log = tmp_path / "dev.log"
    try:
        deadline = time.monotonic() + 150
        while b"Ctrl-C stops everything" not in dev_log.read_bytes():
            assert dev.poll() is None, dev_log.read_text()
            assert time.monotonic() < deadline, dev_log.read_text()[-5000:]
            time.sleep(0.5)
        posted = time.monotonic()
        answer = httpx.post(f"http://127.0.0.1:{ports['ingest']}/requests", json=SEED, timeout=30)
        assert answer.status_code == 202, answer.text
        ids = answer.json()["ids"]
        settings = make_test_settings(
            f"127.0.0.1:{ports['kafka']}",
            requests_topic="requests",
            batches_topic="batches",
            results_topic="results",
            dead_letters_topic="dead-letters",
        )
        results: list[dict[str, Any]] = []

        async def read() -> None:
            stop = asyncio.Event()

            def collect(value: bytes) -> None:
                results.append(orjson.loads(value))
                if len(results) >= 2:
                    stop.set()

            await asyncio.wait_for(
                stream_results(
                    settings, collect, follow=True, group_id="", stop=stop, from_beginning=True
                ),
                60,
            )

        asyncio.run(read())
        waited = time.monotonic() - posted
        print(f"POST -> 2 results in {waited:.1f}s")
        assert sorted(r["custom_id"] for r in results) == sorted(ids)
        assert all(r["status"] == "succeeded" for r in results)
        assert waited < 60
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            code = dev.wait(90)
        except subprocess.TimeoutExpired:
            dev.kill()
            raise
        log.close()
    text = dev_log.read_text()
    assert code == 0, text[-5000:]
    assert "!!!" not in text, text[-5000:]
    assert "kafka stopped (code 0)" in text and "all stopped" in text
