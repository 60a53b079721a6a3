"""The reliability scenarios: kill, restart and fault every part, and count what is lost.

Each scenario runs the emulator and the three services as processes (`tests.e2e.harness`) on a
broker of its own (scenario 4 stops it) or a 3-broker cluster (7-9, ``cluster_scenarios``),
drives load, injects its fault while the load flows and
then waits for every accepted request to reach a terminal result. It returns a `Row`:

- lost: accepted requests (202 ids + directly produced ids) without a terminal result;
- duplicate submissions: custom_ids the emulator billed in more than one batch (a success in
  more than one batch; deliberate retries after a failure are not counted);
- duplicate results: custom_ids a read_committed consumer saw more than one terminal result for;
- dead-lettered: messages on dead-letters (scenario 6 expects each garbage message exactly once);
- recovery: seconds from each restart to the next result published (the worst is reported).

Every scenario's traffic is mixed over three providers: a third of the requests name an Azure
OpenAI deployment (routed by ``azure-*``), a third a Claude model (Anthropic), the rest OpenAI
models; the emulator serves all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from batchpipe.devtools.kafka_cluster import LocalCluster
from batchpipe.devtools.local_kafka import LocalKafka, free_port
from batchpipe.shared.contracts import DeadLetter, decode
from batchpipe.shared.kafka import ensure_topics, make_consumer
from batchpipe.shared.settings import Settings
from tests.conftest import make_test_settings
from tests.e2e.harness import Pipeline, ResultsFollower

FAST = {
    "batch_max_wait_seconds": 2.0,
    "batch_max_requests": 500,
    "poll_interval_seconds": 0.5,
    "poll_max_rps": 50.0,
    "max_attempts": 5,
    # a third of the traffic goes to Azure OpenAI deployments, a third to Anthropic
    # (``model_of``)
    "provider_routes": "azure-*=azure",
}
EMULATOR = ["--processing-seconds", "1"]


MODELS = ("gpt-4o-mini", "azure-gpt-4o-mini", "claude-3-5-haiku-latest")


def model_of(custom_id: str) -> str:
    """Every scenario mixes providers: a third each to OpenAI, an Azure deployment and a
    Claude model (Anthropic, by the built-in claude-* route)."""
    return MODELS[sum(custom_id.encode()) % 3]


@dataclass
class Row:
    scenario: str
    requests: int
    lost: int = 0
    duplicate_submissions: int = 0
    duplicate_results: int = 0
    dead_lettered: int = 0
    expected_dead_letters: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    notes: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicate_submissions == 0
            and self.duplicate_results == 0
            and self.dead_lettered == self.expected_dead_letters
        )

    @property
    def worst_recovery(self) -> str:
        if not self.recovery_seconds:
            return "-"
        if any(r < 0 for r in self.recovery_seconds):
            return "never"
        return f"{max(self.recovery_seconds):.1f}"


@dataclass
class Size:
    """How big a run is: the short form runs in `make test`, the full one in `make chaos`."""

    requests: int
    kills: int
    load_seconds: float
    broker_down_seconds: float
    timeout: float

    @classmethod
    def short(cls) -> Size:
        return cls(requests=1500, kills=1, load_seconds=8, broker_down_seconds=8, timeout=150)

    @classmethod
    def full(cls) -> Size:
        return cls(requests=20_000, kills=4, load_seconds=40, broker_down_seconds=20, timeout=600)


@contextlib.asynccontextmanager
async def running_broker(workdir: Path) -> AsyncIterator[LocalKafka]:
    broker = LocalKafka(data_dir=workdir / "kafka", port=free_port())
    log = (workdir / "broker.log").open("ab")
    broker.start(stdout=log.fileno())
    try:
        await asyncio.to_thread(broker.wait_ready, 90)
        yield broker
    finally:
        broker.stop()
        log.close()


@contextlib.asynccontextmanager
async def running_cluster_async(workdir: Path) -> AsyncIterator[LocalCluster]:
    """A 3-broker cluster (one process each) for the block; every node stopped after."""
    cluster = LocalCluster(data_dir=workdir / "kafka", size=3, heap="256m")
    try:
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(cluster.wait_ready, 180)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


def chat_line(custom_id: str, model: str = "gpt-4o-mini") -> bytes:
    return orjson.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"q {custom_id}"}]},
        }
    )


async def produce_spread(
    settings: Settings, items: list[tuple[str, bytes]], seconds: float, acked: set[str]
) -> set[str]:
    """Produce ``items`` to the requests topic over ``seconds``; return the ids acknowledged.

    A plain producer that retries each chunk until acknowledged (acks=all, idempotent), as a
    careful user would, so a broker outage delays the load instead of losing it.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=10_000,
        max_request_size=6 * 1024 * 1024,
    )
    await producer.start()
    chunks = max(1, int(seconds * 4))
    size = max(1, -(-len(items) // chunks))
    try:
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            while True:
                try:
                    futures = [
                        await producer.send(settings.requests_topic, value, key=cid.encode())
                        for cid, value in chunk
                    ]
                    await asyncio.gather(*futures)
                    break
                except Exception:
                    await asyncio.sleep(1)
            acked.update(cid for cid, _ in chunk)
            await asyncio.sleep(seconds / chunks)
    finally:
        await producer.stop()
    return acked


async def post_spread(
    url: str, ids: list[str], seconds: float, accepted: set[str], *, per_post: int = 50
) -> set[str]:
    """POST requests to ingest over ``seconds`` with 4 clients that retry on errors and 503."""
    posts = [ids[i : i + per_post] for i in range(0, len(ids), per_post)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for post in posts:
        queue.put_nowait(post)
    pause = seconds / max(1, len(posts)) * 4

    async def client() -> None:
        async with httpx.AsyncClient(timeout=15) as http:
            while not queue.empty():
                post = queue.get_nowait()
                body = {
                    "data": [
                        {
                            "custom_id": cid,
                            "model": model_of(cid),
                            "messages": [{"role": "user", "content": cid}],
                        }
                        for cid in post
                    ]
                }
                while True:
                    try:
                        response = await http.post(f"{url}/requests", json=body)
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5)
                        continue
                    if response.status_code == 202:
                        accepted.update(response.json()["ids"])
                        break
                    if response.status_code in (502, 503, 504):
                        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                        continue
                    raise AssertionError(f"ingest refused a good POST: {response.text}")
                await asyncio.sleep(pause)

    await asyncio.gather(*(client() for _ in range(4)))
    return accepted


async def count_dead_letters(settings: Settings) -> Counter[tuple[int, int]]:
    """Dead letters per (partition, offset) of the refused message."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    seen: Counter[tuple[int, int]] = Counter()
    try:
        partitions = [
            TopicPartition(settings.dead_letters_topic, p) for p in range(settings.topic_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batch.values():
                for record in records:
                    letter = decode(DeadLetter, record.value)
                    seen[(letter.partition, letter.offset)] += 1
        return seen
    finally:
        await consumer.stop()


Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Run:
    """One scenario in progress: its pipeline, broker, results follower and recoveries."""

    pipeline: Pipeline
    broker: LocalKafka | LocalCluster
    follower: ResultsFollower
    size: Size
    rng: random.Random
    recoveries: list[float] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    load: asyncio.Task[set[str]] | None = None

    def outstanding(self) -> bool:
        """Is any work left: load still flowing, or an accepted request without a result?"""
        if self.load is None or not self.load.done():
            return True
        return (
            not {c for c in self.acked if not c.startswith("junk-")} <= self.follower.results.keys()
        )

    async def restart(self, name: str, *, hard: bool = True) -> None:
        """Kill (or stop) and restart one process; record the time to the next result."""
        moment = time.time()
        await asyncio.to_thread(self.pipeline[name].restart, hard=hard, ready_timeout=120)
        await self.measure_recovery(moment)

    async def measure_recovery(self, moment: float) -> None:
        """Seconds from ``moment`` to the next result, if work was left to produce one."""
        if not self.outstanding():
            return  # nothing left to do: no result will follow, and none is owed
        recovery = await self.follower.first_result_after(moment, timeout=self.size.timeout)
        self.recoveries.append(-1.0 if recovery is None else recovery)


async def run_scenario(
    name: str,
    workdir: Path,
    size: Size,
    *,
    fault: Fault,
    via_ingest: bool = False,
    emulator_args: list[str] | None = None,
    garbage: list[bytes] | None = None,
    seed: int = 1,
    brokers: int = 1,
) -> Row:
    """Run one scenario end to end and count what was lost or duplicated; ``brokers=3`` runs
    it on a replicated cluster (topics with 3 replicas and min.insync.replicas=2)."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker_cm = running_cluster_async(workdir) if brokers > 1 else running_broker(workdir)
    async with broker_cm as broker:
        replicated = {"topic_replication_factor": 3, "topic_min_insync_replicas": 2}
        settings = make_test_settings(
            broker.bootstrap, **FAST, **(replicated if brokers > 1 else {})
        )
        await ensure_topics(settings)
        pipeline = Pipeline(
            settings,
            workdir / "pipeline",
            emulator_args=[*EMULATOR, "--seed", str(seed), *(emulator_args or [])],
        )
        await asyncio.to_thread(pipeline.start)
        follower = ResultsFollower(pipeline.settings)
        await follower.start()
        run = Run(pipeline, broker, follower, size, random.Random(seed))
        prefix = uuid.uuid4().hex[:6]
        ids = [f"{name[:3]}-{prefix}-{i:06d}" for i in range(size.requests)]
        try:
            if via_ingest:
                load = asyncio.create_task(
                    post_spread(pipeline.ingest_url, ids, size.load_seconds, run.acked)
                )
            else:
                items = [(cid, chat_line(cid, model_of(cid))) for cid in ids]
                if garbage:
                    step = max(1, len(items) // len(garbage))
                    for i, junk in enumerate(garbage):
                        items.insert(i * step + i, (f"junk-{i}", junk))
                load = asyncio.create_task(
                    produce_spread(pipeline.settings, items, size.load_seconds, run.acked)
                )
            run.load = load
            await fault(run)
            accepted = await load
            accepted = {cid for cid in accepted if not cid.startswith("junk-")}
            missing = await follower.wait_for(accepted, size.timeout)
            stats = pipeline.emulator_stats()
            letters = await count_dead_letters(pipeline.settings)
            row = Row(
                scenario=name,
                requests=len(accepted),
                lost=len(missing),
                duplicate_submissions=int(str(stats.get("double_billed_custom_ids", 0))),
                duplicate_results=len(follower.duplicates),
                dead_lettered=sum(letters.values()),
                expected_dead_letters=len(garbage or []),
                recovery_seconds=run.recoveries,
            )
            if garbage and any(n != 1 for n in letters.values()):
                row.notes = "a garbage message was dead-lettered more than once"
                row.expected_dead_letters = -1
            if row.lost:
                row.notes = f"e.g. {sorted(missing)[:3]}"
            return row
        finally:
            await follower.stop()
            await asyncio.to_thread(pipeline.stop)


# --- the faults -----------------------------------------------------------------------------


def kill_repeatedly(service: str) -> Fault:
    async def fault(run: Run) -> None:
        window = run.size.load_seconds * 1.5
        for _ in range(run.size.kills):
            await asyncio.sleep(run.rng.uniform(1.0, window / run.size.kills))
            await run.restart(service)

    return fault


def kill_poller_mid_stream() -> Fault:
    async def fault(run: Run) -> None:
        # Kill when results are flowing: some are out, not all.
        target = max(1, run.size.requests // 10)
        deadline = time.monotonic() + run.size.timeout
        while len(run.follower.results) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await run.restart("poller")
        for _ in range(run.size.kills - 1):
            await asyncio.sleep(run.rng.uniform(1.0, run.size.load_seconds))
            await run.restart("poller")

    return fault


def stop_broker() -> Fault:
    async def fault(run: Run) -> None:
        assert isinstance(run.broker, LocalKafka)
        await asyncio.sleep(run.size.load_seconds / 3)
        run.broker.stop()
        await asyncio.sleep(run.size.broker_down_seconds)
        moment = time.time()
        log = (run.pipeline.workdir.parent / "broker.log").open("ab")
        run.broker.start(stdout=log.fileno())
        log.close()
        await asyncio.to_thread(run.broker.wait_ready, 90)
        await run.measure_recovery(moment)

    return fault


def restart_emulator() -> Fault:
    async def fault(run: Run) -> None:
        await asyncio.sleep(run.size.load_seconds / 2)
        await run.restart("emulator", hard=True)

    return fault


async def no_fault(run: Run) -> None:
    return None


GARBAGE = [
    b"\xff\xfe not json at all",
    b'{"custom_id": "x", "method": "POST"}',
    b'{"custom_id": "s1", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "gpt-4o-mini", "stream": true, "messages": []}}',
    b'{"custom_id": "u1", "method": "POST", "url": "/v1/images", "body": {"model": "m"}}',
    b"[1, 2, 3]",
    b"x" * 5_000_000,  # 5 MB: above the 4 MiB producer default, under the topic limit
]

EMULATOR_FAULTS = [
    "--line-failure-rate",
    "0.1",
    "--line-failure-status",
    "429,500",
    "--create-429-rate",
    "0.2",
    "--retrieve-5xx-rate",
    "0.1",
    "--validation-failure-rate",
    "0.05",
    "--force-expire",
    "0.03",
    # Anthropic's own: errored lines of a transient type, 529 on create
    "--anthropic-error-rate",
    "0.1",
    "--anthropic-error-types",
    "overloaded_error,api_error",
    "--create-529-rate",
    "0.2",
]


async def scenario(number: int, workdir: Path, size: Size) -> Row:
    """Run scenario ``number`` (1 to 9) of the reliability suite."""
    path = workdir / f"scenario-{number}"
    if number == 1:
        return await run_scenario(
            "dispatcher kill -9", path, size, fault=kill_repeatedly("dispatcher")
        )
    if number == 2:
        return await run_scenario("poller kill -9", path, size, fault=kill_poller_mid_stream())
    if number == 3:
        return await run_scenario(
            "ingest kill -9", path, size, fault=kill_repeatedly("ingest"), via_ingest=True
        )
    if number == 4:
        return await run_scenario("broker down", path, size, fault=stop_broker())
    if number == 5:
        return await run_scenario(
            "emulator restart + faults",
            path,
            size,
            fault=restart_emulator(),
            emulator_args=EMULATOR_FAULTS,
        )
    if number == 6:
        return await run_scenario(
            "garbage on requests", path, size, fault=no_fault, garbage=GARBAGE
        )
    if number in CLUSTER_SCENARIOS:
        from tests.chaos.cluster_scenarios import cluster_scenario

        return await cluster_scenario(number, path, size)
    raise ValueError(f"no scenario {number}")


# 1-6 on one broker (the short form runs in make test); 7-9 on a 3-broker cluster (make chaos).
SCENARIOS = (1, 2, 3, 4, 5, 6)
CLUSTER_SCENARIOS = (7, 8, 9)
