"""Slow clients at ingest's door, against ``batchpipe ingest`` as a process on the real broker:
a connection that sends nothing, headers sent a byte at a time and a body sent a byte at a time
are each answered 408 and disconnected at their deadline, while other clients (and a keep-alive
connection's second request) are answered 202 meanwhile."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.settings import Settings, settings_env
from tests.e2e.harness import BATCHPIPE, ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

BODY = orjson.dumps({"data": [[{"role": "user", "content": "How can I learn Python?"}]]})
TIMEOUT = 1.5  # the header and body deadlines set for the test


def post(body: bytes = BODY) -> bytes:
    return (
        b"POST /requests HTTP/1.1\r\nhost: ingest\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


@pytest.fixture
def ingest_port(settings: Settings, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BATCHPIPE_", "OPENAI_"))
    } | settings_env(
        settings.model_copy(
            update={
                "ingest_header_timeout_seconds": TIMEOUT,
                "ingest_body_timeout_seconds": TIMEOUT,
            }
        )
    )
    process = ServiceProcess(
        "ingest",
        [*BATCHPIPE, "ingest", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "ingest.log",
        f"http://127.0.0.1:{port}/readyz",
    )
    process.start()
    try:
        process.wait_ready(60)
        yield port
    finally:
        assert process.stop() in (0, -15, 143, None), process.log_tail()


async def test_slow_clients_time_out_and_the_others_are_answered(ingest_port: int) -> None:
    port = ingest_port

    async def idle() -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, _ = await read_response(reader)
        assert await reader.read() == b""  # closed
        writer.close()
        return status, time.monotonic() - started

    async def trickle(writer: asyncio.StreamWriter, data: bytes, answer: asyncio.Task[Any]) -> None:
        """``data`` a byte every 0.2 s, until the server has answered."""
        try:
            for byte in data:
                if answer.done():
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass

    async def slow_headers() -> tuple[int, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.create_task(read_response(reader))
        await trickle(writer, post(), answer)
        status, _ = await answer
        writer.close()
        return status, time.monotonic() - started

    async def slow_body() -> tuple[int, bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = post()
        split = request.index(b"\r\n\r\n") + 4
        writer.write(request[:split])
        await writer.drain()
        started = time.monotonic()
        answer = asyncio.create_task(read_response(reader))
        await trickle(writer, request[split:], answer)
        status, body = await answer
        assert await reader.read() == b""  # closed after the 408
        writer.close()
        return status, body, time.monotonic() - started

    async def keep_alive_twice() -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        statuses = []
        for _ in range(2):
            writer.write(post())
            await writer.drain()
            statuses.append((await read_response(reader))[0])
            await asyncio.sleep(TIMEOUT * 1.5)  # idle between requests: keep-alive's business
        writer.close()
        return statuses

    async def normal_clients() -> list[int]:
        statuses = []
        deadline = time.monotonic() + TIMEOUT * 2
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            await writer.drain()
            statuses.append((await read_response(reader))[0])
            writer.close()
            await asyncio.sleep(0.05)
        return statuses

    (
        (idle_status, idle_s),
        (slow_status, slow_s),
        (body_status, body, body_s),
        keep,
        normal,
    ) = await asyncio.gather(
        idle(), slow_headers(), slow_body(), keep_alive_twice(), normal_clients()
    )
    assert idle_status == 408 and TIMEOUT * 0.9 < idle_s < TIMEOUT + 2
    assert slow_status == 408 and TIMEOUT * 0.9 < slow_s < TIMEOUT + 2
    assert body_status == 408 and TIMEOUT * 0.9 < body_s < TIMEOUT + 2
    assert orjson.loads(body)["status"] == "error" and "body not received" in body.decode()
    assert keep == [202, 202]  # the guard never cuts a request whose headers came in time
    assert normal and set(normal) == {202}, normal
