"""``batchpipe ingest`` as a real process (uvicorn, 2 workers): the seed's curl example, run
verbatim (only the port differs), lands on the topic; SIGTERM stops the service cleanly."""

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

from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.settings import Settings, settings_env
from tests.conftest import ConsumerFactory
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
