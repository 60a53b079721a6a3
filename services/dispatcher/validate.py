"""Validation of incoming ``requests`` messages: can this value go into a batch?

``validate(value, max_line_bytes)`` is pure: it returns either a ``Valid`` request (its exact
JSONL line, without the newline, plus endpoint, model and custom_id) or an ``Invalid`` reason.
``validate_row`` is the same check for the consuming loop: a valid request comes back as a plain
``Row`` tuple ``(custom_id, endpoint, model, line)``, no object built per request.

The line is the consumed value itself (not copied) when it already is a complete batch line on
one line (what ingest publishes), else the request re-encoded with orjson (``method`` added,
newlines removed). It applies the rules of ``shared.contracts.RequestLine`` (the one schema),
with a fast path for well-formed lines and the pydantic model as the authority for the rest:

=================  ==========================================================
reason             meaning
=================  ==========================================================
``not_json``       the value is not JSON (or not UTF-8)
``not_batch_line`` JSON, but not an OpenAI batch line (missing/extra fields...)
``url_not_allowed`` ``url`` is not one of the Batch API endpoints
``stream``         ``body.stream`` is true
``no_model``       ``body.model`` is missing or empty
``oversize``       the line alone is larger than a whole batch may be
=================  ==========================================================

An invalid request becomes a dead letter (``dead_letters.py``); it never stops the dispatcher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from batchpipe.shared.contracts import (
    CUSTOM_ID_PATTERN,
    ENDPOINTS,
    RequestLine,
    is_valid_custom_id,
)

_FIELDS: Final = frozenset({"custom_id", "method", "url", "body"})
_CUSTOM_ID_MATCH: Final = re.compile(CUSTOM_ID_PATTERN).fullmatch
_ENDPOINTS: Final = frozenset(ENDPOINTS)
_MISSING: Final = object()

Row = tuple[str, str, str, bytes]  # (custom_id, endpoint, model, line) of a valid request


@dataclass(frozen=True, slots=True)
class Valid:
    custom_id: str
    endpoint: str
    model: str
    line: bytes  # the exact JSONL line, without its b"\n" (the file writer adds it)


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str
    detail: str


def validate(value: bytes | None, max_line_bytes: int) -> Valid | Invalid:
    """Decide whether a raw ``requests`` value can go into a batch."""
    result = validate_row(value, max_line_bytes)
    if isinstance(result, Invalid):
        return result
    custom_id, endpoint, model, line = result
    return Valid(custom_id=custom_id, endpoint=endpoint, model=model, line=line)


def validate_row(value: bytes | None, max_line_bytes: int) -> Row | Invalid:
    """``validate`` for the consuming loop: a valid request is a plain ``Row`` tuple
    ``(custom_id, endpoint, model, line)`` (no object built per request); same rules, same
    reasons."""
    if value is None:
        return Invalid("not_json", "empty value")
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid("not_json", str(exc))
    if not isinstance(parsed, dict):
        return Invalid("not_batch_line", "not a JSON object")
    body = parsed.get("body")
    url = parsed.get("url")
    custom_id = parsed.get("custom_id")
    # Fast path: a well-formed line passes these plain checks (equivalent to RequestLine).
    if (
        type(body) is dict
        and body.get("stream") is not True
        and type(model := body.get("model")) is str
        and model
        and type(url) is str
        and url in _ENDPOINTS
        and type(custom_id) is str
        and _CUSTOM_ID_MATCH(custom_id) is not None
        # custom_id, url and body are there: no other field than ``method`` (== "POST")
        and ((size := len(parsed)) == 3 or (size == 4 and parsed.get("method", _MISSING) == "POST"))
    ):
        if size == 4 and value.find(b"\n") < 0 and value.find(b"\r") < 0:
            # Already a complete batch line on one line: the window keeps the consumed value
            # itself (no re-encoding, no copy). (``find`` is ~4x faster than ``in`` here.)
            if len(value) + 1 > max_line_bytes:
                return _oversize(len(value) + 1, max_line_bytes)
            return (custom_id, url, model, value)
        parsed["method"] = "POST"
    else:
        reason = _slow_check(parsed)
        if reason is not None:
            return reason
        parsed.setdefault("method", "POST")
        model = parsed["body"]["model"]
    # An exact-size copy: orjson's own result keeps an ~8 KiB allocation per object, which
    # would make a 50,000-line window take ~8x its JSONL size in memory.
    line = bytes(memoryview(orjson.dumps(parsed)))
    if len(line) + 1 > max_line_bytes:
        return _oversize(len(line) + 1, max_line_bytes)
    return (parsed["custom_id"], parsed["url"], model, line)


def _oversize(size: int, max_line_bytes: int) -> Invalid:
    return Invalid(
        "oversize",
        f"line of {size} bytes > the batch limit of {max_line_bytes} bytes "
        "(BATCHPIPE_BATCH_MAX_BYTES, or the enqueued-token budget)",
    )


def _slow_check(parsed: dict[str, Any]) -> Invalid | None:
    body = parsed.get("body")
    if isinstance(body, dict):
        if body.get("stream") is True:
            return Invalid("stream", "body.stream=true is not supported by the Batch API")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return Invalid("no_model", "body.model is required (a non-empty string)")
    url = parsed.get("url")
    if isinstance(url, str) and url not in ENDPOINTS:
        return Invalid("url_not_allowed", f"url {url[:100]!r} is not a Batch API endpoint")
    custom_id = parsed.get("custom_id")
    if (
        isinstance(body, dict)
        and isinstance(url, str)
        and isinstance(custom_id, str)
        and is_valid_custom_id(custom_id)
        and parsed.get("method", "POST") == "POST"
        and set(parsed) <= _FIELDS
    ):
        return None
    # Slow path: the contract model explains what is wrong.
    try:
        RequestLine.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        return Invalid("not_batch_line", f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    return None  # pragma: no cover (the fast path accepts all that the model accepts)
