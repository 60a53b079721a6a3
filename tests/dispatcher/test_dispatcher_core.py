"""The Dispatcher core with in-memory fakes (no Kafka, no HTTP): revocation during a failing
upload abandons the dispatch and commits nothing; reconciliation re-publishes or abandons."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import orjson
import pytest

from services.dispatcher.agent import Dispatcher, Incoming
from services.dispatcher.ledger import LedgerEntry, LedgerState, coverage_of
from shared.contracts import BatchRecord, decode
from shared.settings import Settings


class FakeLedger:
    def __init__(self) -> None:
        self.state = LedgerState()
        self.writes: list[LedgerEntry] = []

    async def write(self, entry: LedgerEntry) -> None:
        self.writes.append(entry)
        self.state.apply(entry)

    async def forget(self, dispatch_id: str) -> None:
        self.state.apply(None, dispatch_id)

    async def load(self) -> LedgerState:
        return self.state


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))


def rate_limited() -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/files")
    response = httpx.Response(429, headers={"retry-after-ms": "5"}, request=request)
    return openai.APIStatusError("429", response=response, body=None)


class FakeBatches:
    def __init__(self, existing: list[Any]) -> None:
        self.existing = existing
        self.created = 0

    async def create(self, **kwargs: Any) -> Any:
        self.created += 1
        return SimpleNamespace(id=f"batch-{self.created}", **kwargs)

    def list(self, **_: Any) -> Any:
        async def gen() -> Any:
            for batch in self.existing:
                yield batch

        return gen()

    async def retrieve(self, batch_id: str) -> Any:
        return next(b for b in self.existing if b.id == batch_id)


class FakeFiles:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls = 0

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise rate_limited()
        return SimpleNamespace(id=f"file-{self.calls}")


class FakeClient:
    def __init__(self, *, fail_uploads: bool, existing: list[Any] | None = None) -> None:
        self.files = FakeFiles(fail_uploads)
        self.batches = FakeBatches(existing or [])

    def with_options(self, **_: Any) -> FakeClient:
        return self


def make(
    tmp_path: Any, client: FakeClient, ledger: FakeLedger | None = None, **settings: Any
) -> tuple[Dispatcher, FakeLedger, FakeProducer, list[dict[Any, int]]]:
    values: dict[str, Any] = {
        "requests_topic": "req",
        "batches_topic": "bat",
        "batch_max_requests": 2,
        "batch_max_wait_seconds": 60,
        "dispatcher_data_dir": tmp_path,
    }
    settings = Settings(**(values | settings))
    ledger = ledger or FakeLedger()
    producer = FakeProducer()
    commits: list[dict[Any, int]] = []

    async def commit(offsets: dict[Any, int]) -> bool:
        commits.append(dict(offsets))
        return True

    d = Dispatcher(
        settings,
        producer=producer,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        client=client,  # type: ignore[arg-type]
        commit=commit,
        retry_base_delay=0.001,
        retry_max_delay=0.01,
    )
    return d, ledger, producer, commits


def line(custom_id: str) -> bytes:
    return orjson.dumps(
        {"custom_id": custom_id, "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}
    )


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_revocation_during_failing_upload_abandons_and_commits_nothing(tmp_path: Any) -> None:
    client = FakeClient(fail_uploads=True)
    d, ledger, producer, commits = make(tmp_path, client)
    await d.on_assigned({("req", 0)})
    submitter = asyncio.create_task(d.run_submitter())
    try:
        for offset, cid in enumerate(["a", "b"]):
            await d.handle(Incoming("req", 0, offset, cid.encode(), line(cid)))
        await wait_until(lambda: client.files.calls >= 3)  # retrying the upload
        await asyncio.wait_for(d.on_revoked({("req", 0)}), 5)
    finally:
        submitter.cancel()
    assert [e.state for e in ledger.writes] == ["planned", "abandoned"]
    assert client.batches.created == 0
    assert producer.sent == []
    assert all(offsets.get(("req", 0), 0) == 0 for offsets in commits)
    assert not d.ready.is_set()


async def test_reconcile_republishes_created_batches_and_abandons_the_rest(tmp_path: Any) -> None:
    ledger = FakeLedger()

    def entry(dispatch_id: str, offsets: list[int], state: str, **kw: Any) -> LedgerEntry:
        return LedgerEntry(
            dispatch_id=dispatch_id,
            state=state,  # type: ignore[arg-type]
            endpoint="/v1/embeddings",
            model="e",
            request_count=len(offsets),
            input_bytes=10,
            window_opened_at=1.0,
            coverage=coverage_of([("req", 0, o) for o in offsets]),
            planned_at=1.0,
            updated_at=1.0,
            **kw,
        )

    ledger.state.apply(entry("dsp_created", [0, 1], "uploaded", file_id="file-9"))
    ledger.state.apply(entry("dsp_lost", [2, 3], "planned"))
    ledger.state.apply(
        entry("dsp_other", [0], "planned").model_copy(
            update={"coverage": coverage_of([("req", 5, 0)])}
        )
    )
    existing = SimpleNamespace(
        id="batch-x",
        metadata={"batchpipe_dispatch_id": "dsp_created"},
        created_at=5,
        input_file_id="file-9",
    )
    client = FakeClient(fail_uploads=False, existing=[existing])
    d, ledger, producer, _ = make(tmp_path, client, ledger)
    await d.on_assigned({("req", 0)})
    states = {e.dispatch_id: e.state for e in ledger.state.entries.values()}
    assert states == {"dsp_created": "published", "dsp_lost": "abandoned", "dsp_other": "planned"}
    (sent,) = producer.sent
    record = decode(BatchRecord, sent[1])
    assert (sent[0], record.batch_id, record.dispatch_id) == ("bat", "batch-x", "dsp_created")
    assert client.batches.created == 0  # reconciliation never creates a batch
    # replayed requests: 0 and 1 are in batch-x (skipped), 2 and 3 are windowed again
    assert ledger.state.covering(("req", 0), 1) == "dsp_created"
    assert ledger.state.covering(("req", 0), 2) is None


async def test_handle_many_has_the_outcome_of_handle_one_by_one(tmp_path: Any) -> None:
    """The chunked hot path (aiokafka engine) dead-letters, drops duplicates and redeliveries,
    attempts, cuts and tracks offsets exactly as ``handle`` called for each message."""
    values: list[tuple[int, int, bytes, tuple[tuple[str, bytes], ...]]] = [
        (0, 0, line("a"), ()),
        (0, 1, b"not json", ()),
        (0, 2, line("a"), ()),  # duplicate of offset 0 (same open window)
        (0, 1, line("z"), ()),  # redelivery of a seen offset: ignored
        (1, 0, line("b"), (("batchpipe-attempt", b"2"),)),
        (0, 3, line("c"), ()),  # cuts (max 3 requests): a, b, c
        (1, 1, orjson.dumps({"custom_id": "d", "url": "/v1/images", "body": {"model": "m"}}), ()),
        (1, 2, line("d"), ()),
        (0, 4, line("e"), ()),
    ]
    msgs = [
        Incoming(topic="req", partition=p, offset=o, key=b"k", value=v, headers=h)
        for p, o, v, h in values
    ]
    outcomes = []
    for chunked in (False, True):
        settings = Settings(
            requests_topic="req",
            batch_max_requests=3,
            batch_max_wait_seconds=60,
            dispatcher_data_dir=tmp_path,
        )
        producer = FakeProducer()

        async def commit(offsets: dict[Any, int]) -> bool:
            return True

        d = Dispatcher(
            settings,
            producer=producer,  # type: ignore[arg-type]
            ledger=FakeLedger(),  # type: ignore[arg-type]
            client=FakeClient(fail_uploads=False),  # type: ignore[arg-type]
            commit=commit,
            queue_size=10,
        )
        d.ready.set()
        if chunked:
            await d.handle_many(msgs[:4])
            await d.handle_many(msgs[4:])
        else:
            for msg in msgs:
                await d.handle(msg)
        await d.flush()
        windows = [d.queue.get_nowait()[1] for _ in range(d.queue.qsize())]
        d._flush_metrics()
        outcomes.append(
            (
                [(t, orjson.loads(v)["reason"].split(":")[0], k) for t, v, k in producer.sent],
                [(w.lines, w.positions, w.attempts, w.cut_reason) for w in windows],
                {tp: d.offsets.watermark(tp) for tp in [("req", 0), ("req", 1)]},
                d.offsets.pending_count(),
                d.metrics.registry.get_sample_value("dispatcher_requests_consumed_total"),
                d.metrics.registry.get_sample_value("dispatcher_duplicates_dropped_total"),
            )
        )
    assert outcomes[0] == outcomes[1]
    dead, windows, marks, pending, consumed, duplicates = outcomes[0]
    assert [reason for _, reason, _ in dead] == ["not_json", "url_not_allowed"]
    assert [len(w[0]) for w in windows] == [3, 2] and windows[0][2] == {"b": 2}
    assert marks == {("req", 0): 0, ("req", 1): 0} and pending == 8
    assert consumed == 8 and duplicates == 1


class GatedFiles:
    """Uploads that wait for a gate, counting how many are in progress at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = self.active = self.most = 0

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        return SimpleNamespace(id=f"file-{self.calls}")


