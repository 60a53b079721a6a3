"""The emulator's Anthropic API at its edges, through the anthropic SDK and raw HTTP: headers,
error shapes, create-time limits, injected faults and durability across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from anthropic import (
    AuthenticationError,
    BadRequestError,
    ContentTooLargeError,
    InternalServerError,
    OverloadedError,
    RateLimitError,
)

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.runner import RunningEmulator, run_emulator_in_thread
from tests.emulator.anthropic_helpers import claude, params, requests, results, wait_ended
from tests.fixtures_emulator import EmulatorFactory

VERSION = {"anthropic-version": "2023-06-01"}


def test_headers_key_and_version(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(api_key="sk-ant-emulator")
    root = emulator.anthropic_base_url
    with pytest.raises(AuthenticationError) as caught:
        claude(emulator, api_key="wrong").messages.batches.list()
    assert caught.value.body["error"] == {  # type: ignore[index]
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }
    missing = httpx.get(f"{root}/v1/messages/batches", headers=VERSION)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"] == "x-api-key header is required"
    no_version = httpx.get(f"{root}/v1/messages/batches", headers={"x-api-key": "sk-ant-emulator"})
    assert no_version.status_code == 400
    assert no_version.json()["type"] == "error"
    assert no_version.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    bearer = httpx.get(
        f"{root}/v1/messages/batches?beta=true",
        headers=VERSION | {"authorization": "Bearer sk-ant-emulator", "anthropic-beta": "x"},
    )
    assert bearer.status_code == 200 and bearer.json()["data"] == []
    assert claude(emulator).beta.messages.batches.list(betas=["message-batches-2024-09-24"])
    unknown = httpx.get(f"{root}/v1/messages/nowhere", headers=VERSION)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([{"custom_id": "has space", "params": params()}], "custom_id: String should match"),
        ([{"custom_id": "x" * 65, "params": params()}], "custom_id: String should match"),
        ([{"custom_id": "a", "params": params()}] * 2, "Duplicate custom_id 'a'"),
        ([{"custom_id": "a"}], "params: Input should be a valid dictionary"),
        ([], "at least 1 item"),
    ],
)
def test_create_refuses_a_bad_envelope(
    emulator: RunningEmulator, bad: list[Any], match: str
) -> None:
    with pytest.raises(BadRequestError, match=match) as caught:
        claude(emulator).messages.batches.create(requests=bad)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert emulator.stats()["batches_created"] == 0


def test_limits_on_requests_and_bytes(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(anthropic_max_batch_requests=3, anthropic_max_batch_bytes=2000)
    c = claude(emulator)
    with pytest.raises(BadRequestError, match="at most 3 items"):
        c.messages.batches.create(requests=requests(4))
    big: list[Any] = [{"custom_id": "big", "params": params("x" * 3000)}]
    with pytest.raises(ContentTooLargeError) as caught:
        c.messages.batches.create(requests=big)
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert c.messages.batches.create(requests=requests(3)).request_counts.processing == 3


def test_errored_lines_by_type(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(
        anthropic_error_rate=0.5, anthropic_error_types=["overloaded_error", "rate_limit_error"]
    )
    c = claude(emulator)
    ended = wait_ended(c, c.messages.batches.create(requests=requests(60)).id)
    lines = results(c, ended).values()
    kinds = {line.result.error.error.type for line in lines if line.result.type == "errored"}
    assert kinds == {"overloaded_error", "rate_limit_error"}
    assert 10 < ended.request_counts.errored < 50
    assert ended.request_counts.errored + ended.request_counts.succeeded == 60
    emulator.set_faults(anthropic_error_rate=1.0, anthropic_error_types=["api_error"])
    ended = wait_ended(c, c.messages.batches.create(requests=requests(5)).id)
    assert {line.result.error.error.type for line in results(c, ended).values()} == {  # type: ignore[union-attr]
        "api_error"
    }


def test_create_429_529_and_retrieve_500(emulator: RunningEmulator) -> None:
    c = claude(emulator)
    batch = c.messages.batches.create(requests=requests(1))
    emulator.set_faults(create_429_rate=1.0)
    with pytest.raises(RateLimitError) as limited:
        c.messages.batches.create(requests=requests(1))
    assert limited.value.response.headers["retry-after"]
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    emulator.set_faults(create_429_rate=0.0, create_529_rate=1.0)
    with pytest.raises(OverloadedError) as overloaded:
        c.beta.messages.batches.create(requests=requests(1))
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    emulator.set_faults(create_529_rate=0.0, retrieve_5xx_rate=1.0)
    with pytest.raises(InternalServerError) as failed:
        c.messages.batches.retrieve(batch.id)
    assert failed.value.status_code == 500
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    counts = emulator.stats()["faults_injected"]
    assert counts == {"create_429": 1, "create_529": 1, "retrieve_5xx": 1}


def test_a_batch_survives_a_restart_and_ends_as_it_would_have(tmp_path: Path) -> None:
    config = EmulatorConfig(port=0, data_dir=tmp_path, processing_seconds=1.0, seed=7)
    with run_emulator_in_thread(config) as emulator:
        c = claude(emulator)
        batch = c.messages.batches.create(requests=requests(5))
        canceled = c.messages.batches.create(requests=requests(5, "other"))
        c.messages.batches.cancel(canceled.id)
        assert emulator.stats()["active_batches"] == 2
    with run_emulator_in_thread(config.model_copy(update={"port": 0})) as emulator:
        c = claude(emulator)
        ended = wait_ended(c, batch.id)
        assert ended.request_counts.succeeded == 5
        assert {line.result.type for line in results(c, ended).values()} == {"succeeded"}
        ended = wait_ended(c, canceled.id)
        assert ended.request_counts.canceled + ended.request_counts.succeeded == 5
        assert ended.cancel_initiated_at is not None
        assert emulator.stats()["lines_submitted"] == 10
