"""The Anthropic provider: Message Batches through the official ``anthropic`` SDK.

What differs from the Files + Batches protocol, and how batchpipe keeps its guarantees:

- **Requests inline, no input file.** ``stage`` keeps the window's lines (``requests``-topic
  shape) in batchpipe's own input topic (``input_store.py``) and returns its reference, which
  the ledger records like an uploaded file id; ``create`` translates each line
  (``shared/anthropic_messages.py``: chat-completions bodies become Messages params) and sends
  them inline. ``requests`` reads the original lines back from the input topic, so a retried
  request is re-published exactly as it came in.
- **Restricted custom_ids.** Anthropic takes ``^[a-zA-Z0-9_-]{1,64}$``; other ids are sent as a
  deterministic mapped id (``anthropic_custom_id``) and mapped back, from the staged lines,
  before a result leaves ``results``: users always see their own ``custom_id``.
- **No batch metadata**, so a batch cannot be found by its dispatch id. ``find`` instead
  identifies a batch by its requests: among the batches created since the dispatch was
  planned, one with the window's request count whose results name one of the window's
  custom_ids is the window's batch. Results exist only once a batch has ended, so a candidate
  still processing makes the answer ``Pending``: the caller neither creates again nor abandons
  the window, and asks again later. A batch is thus never created twice, and a window whose
  create never reached Anthropic is abandoned once no candidate can be it.
- **Results in the common shape.** ``succeeded`` → ``response`` 200 with Anthropic's own
  Message as the body; ``errored`` → ``response`` with the HTTP status of its error type and
  Anthropic's error object (``overloaded_error`` 529, ``api_error`` 500 and
  ``rate_limit_error`` 429 are retried by the classifier like 5xx lines); ``expired`` →
  ``batch_expired`` (retried, then ``expired``); ``canceled`` → ``batch_cancelled``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Final

import anthropic
import orjson
from anthropic import AsyncAnthropic

from batchpipe.shared.anthropic_messages import (
    CHAT_URL,
    MESSAGES_URL,
    Untranslatable,
    anthropic_custom_id,
    messages_params,
)
from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import (
    BatchOutcome,
    BatchProvider,
    CreateRequest,
    Limits,
    LineStream,
    Pending,
    Progress,
    RequestLineBytes,
    RequestStream,
    ResultLine,
    Submission,
    closing_stream,
)
from batchpipe.shared.providers.input_store import InputRef, InputStore
from batchpipe.shared.settings import Settings, SettingsError

log = get_logger(__name__)

ANTHROPIC_LIMITS = Limits(max_requests=100_000, max_bytes=256 * 1000 * 1000)
_BODY_HEAD: Final = b'{"requests":['
_BODY_TAIL: Final = b"]}"
_BODY_CHUNK: Final = 4 * 1024 * 1024


async def _file_lines(path: Path) -> AsyncIterator[bytes]:
    """The non-blank lines of a JSONL file, read ``_BODY_CHUNK`` bytes at a time off the
    loop."""
    with path.open("rb") as f:
        rest = b""
        while block := await asyncio.to_thread(f.read, _BODY_CHUNK):
            parts = (rest + block).split(b"\n")
            rest = parts.pop()
            for line in parts:
                if line.strip():
                    yield line
        if rest.strip():
            yield rest


def _body_file(window: Path | None) -> tuple[bool, Path]:
    """Whether the window's file is still here, and a new empty file for the create body
    (beside the window's, else in the temporary directory)."""
    local = window is not None and window.exists()
    folder = window.parent if window is not None and window.parent.exists() else None
    handle, name = tempfile.mkstemp(prefix="anthropic-body-", suffix=".json", dir=folder)
    os.close(handle)
    return local, Path(name)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while block := await asyncio.to_thread(f.read, 256 * 1024):
            yield block


# HTTP status of each error type, as Anthropic's API answers it.
ERROR_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
FIND_MARGIN_SECONDS: Final = 600


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def make_anthropic(settings: Settings) -> AsyncAnthropic:
    if settings.anthropic_api_key is None:
        raise SettingsError(
            "ANTHROPIC_API_KEY: not set, but models are routed to anthropic "
            "(BATCHPIPE_PROVIDER_ROUTES / BATCHPIPE_DEFAULT_PROVIDER)"
        )
    return AsyncAnthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=settings.openai_max_retries,
        timeout=settings.openai_timeout_seconds,
    )


def result_line(raw: Mapping[str, Any], custom_id: str) -> ResultLine:
    """One Anthropic result (``{"custom_id", "result": {...}}``) in the common shape."""
    result = raw.get("result")
    kind = result.get("type") if isinstance(result, Mapping) else None
    if kind == "succeeded" and isinstance(result, Mapping):
        return {
            "custom_id": custom_id,
            "response": {"status_code": 200, "body": result.get("message")},
        }
    if kind == "errored" and isinstance(result, Mapping):
        body = result.get("error")
        inner = body.get("error") if isinstance(body, Mapping) else None
        error_type = inner.get("type") if isinstance(inner, Mapping) else None
        status = ERROR_STATUS.get(str(error_type), 500)
        return {"custom_id": custom_id, "response": {"status_code": status, "body": body}}
    if kind == "expired":
        return {
            "custom_id": custom_id,
            "error": {"code": "batch_expired", "message": "The batch expired before this ran."},
        }
    if kind == "canceled":
        return {
            "custom_id": custom_id,
            "error": {"code": "batch_cancelled", "message": "The batch was cancelled."},
        }
    return {"custom_id": custom_id, "error": {"code": "malformed_result", "message": str(kind)}}


