"""Health, readiness and metrics routes, and the OpenAI client factory."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.ops_http import ops_app, serve_in_background
from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import Settings, SettingsError


async def test_ops_routes_over_real_http() -> None:
    registry = CollectorRegistry()
    Counter("things_total", "things", registry=registry).inc(3)
    healthy = {"ok": True}

    async def kafka_ready() -> bool:
        return healthy["ok"]

    async def broken() -> bool:
        raise ConnectionError("down")

    port = free_port()
    app = ops_app("t", {"kafka": kafka_ready}, registry)
    server, task = await serve_in_background(app, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"kafka": True}
            healthy["ok"] = False
            assert (await client.get("/readyz")).status_code == 503
            assert "things_total 3.0" in (await client.get("/metrics")).text
    finally:
        server.should_exit = True
        await task

    app2 = ops_app("t2", {"broken": broken}, registry)
    port2 = free_port()
    server2, task2 = await serve_in_background(app2, "127.0.0.1", port2)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port2}") as client:
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["checks"] == {"broken": False}
    finally:
        server2.should_exit = True
        await task2


def test_openai_client_needs_a_key_and_uses_the_base_url() -> None:
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        make_openai(Settings(openai_api_key=None))
    client = make_openai(
        Settings(openai_api_key="sk-x", openai_base_url="http://127.0.0.1:8100/v1")
    )
    assert str(client.base_url) == "http://127.0.0.1:8100/v1/"
    assert client.max_retries == 5
