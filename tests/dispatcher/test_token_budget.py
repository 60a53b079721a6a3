"""The enqueued-token budget (opt-in): the emulator enforces OpenAI's per-model cap, and a
dispatcher with a budget waits instead of creating a batch that would fail with
``token_limit_exceeded``.

The dispatcher side runs the ``Dispatcher`` core with the real SDK against the in-thread
emulator and in-memory ledger/producer: the budget sits between the cut and the upload, no
Kafka is involved there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
from openai import AsyncOpenAI, OpenAI

from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.jsonl import write_jsonl
from batchpipe.services.dispatcher.token_budget import estimate_tokens, max_window_bytes
from batchpipe.services.dispatcher.window import Window
from batchpipe.shared.providers.files_api import tokens_of
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import Providers
from batchpipe.shared.settings import Settings
from tests.dispatcher.fakes import FakeLedger, FakeProducer

MODEL = "gpt-4o-mini"
LINES = 200


def window(first_offset: int, count: int = LINES) -> Window:
    lines = [
        orjson.dumps(
            {
                "custom_id": f"tb-{first_offset + i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "x" * 300}]},
            }
        )
        for i in range(count)
    ]
    return Window(
        endpoint="/v1/chat/completions",
        model=MODEL,
        opened_at=time.monotonic(),
        opened_at_unix=time.time(),
        lines=lines,
        tps=[("req", 0)] * count,
        offsets=[first_offset + i for i in range(count)],
        custom_ids={f"tb-{first_offset + i}" for i in range(count)},
        nbytes=sum(len(line) + 1 for line in lines),
        cut_reason="count",
    )


WINDOW_TOKENS = estimate_tokens(window(0).nbytes)
LIMIT = WINDOW_TOKENS * 3 // 2  # one window fits, two do not


async def wait_ended(client: AsyncOpenAI, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.1)
    raise TimeoutError(batch_id)


async def submit_directly(client: AsyncOpenAI, w: Window, tmp_path: Path) -> str:
    path = write_jsonl(w.lines, tmp_path)
    with path.open("rb") as f:
        uploaded = await client.files.create(file=(path.name, f), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint=cast(Any, w.endpoint), completion_window="24h"
    )
    return batch.id


def make_dispatcher(
    emulator: Any, tmp_path: Path, budget: int | None, queue_size: int = 1, max_in_flight: int = 1
) -> Dispatcher:
    settings = Settings(
        requests_topic="req",
        batches_topic="bat",
        dispatcher_data_dir=tmp_path,
        dispatcher_max_enqueued_tokens=budget,
        dispatcher_token_check_seconds=0.1,
        dispatcher_max_in_flight=max_in_flight,
        openai_base_url=emulator.base_url,
        openai_api_key=emulator.api_key,
    )

    async def commit(offsets: dict[Any, int]) -> bool:
        return True

    return Dispatcher(
        settings,
        producer=FakeProducer(),
        ledger=FakeLedger(),  # type: ignore[arg-type]
        providers=Providers.single(
            OpenAIProvider(
                AsyncOpenAI(api_key=emulator.api_key, base_url=emulator.base_url),
                upload_client=OpenAI(api_key=emulator.api_key, base_url=emulator.base_url),
            )
        ),
        commit=commit,
        queue_size=queue_size,
        retry_base_delay=0.01,
        retry_max_delay=0.1,
    )


def openai_client(d: Dispatcher) -> AsyncOpenAI:
    provider = d.providers.get("openai")
    assert isinstance(provider, OpenAIProvider)
    return provider.client


async def budgeted_with_one_batch(
    emulator_factory: Any, tmp_path: Path, processing_seconds: float
) -> tuple[Any, Dispatcher, str]:
    """An emulator enforcing ``LIMIT``, a dispatcher with that budget, and the batch of a
    first window (in progress: a second window does not fit next to it)."""
    emulator = emulator_factory(processing_seconds=processing_seconds, enqueued_token_limit=LIMIT)
    d = make_dispatcher(emulator, tmp_path, budget=LIMIT)
    d.ready.set()
    first = await d.dispatch(window(0))
    assert first is not None
    return emulator, d, first


async def test_emulator_fails_a_batch_over_the_enqueued_token_limit(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Without a budget, the second window of the same model fails like on OpenAI; once the
    first has ended, the same window passes."""
    emulator = emulator_factory(processing_seconds=1.5, enqueued_token_limit=LIMIT)
    client = AsyncOpenAI(api_key=emulator.api_key, base_url=emulator.base_url)
    first = await submit_directly(client, window(0), tmp_path)
    second = await submit_directly(client, window(LINES), tmp_path)
    failed = await wait_ended(client, second)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data is not None
    assert failed.errors.data[0].code == "token_limit_exceeded"
    assert (await wait_ended(client, first)).status == "completed"
    again = await submit_directly(client, window(LINES), tmp_path)
    assert (await wait_ended(client, again)).status == "completed"
    await client.close()


