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

from batchpipe.services.dispatcher.agent import Dispatcher, Incoming
from batchpipe.services.dispatcher.ledger import LedgerEntry, LedgerState, coverage_of
from batchpipe.shared.contracts import BatchRecord, decode
from batchpipe.shared.settings import Settings


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


def ledger_entry(
    dispatch_id: str, partition: int, offsets: list[int], state: str, **kw: Any
) -> LedgerEntry:
    """A ledger entry holding these offsets of partition ``partition`` of topic "req"."""
    return LedgerEntry(
        dispatch_id=dispatch_id,
        state=state,  # type: ignore[arg-type]
        endpoint="/v1/embeddings",
        model="e",
        request_count=len(offsets),
        input_bytes=10,
        window_opened_at=1.0,
        coverage=coverage_of([("req", partition, o) for o in offsets]),
        planned_at=1.0,
        updated_at=1.0,
        **kw,
    )


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
        return ledger_entry(dispatch_id, 0, offsets, state, **kw)

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


async def _outcome(
    tmp_path: Any,
    chunks: list[list[Incoming]],
    chunked: bool,
    covered: list[int] = (),  # type: ignore[assignment]
) -> tuple[Any, ...]:
    """Feed ``chunks`` to a fresh dispatcher (``handle_many`` per chunk, or ``handle`` per
    message), flush, and return everything observable: dead letters, windows, offsets and
    counters. ``covered``: offsets of partition 1 already in a created dispatch (a replay)."""
    settings = Settings(
        requests_topic="req",
        batch_max_requests=3,
        batch_max_wait_seconds=60,
        dispatcher_data_dir=tmp_path,
    )
    producer = FakeProducer()

    async def commit(offsets: dict[Any, int]) -> bool:
        return True

    ledger = FakeLedger()
    if covered:
        ledger.state.apply(
            ledger_entry("dsp_old", 1, covered, "created", batch_id="batch-old", file_id="f-old")
        )
    d = Dispatcher(
        settings,
        producer=producer,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        client=FakeClient(fail_uploads=False),  # type: ignore[arg-type]
        commit=commit,
        queue_size=10,
    )
    d.ready.set()
    for chunk in chunks:
        if chunked:
            await d.handle_many(chunk)
        else:
            for msg in chunk:
                await d.handle(msg)
    await d.flush()
    windows = [d.queue.get_nowait()[1] for _ in range(d.queue.qsize())]
    d._flush_metrics()
    marks = {tp: d.offsets.watermark(tp) for tp in [("req", 0), ("req", 1)]}
    pending = d.offsets.pending_count()
    for window in windows:  # as if every window were submitted
        d.offsets.done_many(window.positions)
    return (
        [(t, orjson.loads(v)["reason"].split(":")[0], k) for t, v, k in producer.sent],
        [(w.lines, w.positions, w.attempts, w.cut_reason) for w in windows],
        marks,
        pending,
        # then every request was done: a dead letter, a duplicate or a skip that is not
        # marked done would hold the watermark back
        {tp: d.offsets.watermark(tp) for tp in [("req", 0), ("req", 1)]},
        d.metrics.registry.get_sample_value("dispatcher_requests_consumed_total"),
        d.metrics.registry.get_sample_value("dispatcher_duplicates_dropped_total"),
        d.metrics.registry.get_sample_value("dispatcher_requests_skipped_total"),
    )


def _msgs(
    values: list[tuple[int, int, bytes, tuple[tuple[str, bytes], ...]]],
) -> list[Incoming]:
    return [
        Incoming(topic="req", partition=p, offset=o, key=b"k", value=v, headers=h)
        for p, o, v, h in values
    ]


