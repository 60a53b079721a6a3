"""How ingest's metrics add up over worker processes (``worker_metrics``), without a broker.

prometheus_client decides at import whether a process keeps its values in files, so each
"worker" here is a fresh Python process started with ``PROMETHEUS_MULTIPROC_DIR`` set."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from typer.testing import CliRunner

from batchpipe.services.cli import app
from batchpipe.services.ingest.app import create_app
from batchpipe.services.ingest.worker_metrics import (
    DIR_PREFIX,
    MULTIPROC_ENV,
    metrics_directory,
    metrics_registries,
    sweep_dead_workers,
)
from batchpipe.shared.settings import Settings

# One worker: its app counts `accepted` items and one POST in flight, then it scrapes /metrics
# (through the app, in process) and prints the body.
WORKER = """
import asyncio, sys
import httpx
from batchpipe.services.ingest.app import create_app
from batchpipe.shared.settings import Settings

async def main(accepted: int) -> None:
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9"))
    app.state.metrics.items_accepted.inc(accepted)
    app.state.metrics.in_flight.inc()
    app.state.metrics.publish_seconds.observe(0.003)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    print(answer.text)

asyncio.run(main(int(sys.argv[1])))
"""

# One worker whose lifespan ends: its live gauge files go with it, its counters stay.
SHUTDOWN = """
import asyncio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from batchpipe.services.ingest.worker_metrics import mark_dead_at_shutdown

async def main() -> None:
    registry = CollectorRegistry()
    Gauge("g", "g", registry=registry, multiprocess_mode="livesum").inc()
    Counter("c", "c", registry=registry).inc()
    app = mark_dead_at_shutdown(FastAPI())
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
"""


def run_worker(directory: Path, code: str, *args: str) -> str:
    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def sample(text: str, name: str) -> float | None:
    values = [float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] == name]
    assert len(values) <= 1, values
    return values[0] if values else None


def collect(directory: Path) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


def test_a_workers_metrics_report_every_worker(tmp_path: Path) -> None:
    run_worker(tmp_path, WORKER, "3")
    text = run_worker(tmp_path, WORKER, "4")

    assert sample(text, "batchpipe_ingest_items_accepted_total") == 7
    assert sample(text, "batchpipe_ingest_publish_seconds_count") == 2
    assert sample(text, 'batchpipe_ingest_publish_seconds_bucket{le="0.005"}') == 2
    # Both processes exited without a shutdown: their in-flight counts stay until swept.
    assert sample(text, "batchpipe_ingest_requests_in_flight") == 2
    assert "pid=" not in text

    assert len(sweep_dead_workers(tmp_path)) == 2
    after = collect(tmp_path)
    assert sample(after, "batchpipe_ingest_requests_in_flight") is None
    assert sample(after, "batchpipe_ingest_items_accepted_total") == 7


def test_a_worker_shutdown_removes_its_live_gauges_only(tmp_path: Path) -> None:
    run_worker(tmp_path, SHUTDOWN)
    names = [p.name for p in tmp_path.iterdir()]
    assert [n for n in names if n.startswith("counter_")]
    assert not [n for n in names if n.startswith("gauge_")]
    assert sample(collect(tmp_path), "c_total") == 1


def test_sweep_keeps_live_processes(tmp_path: Path) -> None:
    live = tmp_path / f"gauge_livesum_{os.getpid()}.db"
    live.write_bytes(b"")
    counter = tmp_path / "counter_999999999.db"
    counter.write_bytes(b"")
    assert sweep_dead_workers(tmp_path) == []
    assert live.exists() and counter.exists()


def test_single_process_serves_its_own_registry() -> None:
    own, served = metrics_registries(None)
    assert own is served
    given = CollectorRegistry()
    assert metrics_registries(given) == (given, given)
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9"), registry=given)
    app.state.metrics.items_accepted.inc(2)
    assert given.get_sample_value("batchpipe_ingest_items_accepted_total") == 2


@pytest.mark.parametrize("preset", [False, True])
def test_metrics_directory_is_fresh_private_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: bool
) -> None:
    if preset:
        monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
        (tmp_path / "counter_1.db").write_bytes(b"")  # an earlier run's file: never read
    else:
        monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_directory() as path:
        assert path.name.startswith(DIR_PREFIX)
        assert path.parent == (tmp_path if preset else Path(tempfile.gettempdir()))
        assert list(path.iterdir()) == []
        assert path.stat().st_mode & 0o777 == 0o700
        assert os.environ[MULTIPROC_ENV] == str(path)
    assert not path.exists()
    assert os.environ.get(MULTIPROC_ENV) == (str(tmp_path) if preset else None)


def test_ingest_exits_2_when_the_metrics_directory_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["ingest", "--workers", "2", "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "cannot create the metrics directory" in result.output
    assert os.environ[MULTIPROC_ENV] == str(tmp_path / "missing")
