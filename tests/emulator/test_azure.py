"""Azure OpenAI's routes through the official ``AzureOpenAI`` / ``AsyncAzureOpenAI`` clients:
every batch endpoint and every ending, Azure's validation codes and limits, the api-version and
api-key checks, Azure's error shape, the expiry range, faults, restarts, and the separation of
the Azure and OpenAI accounts."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.flavours import AZURE
from batchpipe.devtools.emulator.runner import RunningEmulator, run_emulator_in_thread
from batchpipe.devtools.emulator.store import Store
from tests.emulator.helpers import (
    await_batch,
    azure_aclient,
    azure_client,
    chat_file,
    chat_line,
    client,
    create,
    jsonl,
    read_jsonl,
    upload,
    wait,
)

DEPLOYMENT = "gpt-4o-batch"
BODIES: dict[str, dict[str, Any]] = {
    "/chat/completions": {"messages": [{"role": "user", "content": "Tell me about the sea"}]},
    "/embeddings": {"input": "the sea"},
    "/responses": {"input": "Tell me about the sea"},
}


def azure_line(custom_id: str, url: str = "/chat/completions", model: str = DEPLOYMENT) -> Any:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model} | BODIES[url],
    }


def azure_file(n: int, url: str = "/chat/completions", prefix: str = "req") -> bytes:
    return jsonl([azure_line(f"{prefix}-{i}", url) for i in range(n)])


def _azure_error(exc: openai.APIStatusError) -> dict[str, Any]:
    """The SDK keeps the ``error`` object of the body: Azure's has a code and a message only."""
    assert isinstance(exc.body, dict)
    assert set(exc.body) == {"code", "message"}, exc.body
    return exc.body


def test_sync_client_runs_a_chat_batch_and_the_files_api(emulator: RunningEmulator) -> None:
    c = azure_client(emulator)
    uploaded = c.files.create(file=("in.jsonl", io.BytesIO(azure_file(10))), purpose="batch")
    assert uploaded.id.startswith("file-") and len(uploaded.id) == len("file-") + 32
    assert (uploaded.purpose, uploaded.bytes) == ("batch", len(azure_file(10)))
    batch = create(c, uploaded.id, endpoint="/chat/completions", metadata={"k": "v"})
    assert (batch.status, batch.endpoint, batch.metadata) == (
        "validating",
        "/chat/completions",
        {"k": "v"},
    )
    done = wait(c, batch.id)
    assert done.status == "completed", done
    assert done.model == DEPLOYMENT
    assert done.request_counts is not None and done.request_counts.completed == 10
    lines = read_jsonl(c, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(10))
    body = lines[0]["response"]["body"]
    parsed = ChatCompletion.model_validate(body)
    assert parsed.model == DEPLOYMENT and parsed.choices[0].message.content
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert "content_filter_results" in body["choices"][0]
    assert done.usage is not None
    assert done.usage.total_tokens == sum(
        line["response"]["body"]["usage"]["total_tokens"] for line in lines
    )

    assert c.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert c.files.content(uploaded.id).content == azure_file(10)
    listed = [f.id for f in c.files.list(purpose="batch")]
    assert listed == [uploaded.id]
    assert {f.purpose for f in c.files.list()} == {"batch", "batch_output"}
    assert [b.id for b in c.batches.list()] == [batch.id]
    assert c.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        c.files.retrieve(uploaded.id)
    _azure_error(info.value)