async def feed(d: Dispatcher, count: int) -> None:
    for offset in range(count):
        await d.handle(Incoming("req", 0, offset, b"k", line(f"c{offset}")))


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_windows_are_submitted_concurrently_up_to_max_in_flight(
    tmp_path: Any, in_flight: int
) -> None:
    client = FakeClient(fail_uploads=False)
    files = client.files = GatedFiles()  # type: ignore[assignment]
    d, _ledger, producer, commits = make(tmp_path, client, dispatcher_max_in_flight=in_flight)
    await d.on_assigned({("req", 0)})
    submitter = asyncio.create_task(d.run_submitter())
    feeding = asyncio.create_task(feed(d, 6))  # 3 windows of 2; blocks while all are busy
    try:
        await wait_until(lambda: files.active == in_flight)
        await asyncio.sleep(0.05)
        assert files.most == in_flight
        assert d.metrics.registry.get_sample_value("dispatcher_dispatches_in_flight") == in_flight
        files.gate.set()
        await wait_until(lambda: len(producer.sent) == 3)
        await asyncio.wait_for(feeding, 5)
    finally:
        submitter.cancel()
        feeding.cancel()
    assert files.most == in_flight and client.batches.created == 3
    marks = [offsets[("req", 0)] for offsets in commits]
    assert marks == sorted(marks) and marks[-1] == 6  # forward only, up to the end


async def test_revocation_waits_for_every_dispatch_in_flight(tmp_path: Any) -> None:
    client = FakeClient(fail_uploads=False)
    files = client.files = GatedFiles()  # type: ignore[assignment]
    d, ledger, producer, commits = make(tmp_path, client, dispatcher_max_in_flight=2)
    await d.on_assigned({("req", 0)})
    submitter = asyncio.create_task(d.run_submitter())
    try:
        await feed(d, 4)
        await wait_until(lambda: files.active == 2)
        revoking = asyncio.create_task(d.on_revoked({("req", 0)}))
        await asyncio.sleep(0.05)
        assert not revoking.done()  # both uploads are still in flight
        files.gate.set()
        await asyncio.wait_for(revoking, 5)
    finally:
        submitter.cancel()
    # both uploads finished after the revocation began: neither batch is created
    states: dict[str, list[str]] = {}
    for e in ledger.writes:
        states.setdefault(e.dispatch_id, []).append(e.state)
    assert list(states.values()) == [["planned", "uploaded", "abandoned"]] * 2
    assert client.batches.created == 0 and producer.sent == []
    assert all(offsets.get(("req", 0), 0) == 0 for offsets in commits)