def outcome_of(batch: Any) -> BatchOutcome | None:
    if getattr(batch, "processing_status", None) != "ended":
        return None
    counts = batch.request_counts
    if batch.cancel_initiated_at is not None:
        status = "cancelled"
    elif counts.expired and not (counts.succeeded or counts.errored):
        status = "expired"
    else:
        status = "completed"
    return BatchOutcome(status=status, finished_at=_ts(batch.ended_at))  # type: ignore[arg-type]


def progress_of(batch: Any) -> Progress:
    c = batch.request_counts
    total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
    return Progress(
        status=str(batch.processing_status),
        counts={
            "total": total,
            "completed": c.succeeded,
            "failed": c.errored + c.canceled + c.expired,
        },
        outcome=outcome_of(batch),
    )


class AnthropicProvider(BatchProvider):
    name: ClassVar[str] = "anthropic"
    limits = ANTHROPIC_LIMITS
    transient_errors: tuple[type[Exception], ...] = (anthropic.APIError,)

    def __init__(self, client: AsyncAnthropic, store: InputStore, *, max_tokens: int) -> None:
        self.client = client
        self.store = store
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> AnthropicProvider:
        return cls(
            make_anthropic(settings),
            InputStore(settings),
            max_tokens=settings.anthropic_default_max_tokens,
        )

    # --- dispatch -----------------------------------------------------------------------
    async def stage(self, path: Path, dispatch_id: str) -> str:
        with path.open("rb") as f:
            ref = await self.store.write(dispatch_id, (line.rstrip(b"\n") for line in f))
        return str(ref)

    async def _lines(self, staged: str) -> AsyncIterator[bytes]:
        async for line in self.store.read(InputRef.parse(staged)):
            if line.strip():
                yield line

    may_refuse: ClassVar[bool] = True
    # native Messages lines, and chat lines translated (``shared.anthropic_messages``)
    endpoints: ClassVar[frozenset[str] | None] = frozenset({CHAT_URL, MESSAGES_URL})

    @classmethod
    def refuses(cls, settings: Settings, url: str, body: Mapping[str, Any]) -> str | None:
        """What ``create`` could not translate: refused before it is ever sent."""
        try:
            messages_params(url, body, default_max_tokens=settings.anthropic_default_max_tokens)
        except Untranslatable as exc:
            return str(exc)
        return None

    def inline_request(self, line: bytes) -> dict[str, Any]:
        """One request line as an entry of ``requests`` (raises ``Untranslatable``)."""
        parsed = orjson.loads(line)
        params = messages_params(parsed["url"], parsed["body"], default_max_tokens=self.max_tokens)
        return {"custom_id": anthropic_custom_id(parsed["custom_id"]), "params": params}

    async def create(self, request: CreateRequest) -> Submission:
        """``POST /v1/messages/batches`` with the window's requests, streamed. Each line is
        translated once, into a body file beside the window's (``_write_body``), so the
        body is sent with its length, refused here rather than by Anthropic if over the
        limit, and never held whole in memory (a window may be 256 MB). The lines come from
        the window's own file when this process still has it, else from the staged topic."""
        assert request.staged is not None, "Anthropic windows are staged first"
        local, body = await asyncio.to_thread(_body_file, request.path)
        lines = _file_lines(request.path) if local and request.path else self._lines(request.staged)
        try:
            size = await self._write_body(lines, body)
            if size > ANTHROPIC_LIMITS.max_bytes:
                raise ValueError(
                    f"the window's request body is {size} bytes, over Anthropic's limit of "
                    f"{ANTHROPIC_LIMITS.max_bytes}: lower BATCHPIPE_BATCH_MAX_BYTES"
                )
            batch = await self.client.with_options(max_retries=0).post(
                "/v1/messages/batches",
                cast_to=anthropic.types.messages.MessageBatch,
                content=_file_chunks(body),
                options={
                    "headers": {"content-type": "application/json", "content-length": str(size)}
                },
            )
        finally:
            await asyncio.to_thread(body.unlink, missing_ok=True)
        return Submission(
            batch_id=batch.id,
            input_file_id=request.staged,
            created_at=int(batch.created_at.timestamp()),
        )

    async def _write_body(self, lines: AsyncIterator[bytes], path: Path) -> int:
        """``{"requests":[...]}`` of ``lines`` into ``path``, written ``_BODY_CHUNK`` bytes
        at a time off the loop; returns its size."""
        size = 0
        with path.open("wb") as f:
            chunk = bytearray(_BODY_HEAD)
            first = True
            async for line in lines:
                if not first:
                    chunk += b","
                first = False
                chunk += orjson.dumps(self.inline_request(line))
                if len(chunk) >= _BODY_CHUNK:
                    size += len(chunk)
                    await asyncio.to_thread(f.write, bytes(chunk))
                    chunk.clear()
            chunk += _BODY_TAIL
            size += len(chunk)
            await asyncio.to_thread(f.write, bytes(chunk))
        return size

    async def find(
        self,
        dispatch_ids: Iterable[str],
        *,
        not_before: float | None = None,
        staged: Mapping[str, str] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> dict[str, Submission | Pending]:
        """By content: a candidate batch (created since ``not_before``, with the window's
        request count) whose results name one of the window's custom_ids; ``Pending`` while
        such a candidate has not ended."""
        wanted = [d for d in dispatch_ids if staged and d in staged]
        found: dict[str, Submission | Pending] = {}
        if not wanted or staged is None or counts is None:
            return found
        owner: dict[str, str] = {}
        for dispatch_id in wanted:
            async for line in self._lines(staged[dispatch_id]):
                owner[anthropic_custom_id(orjson.loads(line)["custom_id"])] = dispatch_id
        floor = None if not_before is None else not_before - FIND_MARGIN_SECONDS
        sizes = {counts[d] for d in wanted}
        async for batch in self.client.messages.batches.list(limit=100):
            if floor is not None and batch.created_at.timestamp() < floor:
                break
            progress = progress_of(batch)
            if progress.counts["total"] not in sizes:
                continue
            if progress.outcome is None:
                for dispatch_id in wanted:
                    if counts[dispatch_id] == progress.counts["total"]:
                        found.setdefault(dispatch_id, Pending(batch.id))
                continue
            first = await self._first_result_id(batch.id)
            match = owner.get(first or "")
            if match is not None:
                found[match] = Submission(
                    batch.id, staged[match], int(batch.created_at.timestamp())
                )
        return found

    async def _first_result_id(self, batch_id: str) -> str | None:
        async with self.client.messages.batches.with_streaming_response.results(batch_id) as r:
            async for raw in r.iter_lines():
                if raw.strip():
                    custom_id = orjson.loads(raw).get("custom_id")
                    return custom_id if isinstance(custom_id, str) else None
        return None

    async def find_by_id(self, batch_id: str) -> Submission | None:
        try:
            batch = await self.client.messages.batches.retrieve(batch_id)
        except anthropic.NotFoundError:
            return None
        return Submission(batch.id, None, int(batch.created_at.timestamp()))

    # --- poll ---------------------------------------------------------------------------
    async def retrieve(self, batch_id: str) -> Progress:
        return progress_of(await self.client.messages.batches.retrieve(batch_id))

    async def _original_ids(self, record: BatchRecord) -> dict[str, str]:
        """Mapped id -> the user's custom_id, for the ids that had to be mapped."""
        mapped: dict[str, str] = {}
        if record.input_file_id is None:
            return mapped
        async for line in self._lines(record.input_file_id):
            custom_id: str = orjson.loads(line)["custom_id"]
            sent = anthropic_custom_id(custom_id)
            if sent != custom_id:
                mapped[sent] = custom_id
        return mapped

    async def _results(self, record: BatchRecord) -> AsyncIterator[ResultLine | None]:
        originals = await self._original_ids(record)
        results = self.client.messages.batches.with_streaming_response.results
        async with results(record.batch_id) as response:
            async for raw in response.iter_lines():
                if not raw.strip():
                    continue
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    yield None
                    continue
                sent = parsed.get("custom_id") if isinstance(parsed, dict) else None
                if not isinstance(sent, str):
                    yield None
                    continue
                yield result_line(parsed, originals.get(sent, sent))

    def results(self, record: BatchRecord, outcome: BatchOutcome) -> LineStream:
        return closing_stream(self._results(record))

    async def result_of(self, batch_id: str, custom_id: str) -> ResultLine | None:
        """Finds the line by the id the batch was sent with (``anthropic_custom_id``)."""
        sent = anthropic_custom_id(custom_id)
        async with self.client.messages.batches.with_streaming_response.results(batch_id) as r:
            async for raw in r.iter_lines():
                if not raw.strip():
                    continue
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and parsed.get("custom_id") == sent:
                    return result_line(parsed, custom_id)
        return None

    async def _requests(self, record: BatchRecord) -> AsyncIterator[RequestLineBytes]:
        if record.input_file_id is None:
            return
        number = 0
        async for line in self.store.read(InputRef.parse(record.input_file_id)):
            number += 1
            if not line.strip():
                continue
            yield number, orjson.loads(line)["custom_id"], line

    def requests(self, record: BatchRecord) -> RequestStream:
        return closing_stream(self._requests(record))

    async def cancel(self, batch_id: str) -> None:
        await self.client.messages.batches.cancel(batch_id)

    async def close(self) -> None:
        await self.client.close()
        await self.store.close()