async def test_async_client_runs_every_endpoint_to_every_ending(emulator: RunningEmulator) -> None:
    """Per endpoint: one batch completes, one fails validation, one is cancelled."""
    c = azure_aclient(emulator)

    async def run(url: str) -> None:
        good = await c.files.create(
            file=("g.jsonl", io.BytesIO(azure_file(4, url))), purpose="batch"
        )
        mixed = jsonl([azure_line("a", url), azure_line("b", url, model="other-deployment")])
        bad = await c.files.create(file=("b.jsonl", io.BytesIO(mixed)), purpose="batch")
        args: dict[str, Any] = {"endpoint": url, "completion_window": "24h"}
        completed = await c.batches.create(input_file_id=good.id, **args)
        failed = await c.batches.create(input_file_id=bad.id, **args)
        cancelled = await c.batches.create(input_file_id=good.id, **args)
        assert (await c.batches.cancel(cancelled.id)).status == "cancelling"
        done = await await_batch(c, completed.id)
        assert done.status == "completed" and done.endpoint == url
        content = await c.files.content(done.output_file_id or "")
        bodies = [json.loads(line)["response"]["body"] for line in content.text.splitlines()]
        assert len(bodies) == 4
        kinds: dict[str, type[ChatCompletion | CreateEmbeddingResponse | Response]] = {
            "/chat/completions": ChatCompletion,
            "/embeddings": CreateEmbeddingResponse,
            "/responses": Response,
        }
        assert all(kinds[url].model_validate(body).model == DEPLOYMENT for body in bodies)
        failure = await await_batch(c, failed.id)
        assert failure.status == "failed" and failure.errors and failure.errors.data
        assert (failure.errors.data[0].code, failure.errors.data[0].line) == ("model_mismatch", 2)
        assert (await await_batch(c, cancelled.id)).status == "cancelled"

    await asyncio.gather(*(run(url) for url in AZURE.batch_endpoints))
    stats = emulator.stats()
    assert stats["batches_by_status"] == {"completed": 3, "failed": 3, "cancelled": 3}
    await c.close()


def test_sync_client_sees_every_endpoint_expire(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=0.2, force_expire=True)
    c = azure_client(emulator)
    for url in AZURE.batch_endpoints:
        done = wait(c, create(c, upload(c, azure_file(40, url)), endpoint=url).id)
        assert done.status == "expired" and done.expired_at is not None
        out, err = read_jsonl(c, done.output_file_id), read_jsonl(c, done.error_file_id)
        assert len(out) + len(err) == 40 and err
        assert {line["error"]["code"] for line in err} == {"batch_expired"}


async def test_async_client_sees_the_completion_window_expire(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=2.0, completion_window_seconds=0.6)
    c = azure_aclient(emulator)
    uploaded = await c.files.create(file=("in.jsonl", io.BytesIO(azure_file(50))), purpose="batch")
    batch = await c.batches.create(
        input_file_id=uploaded.id,
        endpoint="/chat/completions",  # type: ignore[arg-type]  # (the SDK types OpenAI's)
        completion_window="24h",
    )
    done = await await_batch(c, batch.id)
    assert done.status == "expired"
    assert done.request_counts is not None
    assert done.request_counts.completed + done.request_counts.failed == 50
    await c.close()


def test_azure_validation_codes(emulator_factory: Any) -> None:
    emulator = emulator_factory(azure_deployments=[DEPLOYMENT, "embedding-batch"])
    c = azure_client(emulator)
    cases = {
        "model_mismatch": ([azure_line("a"), azure_line("b", model="embedding-batch")], 2),
        "model_not_found": ([azure_line("a", model="not-deployed")], 1),
        "invalid_url": ([azure_line("a"), chat_line("b", model=DEPLOYMENT)], 2),  # a /v1 url
        "duplicate_custom_id": ([azure_line("a"), azure_line("a")], 2),
    }
    batches = {
        code: create(c, upload(c, jsonl(lines)), endpoint="/chat/completions").id
        for code, (lines, _) in cases.items()
    }
    for code, batch_id in batches.items():
        failed = wait(c, batch_id)
        assert failed.status == "failed" and failed.errors and failed.errors.data, code
        assert (failed.errors.data[0].code, failed.errors.data[0].line) == (code, cases[code][1])
        assert failed.errors.data[0].message
    assert (
        wait(c, create(c, upload(c, azure_file(2)), endpoint="/chat/completions").id).status
        == "completed"
    )


