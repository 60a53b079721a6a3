"""Run batchpipe's processes for end-to-end and chaos tests.

`Pipeline` starts the OpenAI emulator, ingest, the dispatcher and the poller as separate
`batchpipe` processes against a real broker, with the settings rendered as environment variables
(`shared.settings.settings_env`), each process logging to its own file under the work directory;
the dispatcher and the poller are static group members (``*_GROUP_INSTANCE_ID``).
Processes can be stopped (SIGTERM), killed (SIGKILL, as `kill -9`) and restarted, which is all the
chaos suite needs. `ResultsFollower` follows the results topic with a read_committed consumer and
counts what it sees per custom_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION
from batchpipe.devtools.local_kafka import free_port
from batchpipe.shared.contracts import ResultMessage, decode
from batchpipe.shared.kafka import make_consumer
from batchpipe.shared.settings import Settings, settings_env

BATCHPIPE = [sys.executable, "-m", "batchpipe.services.cli"]
TERMINAL = {"succeeded", "failed", "expired", "cancelled"}


@dataclass
class ServiceProcess:
    """One child process: its command, environment, log file and readiness URL."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited early; log tail:\n{self.log_tail()}")
            if self.ready_url is None:
                return
            try:
                if httpx.get(self.ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; log tail:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the process group, like ``kill -9``."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def restart(self, *, hard: bool = True, ready_timeout: float = 60.0) -> None:
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
        self.wait_ready(ready_timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Pipeline:
    """The emulator and the three services as processes, sharing one ``Settings``."""

    settings: Settings
    workdir: Path
    emulator_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Per service (ingest, dispatcher, poller): variables only that process gets, e.g. its own
    # Kafka principal on a secured broker.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    ingest_url: str = ""
    emulator_url: str = ""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        emulator_port, ingest_port = free_port(), free_port()
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.ingest_url = f"http://127.0.0.1:{ingest_port}"
        settings = self.settings.model_copy(
            update={
                "openai_base_url": f"{self.emulator_url}/v1",
                "azure_openai_endpoint": self.emulator_url,
                "anthropic_base_url": self.emulator_url,
                "openai_api_version": AZURE_API_VERSION,
                "dispatcher_web_port": free_port(),
                "poller_http_port": free_port(),
            }
        )
        if settings.openai_api_key is None:
            from pydantic import SecretStr

            settings = settings.model_copy(update={"openai_api_key": SecretStr("sk-emulator")})
        if settings.anthropic_api_key is None:
            from pydantic import SecretStr

            settings = settings.model_copy(update={"anthropic_api_key": SecretStr("sk-emulator")})
        if settings.azure_openai_api_key is None:
            from pydantic import SecretStr

            settings = settings.model_copy(
                update={"azure_openai_api_key": SecretStr("sk-emulator")}
            )
        self.settings = settings
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BATCHPIPE_", "OPENAI_", "AZURE_OPENAI_", "ANTHROPIC_"))
        }
        env = base_env | settings_env(settings) | self.extra_env
        # Static group membership, as a deployment should run it: a restarted process is
        # the same member and gets its partitions back at once. Unique per pipeline, since
        # pipelines of one test session share the broker and the default group ids.
        member = uuid.uuid4().hex[:8]
        self.services = {
            "emulator": ServiceProcess(
                "emulator",
                [
                    *BATCHPIPE,
                    "emulator",
                    "--port",
                    str(emulator_port),
                    "--data-dir",
                    str(self.workdir / "emulator"),
                    *self.emulator_args,
                ],
                env,
                self.workdir / "emulator.log",
                f"{self.emulator_url}/_emulator/stats",
            ),
            "ingest": ServiceProcess(
                "ingest",
                [*BATCHPIPE, "ingest", "--host", "127.0.0.1", "--port", str(ingest_port)],
                env,
                self.workdir / "ingest.log",
                f"{self.ingest_url}/readyz",
            ),
            "dispatcher": ServiceProcess(
                "dispatcher",
                [*BATCHPIPE, "dispatcher"],
                env
                | {
                    "BATCHPIPE_DISPATCHER_DATA_DIR": str(self.workdir / "dispatcher"),
                    "BATCHPIPE_DISPATCHER_GROUP_INSTANCE_ID": f"dispatcher-{member}",
                },
                self.workdir / "dispatcher.log",
                None,
            ),
            "poller": ServiceProcess(
                "poller",
                [*BATCHPIPE, "poller"],
                env | {"BATCHPIPE_POLLER_GROUP_INSTANCE_ID": f"poller-{member}"},
                self.workdir / "poller.log",
                f"http://127.0.0.1:{settings.poller_http_port}/readyz",
            ),
        }

        for name, own in self.service_env.items():
            self.services[name].env = self.services[name].env | own

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def add_ingest(self, name: str, env: dict[str, str]) -> str:
        """Another ingest process on its own port, with ``env`` over the pipeline's (e.g.
        another default model); started by ``start(name)``, stopped with the others. Returns
        its URL."""
        port = free_port()
        base = self.services["ingest"]
        self.services[name] = ServiceProcess(
            name,
            [*BATCHPIPE, "ingest", "--host", "127.0.0.1", "--port", str(port)],
            base.env | env,
            self.workdir / f"{name}.log",
            f"http://127.0.0.1:{port}/readyz",
        )
        return f"http://127.0.0.1:{port}"

    def start(self, *names: str, timeout: float = 90.0) -> None:
        for name in names or tuple(self.services):
            self.services[name].start()
        for name in names or tuple(self.services):
            self.services[name].wait_ready(timeout)

    def stop(self) -> dict[str, int | None]:
        codes = {}
        for name in reversed(tuple(self.services)):
            codes[name] = self.services[name].stop()
        return codes

    def emulator_stats(self) -> dict[str, object]:
        response = httpx.get(f"{self.emulator_url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data

    def set_faults(self, **faults: object) -> None:
        httpx.post(f"{self.emulator_url}/_emulator/faults", json=faults, timeout=10)

    def logs(self) -> str:
        return "\n\n".join(f"--- {n} ---\n{s.log_tail()}" for n, s in self.services.items())


@dataclass
class ResultsFollower:
    """Follows the results topic in the background (read_committed), keeping arrival times.

    ``seen`` counts terminal results per custom_id; ``arrivals`` keeps the broker timestamp of
    every terminal result, for recovery times after a fault.
    """

    settings: Settings
    seen: Counter[str] = field(default_factory=Counter)
    results: dict[str, ResultMessage] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = make_consumer(self.settings, self.settings.results_topic, group_id=None)
        await consumer.start()

        async def follow() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                    for records in batch.values():
                        for record in records:
                            result = decode(ResultMessage, record.value)
                            if result.status in TERMINAL:
                                self.seen[result.custom_id] += 1
                                self.results[result.custom_id] = result
                                self.arrivals.append(record.timestamp / 1000)
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(follow())

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for(self, ids: set[str], timeout: float, *, settle: float = 2.0) -> set[str]:
        """Wait until every id has a terminal result (then ``settle`` more); return the missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= self.results.keys():
            await asyncio.sleep(0.25)
        await asyncio.sleep(settle)
        return ids - self.results.keys()

    async def first_result_after(self, moment: float, timeout: float) -> float | None:
        """Seconds from ``moment`` (unix time) to the first terminal result published after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.arrivals if t >= moment]
            if later:
                return min(later) - moment
            await asyncio.sleep(0.1)
        return None

    async def read_until(
        self, ids: set[str], timeout: float, *, settle: float = 1.0
    ) -> dict[str, ResultMessage]:
        """Follow from the beginning until every id has a terminal result, ``settle`` more."""
        await self.start()
        try:
            await self.wait_for(ids, timeout, settle=settle)
        finally:
            await self.stop()
        return self.results

    @property
    def duplicates(self) -> dict[str, int]:
        return {cid: n for cid, n in self.seen.items() if n > 1}