async def test_handle_many_has_the_outcome_of_handle_one_by_one(tmp_path: Any) -> None:
    """The chunked hot path (aiokafka engine) dead-letters, drops duplicates and redeliveries,
    attempts, cuts and tracks offsets exactly as ``handle`` called for each message."""
    msgs = _msgs(
        [
            (0, 0, line("a"), ()),
            (0, 1, b"not json", ()),
            (0, 2, line("a"), ()),  # duplicate of offset 0 (same open window)
            (0, 1, line("z"), ()),  # redelivery of a seen offset: ignored
            (1, 0, line("b"), (("batchpipe-attempt", b"2"),)),
            (0, 3, line("c"), ()),  # cuts (max 3 requests): a, b, c
            (
                1,
                1,
                orjson.dumps({"custom_id": "d", "url": "/v1/images", "body": {"model": "m"}}),
                (),
            ),
            (1, 2, line("d"), ()),
            (0, 4, line("e"), ()),
        ]
    )
    outcomes = [await _outcome(tmp_path, [msgs[:4], msgs[4:]], chunked) for chunked in (0, 1)]
    assert outcomes[0] == outcomes[1]
    dead, windows, marks, pending, after, consumed, duplicates, _ = outcomes[0]
    assert [reason for _, reason, _ in dead] == ["not_json", "url_not_allowed"]
    assert [len(w[0]) for w in windows] == [3, 2] and windows[0][2] == {"b": 2}
    assert marks == {("req", 0): 0, ("req", 1): 0} and pending == 8
    assert after == {("req", 0): 5, ("req", 1): 3}
    assert consumed == 8 and duplicates == 1


async def test_handle_many_on_plain_fetches_has_the_outcome_of_handle_one_by_one(
    tmp_path: Any,
) -> None:
    """Chunks as a fetch returns them (one partition, ascending offsets) take the run path:
    offsets tracked and the ledger checked once per chunk, dead letters and cut windows sent
    after the chunk. A chunk that repeats seen offsets or reaches into a dispatch of the
    ledger goes request by request. Either way the outcome is ``handle``'s."""
    url_not_allowed = orjson.dumps({"custom_id": "x", "url": "/v1/images", "body": {"model": "m"}})
    chunks = [
        _msgs(  # a run: dead letters, a duplicate, an attempt header, two cuts
            [
                (0, 0, line("a"), ()),
                (0, 1, b"not json", ()),
                (0, 2, line("a"), ()),
                (0, 3, line("b"), (("batchpipe-attempt", b"2"),)),
                (0, 4, line("c"), ()),
                (0, 5, url_not_allowed, ()),
                (0, 6, line("d"), ()),
                (0, 7, line("e"), ()),
                (0, 8, line("f"), ()),
                (0, 9, line("g"), ()),
            ]
        ),
        _msgs([(1, 0, line("h"), ()), (1, 2, line("i"), ())]),  # a gap (compaction, markers)
        _msgs([(0, 8, line("f"), ()), (0, 9, line("g"), ()), (0, 10, line("j"), ())]),  # seen
        _msgs([(1, 3, line("k"), ()), (1, 4, line("l"), ()), (1, 5, line("m"), ())]),  # replay
    ]
    outcomes = [await _outcome(tmp_path, chunks, chunked, covered=[4]) for chunked in (False, True)]
    assert outcomes[0] == outcomes[1]
    dead, windows, marks, pending, after, consumed, duplicates, skipped = outcomes[0]
    assert [reason for _, reason, _ in dead] == ["not_json", "url_not_allowed"]
    assert [[orjson.loads(x)["custom_id"] for x in w[0]] for w in windows] == [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["g", "h", "i"],
        ["j", "k", "m"],  # l is in the ledger's dispatch
    ]
    assert windows[0][2] == {"b": 2}
    # offset 0 of each partition is in a window not submitted: nothing is committable, and
    # every seen offset is pending (those done out of order too: dead letters, duplicate)
    assert marks == {("req", 0): 0, ("req", 1): 0} and pending == 11 + 5
    assert after == {("req", 0): 11, ("req", 1): 6}
    assert consumed == 16 and duplicates == 1 and skipped == 1


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
