"""Builders for the API objects (``FileObject``, ``Batch``, list pages), with every field the
openai SDK types define, and the live view of a batch (request counts while in progress)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

Json = dict[str, Any]

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
ENDED_STATUSES = frozenset({"completed", "failed", "expired"})


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def file_object(
    file_id: str,
    size: int,
    filename: str,
    purpose: str,
    created_at: int,
    expires_at: int | None = None,
) -> Json:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "expires_at": expires_at,
        "status_details": None,
    }


def batch_object(
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    created_at: int,
    expires_at: int,
    metadata: dict[str, str] | None,
) -> Json:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": completion_window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created_at,
        "in_progress_at": None,
        "expires_at": expires_at,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
        "model": None,
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        },
    }


def present_batch(obj: Json, internal: Json, failure_rate: float, now: float | None = None) -> Json:
    """The batch as a client sees it now: while in progress, request counts grow with time
    (an estimate; the exact counts are set when the batch finishes)."""
    if obj["status"] != "in_progress" or internal.get("in_progress_f") is None:
        return obj
    now = time.time() if now is None else now
    seconds = float(internal.get("processing_seconds", 0.0))
    fraction = 1.0 if seconds <= 0 else min(1.0, (now - internal["in_progress_f"]) / seconds)
    total = int(obj["request_counts"]["total"])
    done = math.floor(total * max(fraction, 0.0))
    failed = math.floor(done * failure_rate)
    return obj | {"request_counts": {"total": total, "completed": done - failed, "failed": failed}}


def list_page(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
