"""Builders shared by the poller tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.providers.files_api import FilesBatchesProvider


def record(
    batch_id: str = "batch_1",
    request_count: int = 3,
    attempts: dict[str, int] | None = None,
    input_file_id: str = "file-in",
) -> BatchRecord:
    return BatchRecord(
        batch_id=batch_id,
        input_file_id=input_file_id,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        request_count=request_count,
        dispatch_id="d-1",
        attempts=attempts or {},
        input_bytes=100,
        window_opened_at=1.0,
        submitted_at=1_700_000_000,
    )


def request_line(custom_id: str, content: str = "hi") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
    }


def ok_line(custom_id: str, prompt: int = 5, completion: int = 7) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": "r",
            "body": {
                "object": "chat.completion",
                "model": "gpt-4o-mini",
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        },
        "error": None,
    }


def http_error_line(
    custom_id: str, status: int, code: str | None = "server_error"
) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": "r",
            "body": {"error": {"message": f"status {status}", "type": "t", "code": code}},
        },
        "error": None,
    }


def error_line(custom_id: str, code: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": code},
    }


class MemoryProvider(FilesBatchesProvider):
    """The Files + Batches provider over in-memory files (lists of JSON objects), counting
    which files it opens: the real parsing and ordering, no HTTP."""

    def __init__(self, files: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(cast(Any, None))
        self.files = files
        self.opened: list[str] = []

    @contextlib.asynccontextmanager
    async def _open(self, file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        self.opened.append(file_id)

        async def lines() -> AsyncIterator[str]:
            for line in self.files[file_id]:
                yield orjson.dumps(line).decode()

        yield lines()
