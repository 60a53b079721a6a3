"""Every batch validation error, every bad upload and bad create request, through the SDK."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.runner import RunningEmulator, run_emulator_in_thread
from tests.emulator.helpers import chat_line, client, create, jsonl, upload, wait


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """One emulator for the many read-only validation cases (starting one costs ~0.3 s)."""
    config = EmulatorConfig(
        port=0, processing_seconds=0.2, seed=1, data_dir=tmp_path_factory.mktemp("emulator")
    )
    with run_emulator_in_thread(config) as running:
        yield running


def _line(**changes: Any) -> dict[str, Any]:
    line = chat_line("x")
    line.update(changes)
    return line


def _without(name: str) -> dict[str, Any]:
    line = chat_line("x")
    del line[name]
    return line


CASES: dict[str, tuple[list[Any], str, int | None]] = {
    "invalid_json": ([chat_line("a"), b"{not json"], "invalid_json_line", 2),
    "missing_custom_id": ([_without("custom_id")], "missing_required_parameter", 1),
    "missing_body": ([chat_line("a"), _without("body")], "missing_required_parameter", 2),
    "missing_model": (
        [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}],
        "missing_required_parameter",
        1,
    ),
    "invalid_url": ([chat_line("a"), chat_line("b", url="/v1/embeddings")], "invalid_url", 2),
    "duplicate_custom_id": (
        [chat_line("a"), chat_line("b"), chat_line("a")],
        "duplicate_custom_id",
        3,
    ),
    "mismatched_model": (
        [chat_line("a"), chat_line("b", model="gpt-4o")],
        "mismatched_model",
        2,
    ),
    "streaming": ([chat_line("a", stream=True)], "streaming_unsupported", 1),
    "empty": ([], "empty_file", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_input_fails_the_batch(shared_emulator: RunningEmulator, case: str) -> None:
    lines, code, line_no = CASES[case]
    c = client(shared_emulator)
    batch = create(c, upload(c, jsonl(lines)))
    failed = wait(c, batch.id)
    assert failed.status == "failed"
    assert failed.failed_at is not None
    assert failed.output_file_id is None
    assert failed.errors is not None and failed.errors.data
    error = failed.errors.data[0]
    assert error.code == code
    assert error.line == line_no
    assert error.message


def test_more_than_50000_lines_fails(emulator: RunningEmulator) -> None:
    line = json.dumps(chat_line("ID", "hi")).encode()
    data = b"\n".join(line.replace(b"ID", str(i).encode()) for i in range(50_001))
    c = client(emulator)
    failed = wait(c, create(c, upload(c, data)).id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data
    assert failed.errors.data[0].code == "too_many_tasks"
    assert "50000" in (failed.errors.data[0].message or "")


def test_exactly_50000_lines_is_accepted(emulator_factory: Any) -> None:
    emulator = emulator_factory(processing_seconds=0.0)
    line = json.dumps(chat_line("ID", "hi")).encode()
    data = b"\n".join(line.replace(b"ID", str(i).encode()) for i in range(50_000))
    c = client(emulator)
    done = wait(c, create(c, upload(c, data)).id, timeout=60)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.completed == 50_000


def test_unknown_input_file_fails_the_batch(emulator: RunningEmulator) -> None:
    c = client(emulator)
    failed = wait(c, create(c, "file-doesnotexist").id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data
    assert failed.errors.data[0].code == "file_not_found"


def test_token_limit_fault(emulator: RunningEmulator) -> None:
    emulator.set_faults(token_limit_failure_rate=1.0)
    c = client(emulator)
    failed = wait(c, create(c, upload(c, jsonl([chat_line("a")]))).id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data
    assert failed.errors.data[0].code == "token_limit_exceeded"
    assert "gpt-4o-mini" in (failed.errors.data[0].message or "")


def test_validation_failure_fault(emulator: RunningEmulator) -> None:
    emulator.set_faults(validation_failure_rate=1.0)
    c = client(emulator)
    failed = wait(c, create(c, upload(c, jsonl([chat_line("a")]))).id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    assert set(exc.body) == {"message", "type", "param", "code"}
    return exc.body


def test_batch_upload_needs_jsonl_name(emulator: RunningEmulator) -> None:
    c = client(emulator)
    with pytest.raises(openai.BadRequestError) as info:
        c.files.create(file=("input.json", io.BytesIO(b"{}\n")), purpose="batch")
    assert _error(info.value)["type"] == "invalid_request_error"
    assert info.value.status_code == 400
    # other purposes accept other names
    assert c.files.create(file=("notes.txt", io.BytesIO(b"x")), purpose="user_data").id


def test_batch_upload_size_limit(emulator_factory: Any) -> None:
    emulator = emulator_factory(max_batch_file_bytes=1000)
    c = client(emulator)
    with pytest.raises(openai.BadRequestError) as info:
        c.files.create(file=("big.jsonl", io.BytesIO(b"x" * 1001)), purpose="batch")
    assert _error(info.value)["message"] == "File is too large."
    assert c.files.create(file=("ok.jsonl", io.BytesIO(b"x" * 1000)), purpose="batch").id


def test_upload_needs_a_valid_purpose(emulator: RunningEmulator) -> None:
    c = client(emulator)
    with pytest.raises(openai.BadRequestError) as info:
        c.files.create(file=("a.jsonl", io.BytesIO(b"x")), purpose="nonsense")  # type: ignore[arg-type]
    assert _error(info.value)["param"] == "purpose"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"endpoint": "/v1/nope"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
    ],
)
def test_create_rejects_bad_parameters(
    shared_emulator: RunningEmulator, kwargs: dict[str, Any], param: str
) -> None:
    c = client(shared_emulator)
    file_id = upload(c, jsonl([chat_line("a")]))
    args: dict[str, Any] = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    with pytest.raises(openai.BadRequestError) as info:
        c.batches.create(**(args | kwargs))
    assert _error(info.value)["param"] == param
    # the limits themselves are allowed
    ok = c.batches.create(
        **args,
        metadata={f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)},
    )
    assert ok.metadata is not None and len(ok.metadata) == 16


def test_create_needs_required_parameters(emulator: RunningEmulator) -> None:
    c = client(emulator)
    with pytest.raises(openai.BadRequestError) as info:
        c.post("/batches", body={"endpoint": "/v1/chat/completions"}, cast_to=object)
    error = _error(info.value)
    assert (error["code"], error["param"]) == ("missing_required_parameter", "input_file_id")


def test_input_file_must_have_purpose_batch(emulator: RunningEmulator) -> None:
    c = client(emulator)
    other = c.files.create(
        file=("a.jsonl", io.BytesIO(jsonl([chat_line("a")]))), purpose="user_data"
    )
    with pytest.raises(openai.BadRequestError):
        create(c, other.id)


def test_upload_streams_the_exact_bytes_to_storage(shared_emulator: RunningEmulator) -> None:
    """A multi-MiB upload (several 1 MiB writes, a part boundary split across network reads)
    comes back byte for byte, and nothing is left in the emulator's tmp directory."""
    c = client(shared_emulator)
    body = b"".join(
        json.dumps(chat_line(f"r{i}", "\u00e9" * (i % 700)), ensure_ascii=False).encode() + b"\n"
        for i in range(4000)
    )
    assert len(body) > 3 * (1 << 20)
    created = c.files.create(file=("big.jsonl", io.BytesIO(body)), purpose="batch")
    assert created.bytes == len(body)
    assert c.files.content(created.id).read() == body
    assert not list((shared_emulator.data_dir / "tmp").iterdir())


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", b"x", "Missing boundary in multipart."),
        ("multipart/form-data; boundary=b", b"--b\r\nbroken", "Invalid multipart data."),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; filename="a.jsonl"\r\n\r\nx\r\n--b--\r\n',
            'The Content-Disposition header field "name" must be provided.',
        ),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\nx\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n\r\ny\r\n'
            b"--b--\r\n",
            "Too many files. Maximum number of files is 1.",
        ),
    ],
)
def test_malformed_upload_bodies_are_400s_and_leave_no_file(
    shared_emulator: RunningEmulator, content_type: str, body: bytes, message: str
) -> None:
    response = httpx.post(
        f"{shared_emulator.base_url}/files",
        content=body,
        headers={"content-type": content_type, "authorization": "Bearer sk-x"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"] == message
    assert not list((shared_emulator.data_dir / "tmp").iterdir())


def test_an_upload_missing_a_field_leaves_no_file(shared_emulator: RunningEmulator) -> None:
    before = {p.name for p in (shared_emulator.data_dir / "files").iterdir()}
    response = httpx.post(
        f"{shared_emulator.base_url}/files",
        files={"file": ("a.jsonl", b"x" * 5000)},
        headers={"authorization": "Bearer sk-x"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"
    assert not list((shared_emulator.data_dir / "tmp").iterdir())
    assert {p.name for p in (shared_emulator.data_dir / "files").iterdir()} == before
