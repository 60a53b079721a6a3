"""Builders for Anthropic's Message Batches objects (``MessageBatch``, the deleted marker, list
pages), with every field the anthropic SDK types define.

Role: the one place that knows the JSON shape of an Anthropic batch. The stored object keeps
the timestamps as RFC 3339 strings, as the API returns them; ``results_url`` is not stored but
made at presentation from the URL the client called, so it points back at this emulator
whatever host name the client reached it by (localhost, a compose service name).
Invariant: ``request_counts`` always sums to the number of requests of the batch.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

BATCH_ID_PREFIX = "msgbatch_"
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")


def new_message_batch_id() -> str:
    return f"{BATCH_ID_PREFIX}{uuid.uuid4().hex[:24]}"


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch as the API writes it: ``2024-08-20T18:37:24.100435Z``."""
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def request_counts(processing: int, **ended: int) -> Json:
    """The counts object: ``processing`` plus each result type's count (0 when not given)."""
    return {"processing": processing} | {name: int(ended.get(name, 0)) for name in RESULT_TYPES}


def message_batch(batch_id: str, total: int, created: float, expires: float) -> Json:
    """A new batch: every request processing until the batch ends."""
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": request_counts(total),
        "created_at": rfc3339(created),
        "ended_at": None,
        "expires_at": rfc3339(expires),
        "cancel_initiated_at": None,
        "archived_at": None,
        "results_url": None,
    }


def present(obj: Json, root_url: str) -> Json:
    """The batch as the client sees it: with ``results_url`` once it has ended."""
    if obj["processing_status"] != "ended":
        return obj
    return obj | {"results_url": f"{root_url.rstrip('/')}/v1/messages/batches/{obj['id']}/results"}


def deleted(batch_id: str) -> Json:
    return {"id": batch_id, "type": "message_batch_deleted"}


def page(data: list[Json], has_more: bool) -> Json:
    """A list page: ``first_id``/``last_id`` are the cursors the SDK pages on."""
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
