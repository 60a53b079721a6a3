"""The supervisor of ``batchpipe dev`` with tiny fake children (``python -c``): prefixed
output, restart after a crash, reverse-order SIGTERM shutdown, SIGKILL of a stubborn child."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from batchpipe.devtools.dev.cli import run_dev
from batchpipe.devtools.dev.plan import DevOptions, ProcessSpec, build_plan
from batchpipe.devtools.dev.supervisor import Supervisor
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import topic_names

# A well-behaved service: prints, then runs until SIGTERM and says goodbye.
SERVICE = """
import signal, sys, time
name = sys.argv[1]
def bye(*_):
    print(f"{name} got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print(f"{name} line 1", flush=True)
print(f"{name} line 2", file=sys.stderr, flush=True)
while True:
    time.sleep(0.05)
"""
CRASHER = "import sys; print('crashing', flush=True); sys.exit(3)"
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.05)
"""


def spec(tmp_path: Path, name: str, code: str, *args: str, **kw: object) -> ProcessSpec:
    return ProcessSpec(
        name,
        (sys.executable, "-c", code, *args),
        dict(os.environ),
        tmp_path / name,
        **kw,  # type: ignore[arg-type]
    )


async def wait_for(predicate: object, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_output_is_prefixed_and_shutdown_is_in_reverse_order(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append)
    first = await sup.start(spec(tmp_path, "first", SERVICE, "first"))
    second = await sup.start(spec(tmp_path, "second", SERVICE, "second"))
    await wait_for(lambda: sum("line 2" in line for line in lines) == 2)
    assert "[first]      first line 1" in lines
    assert "[second]     second line 2" in lines  # stderr is relayed too
    await sup.stop_all()
    assert first.process is not None and second.process is not None
    assert first.process.returncode == 0 and second.process.returncode == 0
    got = [line for line in lines if "got SIGTERM" in line]
    assert got == ["[second]     second got SIGTERM", "[first]      first got SIGTERM"]
    assert (tmp_path / "first").is_dir()  # each child runs in its own directory


async def test_a_crashed_child_is_reported_loudly_and_restarted(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append, backoff_initial=0.1, backoff_max=0.2)
    child = await sup.start(spec(tmp_path, "crasher", CRASHER))
    await wait_for(lambda: child.starts >= 3)
    await sup.stop_all()
    assert child.exits[:2] == [3, 3]
    assert any("!!! crasher exited unexpectedly (code 3)" in line for line in lines)
    assert any("restarting crasher" in line for line in lines)


async def test_a_child_ignoring_sigterm_is_killed_after_its_timeout(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(lines.append)
    child = await sup.start(spec(tmp_path, "stubborn", STUBBORN, stop_timeout=0.5))
    await wait_for(lambda: any("ignoring" in line for line in lines))
    started = time.monotonic()
    await sup.stop_all()
    assert time.monotonic() - started < 5
    assert child.process is not None and child.process.returncode == -9
    assert any("SIGKILL" in line for line in lines)


async def test_run_dev_reports_a_broker_that_cannot_start_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    """The real orchestration with a fake 'kafka' that dies at once: exit 1, nothing left."""
    plan = build_plan(DevOptions(data_dir=tmp_path), {})
    fake_kafka = spec(tmp_path, "kafka", CRASHER, port=1)
    plan = type(plan)(
        processes=(fake_kafka, *plan.processes[1:]),
        env=plan.env,
        shown_env=plan.shown_env,
        urls=plan.urls,
        data_dir=plan.data_dir,
        bootstrap=plan.bootstrap,
    )
    lines: list[str] = []
    sup = Supervisor(lines.append, backoff_initial=5)
    code = await asyncio.wait_for(run_dev(plan, sup, asyncio.Event()), 20)
    assert code == 1
    assert [c.spec.name for c in sup.children] == ["kafka"]  # nothing else was started
    assert any("Kafka did not start" in line for line in lines)
    assert any("BATCHPIPE_BATCH_MAX_WAIT_SECONDS=5" in line for line in lines)


async def test_run_dev_starts_in_order_prints_urls_and_stops_in_reverse(tmp_path: Path) -> None:
    """run_dev with fake services (the emulator and ingest are plain TCP listeners)."""
    from batchpipe.devtools.local_kafka import free_port

    listener = (
        "import socket, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('bye', flush=True), sys.exit(0)))\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "print('listening', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    plan = build_plan(DevOptions(data_dir=tmp_path), {})
    ports = {"emulator": free_port(), "ingest": free_port()}
    fakes = tuple(
        spec(tmp_path, name, listener, str(ports[name]), port=ports[name])
        if name in ports
        else spec(tmp_path, name, SERVICE, name)
        for name in ("emulator", "ingest", "dispatcher", "poller")
    )
    plan = type(plan)(
        processes=fakes,
        env=plan.env,
        shown_env=plan.shown_env,
        urls=plan.urls,
        data_dir=plan.data_dir,
        bootstrap=plan.bootstrap,
    )
    lines: list[str] = []
    sup = Supervisor(lines.append)
    stop = asyncio.Event()

    async def stop_when_ready() -> None:
        await wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines), 30)
        for name in ("dispatcher", "poller"):
            await wait_for(lambda n=name: any(f"{n} line 1" in x for x in lines), 30)
        stop.set()

    stopper = asyncio.create_task(stop_when_ready())
    code = await asyncio.wait_for(run_dev(plan, sup, stop), 60)
    await stopper
    assert code == 0
    assert [c.spec.name for c in sup.children] == ["emulator", "ingest", "dispatcher", "poller"]
    assert any(f"http://127.0.0.1:{ports['ingest']}/requests" in line for line in lines)
    assert any("http://127.0.0.1:8001/status" in line for line in lines)
    stopped = [
        line.split()[1] for line in lines if line.startswith("[dev]") and "stopped (" in line
    ]
    assert stopped == ["poller", "dispatcher", "ingest", "emulator"]
    codes = [c.process.returncode for c in sup.children if c.process is not None]
    assert codes == [0, 0, 0, 0], lines


@pytest.mark.slow
async def test_run_dev_starts_the_real_broker_creates_topics_and_stops_it_cleanly(
    tmp_path: Path,
) -> None:
    """The real Kafka child (devtools.dev.broker): topics created, data kept, exit 0 on stop."""
    from batchpipe.devtools.local_kafka import free_port

    plan = build_plan(DevOptions(data_dir=tmp_path, kafka_port=free_port()), {})
    only_kafka = type(plan)(
        processes=plan.processes[:1],
        env=plan.env,
        shown_env=plan.shown_env,
        urls=plan.urls,
        data_dir=plan.data_dir,
        bootstrap=plan.bootstrap,
    )
    lines: list[str] = []
    sup = Supervisor(lines.append)
    stop = asyncio.Event()

    async def stop_when_topics_exist() -> None:
        await wait_for(lambda: any("topics ready" in line for line in lines), 90)
        stop.set()

    stopper = asyncio.create_task(stop_when_topics_exist())
    code = await asyncio.wait_for(run_dev(only_kafka, sup, stop), 150)
    await stopper
    assert code == 0, "\n".join(lines)
    every_topic = ", ".join(topic_names(Settings()))  # the registry: all six, in its order
    assert any(f"created: {every_topic})" in line for line in lines), "\n".join(lines)
    assert sup.children[0].exits == [0]  # a clean broker shutdown, not a SIGKILL
    assert any("clean shutdown" in line for line in lines)
    assert (tmp_path / "kafka" / "data" / "log" / "meta.properties").exists()