async def test_dispatcher_waits_for_the_budget_instead_of_failing(
    emulator_factory: Any, tmp_path: Path
) -> None:
    emulator, d, first = await budgeted_with_one_batch(emulator_factory, tmp_path, 1.5)
    second = await d.dispatch(window(LINES))  # waits until the first batch has ended
    assert second is not None
    client = openai_client(d)
    assert (await client.batches.retrieve(first)).status == "completed"
    assert (await wait_ended(client, second)).status == "completed"
    batch = await client.batches.retrieve(second)
    assert batch.metadata is not None
    assert batch.metadata["batchpipe_est_tokens"] == str(estimate_tokens(window(LINES).nbytes))
    waits = d.metrics.registry.get_sample_value("dispatcher_token_budget_waits_total")
    assert waits == 1
    assert d.metrics.registry.get_sample_value("dispatcher_token_budget_waiting") == 0
    assert emulator.stats()["batches_by_status"].get("failed", 0) == 0
    await client.close()


async def test_concurrent_dispatches_share_the_budget(
    emulator_factory: Any, tmp_path: Path
) -> None:
    """Two windows submitted at once (DISPATCHER_MAX_IN_FLIGHT=2) check the budget one after
    the other: the second counts the first before its batch exists, and waits."""
    emulator = emulator_factory(processing_seconds=1.5, enqueued_token_limit=LIMIT)
    d = make_dispatcher(emulator, tmp_path, budget=LIMIT, queue_size=2, max_in_flight=2)
    d.ready.set()
    for first_offset in (0, LINES):
        d.queue.put_nowait((d.generation, window(first_offset)))
    submitter = asyncio.create_task(d.run_submitter())
    try:
        await wait_until_sent(d, 2, timeout=30)
    finally:
        submitter.cancel()
    batches = [b async for b in openai_client(d).batches.list()]
    assert len(batches) == 2
    ended = [await wait_ended(openai_client(d), b.id) for b in batches]
    assert [b.status for b in ended] == ["completed", "completed"]
    newest, oldest = ended  # the listing is newest first
    assert oldest.completed_at is not None and newest.created_at >= oldest.completed_at
    assert d.metrics.registry.get_sample_value("dispatcher_token_budget_waits_total") == 1
    await openai_client(d).close()


async def wait_until_sent(d: Dispatcher, count: int, timeout: float) -> None:
    producer: FakeProducer = d.producer
    async with asyncio.timeout(timeout):
        while len(producer.sent) < count:
            await asyncio.sleep(0.05)


async def test_waiting_for_the_budget_is_abandoned_on_revocation(
    emulator_factory: Any, tmp_path: Path
) -> None:
    _emulator, d, _first = await budgeted_with_one_batch(emulator_factory, tmp_path, 30)
    waiting = asyncio.create_task(d.dispatch(window(LINES)))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    d.aborting = True  # what on_revoked sets while the in-flight dispatch finishes
    assert await asyncio.wait_for(waiting, 5) is None
    ledger: FakeLedger = d.ledger  # type: ignore[assignment]
    assert ledger.writes[-1].state == "abandoned"
    batches = [b async for b in openai_client(d).batches.list()]
    assert len(batches) == 1  # nothing uploaded or created for the abandoned window
    files = [f async for f in openai_client(d).files.list()]
    assert len(files) == 1
    await openai_client(d).close()


def test_windows_are_cut_at_the_budget_and_estimates_count_only_live_batches(
    tmp_path: Path,
) -> None:
    s = Settings(dispatcher_max_enqueued_tokens=1000, dispatcher_data_dir=tmp_path)
    d = Dispatcher(
        s,
        producer=FakeProducer(),
        ledger=FakeLedger(),  # type: ignore[arg-type]
        providers=Providers.single(OpenAIProvider(cast(Any, SimpleNamespace()))),
        commit=lambda _: asyncio.sleep(0, True),
    )
    assert d.windows.max_bytes == max_window_bytes(1000) == 4000
    assert estimate_tokens(4000) == 1000 and estimate_tokens(4001) == 1001

    def batch(status: str, model: str = MODEL, tokens: str = "7", ours: bool = True) -> Any:
        metadata = {"batchpipe_model": model, "batchpipe_est_tokens": tokens} if ours else None
        return SimpleNamespace(status=status, metadata=metadata)

    assert tokens_of(batch("in_progress"), MODEL) == 7
    assert tokens_of(batch("validating"), MODEL) == 7
    assert tokens_of(batch("completed"), MODEL) == 0
    assert tokens_of(batch("in_progress", model="other"), MODEL) == 0
    assert tokens_of(batch("in_progress", ours=False), MODEL) == 0
    assert tokens_of(batch("in_progress", tokens="junk"), MODEL) == 0
