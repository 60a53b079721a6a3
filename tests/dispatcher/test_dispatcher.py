"""dispatcher.py with in-memory fakes (no Kafka, no HTTP): revocation during a failing upload
abandons the dispatch and commits nothing; reconciliation re-publishes or abandons; windows
are submitted concurrently up to the limit, and revocation waits for all of them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.ledger import LedgerEntry, coverage_of
from batchpipe.services.dispatcher.records import Incoming
from batchpipe.shared.contracts import BatchRecord, decode
from batchpipe.shared.providers.base import Pending, Submission
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import Providers
from tests.dispatcher.fakes import (
    FakeBatches,
    FakeClient,
    FakeLedger,
    GatedFiles,
    failing_files,
    ledger_entry,
    line,
    make_dispatcher,
)


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_revocation_during_failing_upload_abandons_and_commits_nothing(
    tmp_path: Path,
) -> None:
    client = FakeClient(failing_files())
    d, ledger, producer, commits = make_dispatcher(tmp_path, client)
    await d.on_assigned({("req", 0)})
    submitter = asyncio.create_task(d.run_submitter())
    try:
        for offset, cid in enumerate(["a", "b"]):
            await d.handle_many([Incoming("req", 0, offset, cid.encode(), line(cid))])
        await wait_until(lambda: client.files.calls >= 3)  # retrying the upload
        await asyncio.wait_for(d.on_revoked({("req", 0)}), 5)
    finally:
        submitter.cancel()
    assert [e.state for e in ledger.writes] == ["planned", "abandoned"]
    assert client.batches.created == 0
    assert producer.sent == []
    assert all(offsets.get(("req", 0), 0) == 0 for offsets in commits)
    assert not d.ready.is_set()


async def test_reconcile_republishes_created_batches_and_abandons_the_rest(tmp_path: Path) -> None:
    ledger = FakeLedger()

    def entry(dispatch_id: str, offsets: list[int], state: Any, **kw: Any) -> LedgerEntry:
        return ledger_entry(dispatch_id, [("req", 0, o) for o in offsets], state, **kw)

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
    client = FakeClient(batches=FakeBatches(existing=[existing]))
    d, ledger, producer, _ = make_dispatcher(tmp_path, client, ledger)
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


async def feed(d: Dispatcher, count: int) -> None:
    for offset in range(count):
        await d.handle_many([Incoming("req", 0, offset, b"k", line(f"c{offset}"))])


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_windows_are_submitted_concurrently_up_to_max_in_flight(
    tmp_path: Any, in_flight: int
) -> None:
    files = GatedFiles()
    client = FakeClient(files)
    d, _ledger, producer, commits = make_dispatcher(
        tmp_path, client, dispatcher_max_in_flight=in_flight
    )
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


async def test_revocation_waits_for_every_dispatch_in_flight(tmp_path: Path) -> None:
    files = GatedFiles()
    client = FakeClient(files)
    d, ledger, producer, commits = make_dispatcher(tmp_path, client, dispatcher_max_in_flight=2)
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


class UndecidedProvider(OpenAIProvider):
    """A provider that cannot tell yet whether its running batch is ``dsp_doubt``'s, then
    can (``decided``)."""

    decided: Submission | None = None

    async def find(self, dispatch_ids: Any, **_: Any) -> dict[str, Submission | Pending]:
        if "dsp_doubt" not in set(dispatch_ids):
            return {}
        return {"dsp_doubt": self.decided or Pending("batch-running")}


async def test_a_dispatch_in_doubt_is_neither_abandoned_nor_recreated_until_its_provider_tells(
    tmp_path: Path,
) -> None:
    """After a crash between create and the ledger, a provider that finds batches by content
    may not know yet: the entry stays unfinished (its requests stay covered, none windowed
    again), the timer asks again, and the batch is republished once the provider finds it."""
    ledger = FakeLedger()
    positions = [("req", 0, 0), ("req", 0, 1)]
    ledger.state.apply(ledger_entry("dsp_doubt", positions, "uploaded", file_id="staged-1"))
    client = FakeClient()
    provider = UndecidedProvider(cast(Any, client))
    d, ledger, producer, _ = make_dispatcher(tmp_path, client, ledger)
    d.providers = Providers.single(provider)
    d.steps.providers = d.providers
    assert await d.reconcile({("req", 0)}) == {"dsp_doubt": "in_doubt"}
    state: str = ledger.state.entries["dsp_doubt"].state
    assert state == "uploaded"
    assert ledger.state.covering(("req", 0), 1) == "dsp_doubt"
    assert producer.sent == [] and client.batches.created == 0
    provider.decided = Submission("batch-found", "staged-1", 7)
    d.assigned = {("req", 0)}
    d.ready.set()
    await d.tick()  # the timer's re-check
    state = ledger.state.entries["dsp_doubt"].state
    assert state == "published"
    (sent,) = producer.sent
    assert decode(BatchRecord, sent[1]).batch_id == "batch-found"
    assert client.batches.created == 0


@pytest.mark.parametrize(
    ("setting", "openai_bytes", "anthropic_bytes"),
    [
        (None, 190_000_000, 243_200_000),  # 95% of each provider's limit
        (250_000_000, 200_000_000, 250_000_000),  # the setting, capped by the provider's limit
        (50_000_000, 50_000_000, 50_000_000),
    ],
)
def test_each_providers_windows_are_cut_at_its_own_byte_limit(
    tmp_path: Path, setting: int | None, openai_bytes: int, anthropic_bytes: int
) -> None:
    """Anthropic's windows may grow to its 256 MB limit, OpenAI's to their 200 MB; a line is
    never larger than the smallest window, so every valid line fits the window it joins."""
    from batchpipe.shared.providers.anthropic import AnthropicProvider
    from batchpipe.shared.providers.routing import Routes
    from batchpipe.shared.settings import Settings

    settings = Settings(dispatcher_data_dir=tmp_path, batch_max_bytes=setting)
    anthropic = AnthropicProvider(cast(Any, SimpleNamespace()), cast(Any, None), max_tokens=16)
    providers = Providers(
        {"openai": OpenAIProvider(cast(Any, SimpleNamespace())), "anthropic": anthropic},
        Routes.from_settings(settings),
    )
    d = Dispatcher(
        settings,
        producer=cast(Any, None),
        ledger=FakeLedger(),  # type: ignore[arg-type]
        providers=providers,
        commit=lambda _: asyncio.sleep(0, True),
    )
    assert d.windows.limits_of("gpt-4o-mini") == (50_000, openai_bytes)
    assert d.windows.limits_of("claude-sonnet-4-5") == (100_000, anthropic_bytes)
    assert d.windows.max_line_bytes == min(openai_bytes, anthropic_bytes)
