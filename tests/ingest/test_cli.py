"""``batchpipe ingest`` as a real process (uvicorn, 2 workers): the seed's curl example, run
verbatim (only the port differs), lands on the topic; every ``/metrics`` scrape reports the
whole service; SIGTERM stops the service cleanly."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.settings import Settings, settings_env
from tests.conftest import ConsumerFactory
from tests.ingest.conftest import SEED_CURL_BODY, SEED_HEADERS
from tests.support import drain

# The curl command of ../shared/reference/original-sample.md, character for character.
SEED_CURL = """curl -X 'POST' \\
  'http://127.0.0.1:8000/requests' \\
  -H 'accept: application/json' \\
  -H 'Content-Type: application/json' \\
  -d '{
        "data": [
            [
                {
                    "role": "user",
                    "content": "How can I learn Python?"
                }
            ],
            [
                {
                    "role": "user",
                    "content": "Who is the first president of the United States?"
                }
            ]
        ]
   }'"""


async def wait_ready(base_url: str, process: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            assert process.returncode is None, "batchpipe ingest exited early"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"batchpipe ingest not ready within {timeout}s")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_seed_curl_verbatim_against_batchpipe_ingest(
    settings: Settings, consumer_factory: ConsumerFactory
) -> None:
    port = free_port()
    env = {**os.environ, **settings_env(settings), "BATCHPIPE_LOG_FORMAT": "json"}
    batchpipe = str(Path(sys.executable).with_name("batchpipe"))
    process = await asyncio.create_subprocess_exec(
        batchpipe, "ingest", "--port", str(port), "--workers", "2", env=env
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}", process, timeout=60)
        command = SEED_CURL.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        curl = await asyncio.create_subprocess_exec(
            "bash", "-c", command, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await curl.communicate()
        assert curl.returncode == 0
        answer = orjson.loads(out)
        assert answer["status"] == "success" and answer["accepted"] == 2

        consumer = await consumer_factory(settings.requests_topic)
        records = await drain(consumer, 2, settle=0.5)
        lines = [decode(RequestLine, r.value) for r in records]
        assert sorted(line.custom_id for line in lines) == sorted(answer["ids"])
        assert {r.key for r in records} == {i.encode() for i in answer["ids"]}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0


ACCEPTED = "batchpipe_ingest_items_accepted_total"


def accepted_by_pid(run_dir: Path) -> dict[int, float]:
    """Each worker's own accepted count, read from its counter file of the run's directory."""
    counts: dict[int, float] = {}
    for file in run_dir.glob("counter_*.db"):
        pid = int(file.stem.removeprefix("counter_"))
        metrics = MultiProcessCollector.merge([str(file)])  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            s.value for m in metrics for s in m.samples if s.name == ACCEPTED and not s.labels
        )
    return counts


def scraped(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text."""
    values = [float(line.split()[1]) for line in text.splitlines() if line.split(" ", 1)[0] == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


@pytest.mark.slow
async def test_every_metrics_scrape_reports_all_workers(settings: Settings, tmp_path: Path) -> None:
    """``--workers 2``: both workers accept POSTs, and every scrape, whichever worker serves it,
    reports the sum, also once a worker has been killed; the run's metrics directory is private
    to it and removed at exit."""
    parent = tmp_path / "prometheus"
    parent.mkdir()
    stale = parent / "counter_1.db"  # not the run's: never read, never removed
    stale.write_bytes(b"")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **settings_env(settings),
        "BATCHPIPE_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(parent),
    }
    batchpipe = str(Path(sys.executable).with_name("batchpipe"))
    process = await asyncio.create_subprocess_exec(
        batchpipe, "ingest", "--port", str(port), "--workers", "2", env=env
    )

    async def post() -> int:
        # A client per POST: a fresh connection, which either worker may accept.
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            answer = await client.post("/requests", content=SEED_CURL_BODY, headers=SEED_HEADERS)
        assert answer.status_code == 202, answer.text
        return int(answer.json()["accepted"])

    try:
        await wait_ready(base_url, process, timeout=60)
        [run_dir] = [p for p in parent.iterdir() if p.is_dir()]
        assert run_dir.stat().st_mode & 0o777 == 0o700
        total = 0
        deadline = time.monotonic() + 30
        while True:
            total += sum(await asyncio.gather(*(post() for _ in range(8))))
            per_worker = accepted_by_pid(run_dir)
            if len(per_worker) == 2 and all(per_worker.values()):
                break
            assert time.monotonic() < deadline, f"one worker served every POST: {per_worker}"
        assert sum(per_worker.values()) == total

        for _ in range(20):
            async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
                answer = await client.get("/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            assert scraped(answer.text, ACCEPTED) == total
            assert scraped(answer.text, "batchpipe_ingest_requests_in_flight") == 0

        # A worker killed without a shutdown: the parent removes its live gauge; uvicorn
        # replaces it; its counts stay in the total.
        victim = min(per_worker)
        live_gauge = run_dir / f"gauge_livesum_{victim}.db"
        assert live_gauge.exists()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while live_gauge.exists():
            assert time.monotonic() < deadline, "the dead worker's live gauge stayed"
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
            answer = await client.get("/metrics")
        assert scraped(answer.text, ACCEPTED) == total
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert not run_dir.exists()
    assert stale.exists()
