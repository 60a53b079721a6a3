"""In-memory stand-ins for the dispatcher's collaborators (no Kafka, no HTTP), shared by its
unit tests: a producer that records what it sends, a ledger that keeps its state in memory,
and an OpenAI client whose files and batches fail, wait or succeed as a test tells them."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import openai
import orjson

from batchpipe.services.dispatcher.dispatcher import Dispatcher
from batchpipe.services.dispatcher.ledger import LedgerEntry, LedgerState, State, coverage_of
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import Providers
from batchpipe.shared.settings import Settings


def status_error(code: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/files")
    response = httpx.Response(code, headers=headers, request=request)
    return openai.APIStatusError("err", response=cast(Any, response), body=None)


def connection_lost() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=cast(Any, httpx.Request("POST", "http://x")))


def line(custom_id: str) -> bytes:
    """A valid embeddings request line."""
    return orjson.dumps(
        {"custom_id": custom_id, "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}
    )


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.sent.append((topic, value, key))


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
    dispatch_id: str, positions: Iterable[tuple[str, int, int]], state: State, **kw: Any
) -> LedgerEntry:
    """A ledger entry holding these (topic, partition, offset) positions."""
    positions = list(positions)
    values: dict[str, Any] = {
        "endpoint": "/v1/embeddings",
        "model": "e",
        "input_bytes": 10,
        "window_opened_at": 1.0,
        "planned_at": 1.0,
        "updated_at": 1.0,
    } | kw
    return LedgerEntry(
        dispatch_id=dispatch_id,
        state=state,
        request_count=len(positions),
        coverage=coverage_of(positions),
        **values,
    )


class FakeFiles:
    """``files.create`` failing (429 with a short Retry-After) ``failures`` times, then
    succeeding."""

    def __init__(self, failures: float = 0) -> None:
        self.failures = failures
        self.calls = self.uploaded = 0

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise status_error(429, {"retry-after-ms": "5"})
        self.uploaded += 1
        return SimpleNamespace(id=f"file-{self.uploaded}")


def failing_files() -> FakeFiles:
    return FakeFiles(failures=math.inf)


class GatedFiles(FakeFiles):
    """Uploads that wait for a gate, counting how many are in progress at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.active = self.most = 0

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        self.uploaded += 1
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        return SimpleNamespace(id=f"file-{self.calls}")


class FakeBatches:
    """``batches``: ``existing`` batches to list and retrieve; ``create`` answers by
    ``outcomes`` in turn ("ok", "429", or "lost": created but the answer never arrived), then
    "ok"."""

    def __init__(self, existing: Iterable[Any] = (), outcomes: Iterable[str] = ()) -> None:
        self.existing = list(existing)
        self.outcomes = list(outcomes)
        self.calls = 0
        self.created = 0

    async def create(self, **kwargs: Any) -> Any:
        outcome = self.outcomes[self.calls] if self.calls < len(self.outcomes) else "ok"
        self.calls += 1
        self.created += 1
        if outcome == "lost":
            raise connection_lost()
        if outcome == "429":
            self.created -= 1
            raise status_error(429, {})
        return SimpleNamespace(id=f"batch-{self.calls}", created_at=1_700_000_000, **kwargs)

    def list(self, **_: Any) -> Any:
        async def gen() -> Any:
            for batch in self.existing:
                yield batch

        return gen()

    async def retrieve(self, batch_id: str) -> Any:
        return next(b for b in self.existing if b.id == batch_id)


class FakeClient:
    def __init__(self, files: FakeFiles | None = None, batches: FakeBatches | None = None) -> None:
        self.files = files or FakeFiles()
        self.batches = batches or FakeBatches()

    def with_options(self, **_: Any) -> FakeClient:
        return self

    async def close(self) -> None:
        pass


def fake_provider(client: FakeClient) -> OpenAIProvider:
    """The OpenAI provider over a fake client (uploads through the async client)."""
    return OpenAIProvider(cast(Any, client))


def fake_providers(client: FakeClient) -> Providers:
    return Providers.single(fake_provider(client))


def make_dispatcher(
    tmp_path: Path,
    client: FakeClient,
    ledger: FakeLedger | None = None,
    **settings: Any,
) -> tuple[Dispatcher, FakeLedger, FakeProducer, list[dict[Any, int]]]:
    """A dispatcher on fakes (topic "req", windows of 2, no time cut, fast retries): with its
    ledger, its producer and the offsets it committed, in order."""
    values: dict[str, Any] = {
        "requests_topic": "req",
        "batches_topic": "bat",
        "batch_max_requests": 2,
        "batch_max_wait_seconds": 60,
        "dispatcher_data_dir": tmp_path,
    }
    queue_size = settings.pop("queue_size", 1)
    ledger = ledger or FakeLedger()
    producer = FakeProducer()
    commits: list[dict[Any, int]] = []

    async def commit(offsets: dict[Any, int]) -> bool:
        commits.append(dict(offsets))
        return True

    d = Dispatcher(
        Settings(**(values | settings)),
        producer=cast(Any, producer),
        ledger=cast(Any, ledger),
        providers=fake_providers(client),
        commit=commit,
        queue_size=queue_size,
        retry_base_delay=0.001,
        retry_max_delay=0.01,
    )
    return d, ledger, producer, commits