def test_azure_line_limit_is_its_own(emulator_factory: Any) -> None:
    assert AZURE.max_batch_lines(EmulatorConfig()) == 100_000
    emulator = emulator_factory(azure_max_batch_lines=3, max_batch_lines=4)
    c = azure_client(emulator)
    failed = wait(c, create(c, upload(c, azure_file(4)), endpoint="/chat/completions").id)
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "too_many_tasks"
    o = client(emulator)
    assert wait(o, create(o, upload(o, chat_file(4))).id).status == "completed"


def test_create_accepts_only_azure_endpoints(emulator: RunningEmulator) -> None:
    c = azure_client(emulator, max_retries=0)
    file_id = upload(c, azure_file(1))
    for endpoint in ("/v1/chat/completions", "/completions", "/moderations"):
        with pytest.raises(openai.BadRequestError) as info:
            create(c, file_id, endpoint=endpoint)
        assert _azure_error(info.value)["code"] == "invalid_value"
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        c.files.create(file=("a.jsonl", io.BytesIO(b"x")), purpose="nonsense")  # type: ignore[arg-type]
    assert _azure_error(bad_purpose.value)["code"] == "invalidPayload"


def test_api_version_is_required(emulator: RunningEmulator) -> None:
    root = emulator.azure_endpoint
    for path in ("/openai/files", "/openai/batches", "/openai/batches/batch_x"):
        missing = httpx.get(f"{root}{path}")
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert (
        httpx.get(f"{root}/openai/files", params={"api-version": "2024-10-21"}).status_code == 200
    )
    unknown = httpx.get(f"{root}/openai/nothing", params={"api-version": "2024-10-21"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "404"


def test_api_key_header_or_bearer_token(emulator_factory: Any) -> None:
    emulator = emulator_factory(api_key="sk-azure-key-123")
    with pytest.raises(openai.AuthenticationError) as info:
        azure_client(emulator, api_key="wrong-key").batches.list()
    assert info.value.status_code == 401 and info.value.code == "401"
    assert "invalid subscription key" in _azure_error(info.value)["message"]
    bare = httpx.get(
        f"{emulator.azure_endpoint}/openai/batches", params={"api-version": "2024-10-21"}
    )
    assert bare.status_code == 401 and set(bare.json()["error"]) == {"code", "message"}
    assert azure_client(emulator).batches.list().data == []
    token = openai.AzureOpenAI(
        azure_endpoint=emulator.azure_endpoint,
        azure_ad_token="sk-azure-key-123",
        api_version=emulator.api_version,
    )
    assert token.batches.list().data == []
    assert client(emulator).batches.list().data == []  # OpenAI's bearer token: the same key


def test_expiry_range_is_azures(emulator: RunningEmulator) -> None:
    c = azure_client(emulator, max_retries=0)
    low, high = 1_209_600, 2_592_000
    for seconds in (3600, low - 1, high + 1):
        with pytest.raises(openai.BadRequestError) as info:
            c.files.create(
                file=("e.jsonl", io.BytesIO(azure_file(1))),
                purpose="batch",
                expires_after={"anchor": "created_at", "seconds": seconds},
            )
        assert "between 1209600 and 2592000" in _azure_error(info.value)["message"]
    kept = c.files.create(
        file=("e.jsonl", io.BytesIO(azure_file(1))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": low},
    )
    assert kept.expires_at == kept.created_at + low
    with pytest.raises(openai.BadRequestError):
        create(
            c,
            kept.id,
            endpoint="/chat/completions",
            output_expires_after={"anchor": "created_at", "seconds": 7200},
        )
    batch = create(
        c,
        kept.id,
        endpoint="/chat/completions",
        output_expires_after={"anchor": "created_at", "seconds": high},
    )
    output = c.files.retrieve(wait(c, batch.id).output_file_id or "")
    assert output.expires_at == output.created_at + high


def test_azure_and_openai_are_separate_accounts(emulator: RunningEmulator) -> None:
    a, o = azure_client(emulator, max_retries=0), client(emulator, max_retries=0)
    azure_batch = create(a, upload(a, azure_file(2)), endpoint="/chat/completions")
    openai_batch = create(o, upload(o, chat_file(2)))
    with pytest.raises(openai.NotFoundError):
        o.batches.retrieve(azure_batch.id)
    with pytest.raises(openai.NotFoundError):
        a.batches.retrieve(openai_batch.id)
    with pytest.raises(openai.NotFoundError):
        a.batches.cancel(openai_batch.id)
    assert [b.id for b in a.batches.list()] == [azure_batch.id]
    assert [b.id for b in o.batches.list()] == [openai_batch.id]
    # an OpenAI file is not an Azure batch's input
    crossed = wait(a, create(a, o.files.list().data[0].id, endpoint="/chat/completions").id)
    assert crossed.status == "failed" and crossed.errors and crossed.errors.data
    assert crossed.errors.data[0].code == "file_not_found"
    assert wait(a, azure_batch.id).status == wait(o, openai_batch.id).status == "completed"
    assert emulator.stats()["batches_by_status"] == {"completed": 2, "failed": 1}


def test_faults_reach_the_azure_routes(emulator_factory: Any) -> None:
    emulator = emulator_factory(create_429_rate=1.0, upload_429_rate=1.0, retry_after_seconds=0.05)
    c = azure_client(emulator, max_retries=1)
    with pytest.raises(openai.RateLimitError) as info:
        upload(c, azure_file(1))
    assert _azure_error(info.value)["code"] == "429"
    assert info.value.response.headers["retry-after"] == "1"
    emulator.set_faults(upload_429_rate=0.0)
    file_id = upload(c, azure_file(1))
    with pytest.raises(openai.RateLimitError):
        create(c, file_id, endpoint="/chat/completions")
    emulator.set_faults(create_429_rate=0.0, retrieve_5xx_rate=1.0)
    batch = create(c, file_id, endpoint="/chat/completions")
    with pytest.raises(openai.InternalServerError) as server:
        c.batches.retrieve(batch.id)
    assert _azure_error(server.value)["code"] == "InternalServerError"
    assert emulator.stats()["faults_injected"] == {
        "upload_429": 2,
        "create_429": 2,
        "retrieve_5xx": 2,
    }


def test_restart_resumes_an_azure_batch(tmp_path: Path) -> None:
    config = EmulatorConfig(port=0, data_dir=tmp_path, processing_seconds=1.0, seed=3)
    with run_emulator_in_thread(config) as emulator:
        c = azure_client(emulator)
        batch = create(c, upload(c, azure_file(20)), endpoint="/chat/completions")
        wait(c, batch.id, statuses={"in_progress"})
    with run_emulator_in_thread(config.model_copy(update={"port": 0})) as emulator:
        c = azure_client(emulator)
        done = wait(c, batch.id)
        assert done.status == "completed"
        lines = read_jsonl(c, done.output_file_id)
        assert len(lines) == 20 and "prompt_filter_results" in lines[0]["response"]["body"]
        with pytest.raises(openai.NotFoundError):
            client(emulator, max_retries=0).batches.retrieve(batch.id)


def test_a_data_dir_from_before_providers_keeps_its_objects_as_openai(tmp_path: Path) -> None:
    path = tmp_path / "emulator.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE files(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
            "purpose TEXT NOT NULL, obj TEXT NOT NULL);"
            "CREATE TABLE batches(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,"
            " status TEXT NOT NULL, obj TEXT NOT NULL, internal TEXT NOT NULL);"
            "INSERT INTO files(id, purpose, obj) "
            """VALUES('file-old', 'batch', '{"id": "file-old"}');"""
        )

    async def scenario() -> None:
        store = Store(path)
        await store.open()
        try:
            assert await store.get_file("file-old") == {"id": "file-old"}
            assert await store.get_file("file-old", "azure") is None
        finally:
            await store.close()

    asyncio.run(scenario())
