"""Validation of a batch input file, line by line, as the provider does while a batch is
``validating``.

Pure: ``validate_lines`` takes an iterable of raw lines (the file is streamed, never read
whole) and returns the errors (``errors.data[]`` entries), the model, the line count and the
custom_ids. Per-request body problems (e.g. no ``messages``) are not batch errors: like OpenAI,
they come back later as a 400 line in the error file. What differs between OpenAI and Azure
(the code of a model mismatch, whether a model must be a known deployment) is a ``ModelRules``,
picklable so a worker process can apply it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

MAX_REPORTED_ERRORS = 10
TOO_MANY_REQUESTS_CODE = "too_many_tasks"  # the code reported for OpenAI (third-party evidence)
EMPTY_FILE_CODE = "empty_file"


@dataclass(frozen=True)
class ModelRules:
    """How the lines' ``model`` is checked: every line the same one (else ``mismatch_code``),
    and, when ``known`` is set, one of those names (else ``unknown_code``)."""

    mismatch_code: str = "mismatched_model"
    known: frozenset[str] | None = None
    unknown_code: str = "model_not_found"
    noun: str = "model"


OPENAI_MODELS = ModelRules()


@dataclass
class ValidationResult:
    total: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _line_error(
    line_no: int, raw: bytes, endpoint: str, model: str | None, rules: ModelRules
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(error or None, custom_id, model of this line)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return (
            batch_error(
                "invalid_json_line",
                f"This line is not parseable as valid JSON (line {line_no}).",
                line_no,
            ),
            None,
            None,
        )
    if not isinstance(obj, dict):
        return (
            batch_error("invalid_json_line", "Each line must be a JSON object.", line_no),
            None,
            None,
        )
    for name in ("custom_id", "method", "url", "body"):
        if name not in obj or obj[name] is None:
            return (
                batch_error(
                    "missing_required_parameter",
                    f"Missing required parameter: '{name}'.",
                    line_no,
                    name,
                ),
                None,
                None,
            )
    custom_id = obj["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return (
            batch_error(
                "invalid_request", "custom_id must be a non-empty string.", line_no, "custom_id"
            ),
            None,
            None,
        )
    if obj["method"] != "POST":
        return (
            batch_error("invalid_method", "Only POST is supported.", line_no, "method"),
            custom_id,
            None,
        )
    if obj["url"] != endpoint:
        return (
            batch_error(
                "invalid_url",
                f"The URL provided for this request does not match the batch endpoint "
                f"'{endpoint}'.",
                line_no,
                "url",
            ),
            custom_id,
            None,
        )
    body = obj["body"]
    if not isinstance(body, dict):
        return (
            batch_error("invalid_request", "'body' must be a JSON object.", line_no, "body"),
            custom_id,
            None,
        )
    line_model = body.get("model")
    if not isinstance(line_model, str) or not line_model:
        return (
            batch_error(
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                line_no,
                "body.model",
            ),
            custom_id,
            None,
        )
    if model is not None and line_model != model:
        return (
            batch_error(
                rules.mismatch_code,
                f"The provided {rules.noun} '{line_model}' does not match the {rules.noun} "
                f"'{model}' of the rest of the batch. Every request in a batch must use the "
                f"same {rules.noun}.",
                line_no,
                "body.model",
            ),
            custom_id,
            line_model,
        )
    if rules.known is not None and line_model not in rules.known:
        return (
            batch_error(
                rules.unknown_code,
                f"The provided {rules.noun} '{line_model}' does not exist or is not a batch "
                f"{rules.noun}.",
                line_no,
                "body.model",
            ),
            custom_id,
            line_model,
        )
    if body.get("stream"):
        return (
            batch_error(
                "streaming_unsupported",
                "Streaming is not supported in the Batch API.",
                line_no,
                "body.stream",
            ),
            custom_id,
            line_model,
        )
    return None, custom_id, line_model


def validate_lines(
    lines: Iterable[bytes], endpoint: str, max_lines: int, rules: ModelRules = OPENAI_MODELS
) -> ValidationResult:
    """Check every line; stop collecting after ``MAX_REPORTED_ERRORS`` errors."""
    result = ValidationResult()
    seen: set[str] = set()
    for line_no, raw in enumerate(lines, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        result.total = line_no
        if len(result.errors) >= MAX_REPORTED_ERRORS:
            continue
        error, custom_id, line_model = _line_error(line_no, raw, endpoint, result.model, rules)
        if result.model is None and line_model is not None:
            result.model = line_model
        if error is None and custom_id is not None:
            if custom_id in seen:
                error = batch_error(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' is duplicated; custom_id must be unique "
                    "within a batch.",
                    line_no,
                    "custom_id",
                )
            else:
                seen.add(custom_id)
                result.custom_ids.append(custom_id)
        if error is not None:
            result.errors.append(error)
    if result.total == 0:
        result.errors.append(batch_error(EMPTY_FILE_CODE, "The input file is empty."))
    elif result.total > max_lines:
        result.errors.insert(
            0,
            batch_error(
                TOO_MANY_REQUESTS_CODE,
                f"The batch input file has {result.total} requests; the maximum is "
                f"{max_lines} requests per batch.",
            ),
        )
    if result.errors:
        result.custom_ids = []
    return result


def validate_file(
    path: Path, endpoint: str, max_lines: int, rules: ModelRules = OPENAI_MODELS
) -> ValidationResult:
    """``validate_lines`` over a file on disk, streamed (run it in a thread)."""
    with path.open("rb", buffering=1 << 20) as handle:
        return validate_lines(handle, endpoint, max_lines, rules)
