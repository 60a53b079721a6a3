"""OpenAI's Files + Batches protocol, shared by the OpenAI and Azure OpenAI providers.

A window's JSONL file is uploaded (``files.create(purpose="batch")``), the batch is created
from it with batchpipe's tags as ``metadata`` (``batches.create``, the SDK's retries off: a
retried create is a duplicate batch), found again after a crash by that metadata in the
newest-first listing, followed with ``batches.retrieve``, and read back from its output and
error files (``with_streaming_response`` + ``iter_lines``: a file is never held in memory).

Uploads: given a synchronous client (``upload_client``), the upload runs in a thread:
streaming a 49 MiB file through the async client costs the event loop ~0.07-0.1 s of CPU,
time the consuming loop needs; in a thread the socket writes release the GIL
(bench/README.md, Dispatcher). ``_LargeReads`` makes those writes few and large.

What differs between OpenAI and Azure (client, limits, line URLs, expiry ranges) is a
subclass's: ``openai.py``, ``azure.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import openai
import orjson
from openai import AsyncOpenAI, OpenAI

from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.base import (
    TAG_DISPATCH_ID,
    TAG_MODEL,
    TAG_TOKENS,
    TERMINAL_BATCH_STATUSES,
    BatchErrorInfo,
    BatchOutcome,
    BatchProvider,
    CreateRequest,
    LineStream,
    Pending,
    Progress,
    RequestLineBytes,
    RequestStream,
    ResultLine,
    Submission,
    closing_stream,
)

log = get_logger(__name__)

# Statuses in which a batch's tokens count as enqueued.
ENQUEUED: Final = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# A "24h" batch ends within its completion window plus finalizing; older batches have ended.
HORIZON_SECONDS: Final = 26 * 3600
# The listing is searched this far before a dispatch was planned (clock skew).
FIND_MARGIN_SECONDS: Final = 3600
UPLOAD_CHUNK: Final = 8 << 20


class _LargeReads(io.FileIO):
    """The JSONL file, read at least ``UPLOAD_CHUNK`` bytes at a time: httpx asks a file part
    for 64 KiB at a time, and from a thread each chunk must win back the GIL from the busy
    consuming loop (a switch interval, 5 ms, per chunk). Eight 8 MiB ``sendall`` calls each
    run without the GIL. (httpx only iterates what ``read`` returns; the length still comes
    from ``fstat``.)"""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return super().read()
        return super().read(max(size, UPLOAD_CHUNK))


def _upload(client: OpenAI, path: Path, extra: Mapping[str, Any]) -> str:
    with _LargeReads(path) as f:
        created = client.files.create(
            file=(path.name, f, "application/jsonl"), purpose="batch", **extra
        )
        return created.id


def outcome_of(batch: Any) -> BatchOutcome | None:
    """A ``BatchOutcome`` from an SDK ``Batch``, or None while it is not finished yet."""
    status = getattr(batch, "status", None)
    if status not in TERMINAL_BATCH_STATUSES:
        return None
    errors: list[BatchErrorInfo] = []
    data: Sequence[Any] = getattr(getattr(batch, "errors", None), "data", None) or ()
    for e in data:
        errors.append(
            BatchErrorInfo(
                code=str(getattr(e, "code", None) or "batch_failed"),
                message=str(getattr(e, "message", None) or ""),
                line=getattr(e, "line", None),
            )
        )
    finished_at = {
        "completed": getattr(batch, "completed_at", None),
        "failed": getattr(batch, "failed_at", None),
        "expired": getattr(batch, "expired_at", None),
        "cancelled": getattr(batch, "cancelled_at", None),
    }[status]
    return BatchOutcome(
        status=status,
        output_file_id=getattr(batch, "output_file_id", None),
        error_file_id=getattr(batch, "error_file_id", None),
        errors=tuple(errors),
        finished_at=int(finished_at) if finished_at else None,
    )


def progress_of(batch: Any) -> Progress:
    counts = getattr(batch, "request_counts", None)
    return Progress(
        status=str(getattr(batch, "status", "unknown")),
        counts=(
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts is not None
            else {}
        ),
        outcome=outcome_of(batch),
    )


def tokens_of(batch: Any, model: str) -> int:
    """Estimated tokens ``batch`` holds enqueued for ``model`` (0 once it ended, for another
    model, or for a batch batchpipe did not create)."""
    if getattr(batch, "status", None) not in ENQUEUED:
        return 0
    metadata = getattr(batch, "metadata", None) or {}
    if metadata.get(TAG_MODEL) != model_tag(model):
        return 0
    try:
        return max(0, int(metadata.get(TAG_TOKENS, "0")))
    except ValueError:
        return 0


def model_tag(model: str) -> str:
    """The model as stored in batch metadata (values are limited to 512 characters)."""
    return model[:512]


def _submission(batch: Any) -> Submission:
    return Submission(
        batch_id=batch.id,
        input_file_id=getattr(batch, "input_file_id", None),
        created_at=int(batch.created_at),
    )


def parse_result(raw: str | bytes) -> ResultLine | None:
    """One output/error file line, parsed; None unless it is an object with a custom_id."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("custom_id"), str):
        return None
    return parsed


class FilesBatchesProvider(BatchProvider):
    """The Files + Batches protocol over one ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``)."""

    transient_errors: tuple[type[Exception], ...] = (openai.APIError,)

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        upload_client: OpenAI | None = None,
        file_expires_after: int | None = None,
        output_expires_after: int | None = None,
    ) -> None:
        self.client = client
        self.upload_client = upload_client
        self._file_extra: dict[str, Any] = (
            {"expires_after": {"anchor": "created_at", "seconds": file_expires_after}}
            if file_expires_after
            else {}
        )
        self._create_extra: dict[str, Any] = (
            {"output_expires_after": {"anchor": "created_at", "seconds": output_expires_after}}
            if output_expires_after
            else {}
        )

    # --- dispatch -----------------------------------------------------------------------
    async def stage(self, path: Path, dispatch_id: str) -> str:
        if self.upload_client is not None:
            return await asyncio.to_thread(_upload, self.upload_client, path, self._file_extra)
        with path.open("rb") as f:
            created = await self.client.files.create(
                file=(path.name, f, "application/jsonl"), purpose="batch", **self._file_extra
            )
        return created.id

    async def create(self, request: CreateRequest) -> Submission:
        kwargs: dict[str, Any] = {
            "input_file_id": request.staged,
            "endpoint": self.batch_url(request.endpoint),
            "completion_window": "24h",
            "metadata": dict(request.tags),
            **self._create_extra,
        }
        batch = await self.client.with_options(max_retries=0).batches.create(**kwargs)
        return _submission(batch)

    async def find(
        self,
        dispatch_ids: Iterable[str],
        *,
        not_before: float | None = None,
        staged: Mapping[str, str] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> dict[str, Submission | Pending]:
        """By the listing's ``metadata.batchpipe_dispatch_id``, newest first; stops when every
        id is found or the batches get older than ``not_before`` (minus a margin)."""
        wanted = set(dispatch_ids)
        found: dict[str, Submission | Pending] = {}
        if not wanted:
            return found
        floor = None if not_before is None else not_before - FIND_MARGIN_SECONDS
        async for batch in self.client.batches.list(limit=100):
            metadata: Mapping[str, str] = batch.metadata or {}
            dispatch_id = metadata.get(TAG_DISPATCH_ID)
            if dispatch_id in wanted and dispatch_id not in found:
                found[dispatch_id] = _submission(batch)
                if len(found) == len(wanted):
                    break
            if floor is not None and batch.created_at < floor:
                break
        return found

    async def find_by_id(self, batch_id: str) -> Submission | None:
        try:
            return _submission(await self.client.batches.retrieve(batch_id))
        except openai.NotFoundError:
            return None

    async def enqueued_tokens(self, model: str) -> int:
        """The estimates of ``model``'s batchpipe batches that have not ended, from the
        listing (newest first, down to ``HORIZON_SECONDS`` back)."""
        oldest = time.time() - HORIZON_SECONDS
        total = 0
        async for batch in self.client.batches.list(limit=100):
            if batch.created_at < oldest:
                break
            total += tokens_of(batch, model)
        return total

    # --- poll ---------------------------------------------------------------------------
    async def retrieve(self, batch_id: str) -> Progress:
        return progress_of(await self.client.batches.retrieve(batch_id))

    @contextlib.asynccontextmanager
    async def _open(self, file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """A file's content, streamed, as its lines (without line ends)."""
        async with self.client.files.with_streaming_response.content(file_id) as response:
            yield response.iter_lines()

    async def _lines(self, file_id: str, *, blank: bool = False) -> AsyncIterator[str]:
        async with self._open(file_id) as lines:
            async for raw in lines:
                if blank or raw.strip():
                    yield raw

    async def _results(self, outcome: BatchOutcome) -> AsyncIterator[ResultLine | None]:
        # the poller's hot loop (50,000 lines a batch): one generator between the HTTP stream
        # and the classifier, the parse inlined
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        for file_id in (outcome.output_file_id, outcome.error_file_id):
            if not file_id:
                continue
            async with self._open(file_id) as lines:
                async for raw in lines:
                    if not raw or raw.isspace():
                        continue
                    try:
                        parsed = loads(raw)
                    except decode_error:
                        yield None
                        continue
                    if type(parsed) is dict and type(parsed.get("custom_id")) is str:
                        yield parsed
                    else:
                        yield None

    def results(self, record: BatchRecord, outcome: BatchOutcome) -> LineStream:
        return closing_stream(self._results(outcome))

    async def result_of(self, batch_id: str, custom_id: str) -> ResultLine | None:
        """Scans the output file, then the error file (the order ``results`` reads them in)."""
        outcome = (await self.retrieve(batch_id)).outcome
        if outcome is None:
            return None
        async with closing_stream(self._results(outcome)) as lines:
            async for line in lines:
                if line is not None and line["custom_id"] == custom_id:
                    found: ResultLine = line
                    return found
        return None

    def request_line(self, raw: str, parsed: dict[str, Any]) -> bytes:
        """An input file line (``raw``, parsed) as the value of a ``requests`` message."""
        return raw.encode("utf-8")

    async def _requests(self, record: BatchRecord) -> AsyncIterator[RequestLineBytes]:
        if record.input_file_id is None:
            return
        number = 0
        async for raw in self._lines(record.input_file_id, blank=True):
            number += 1
            if not raw.strip():
                continue
            parsed = parse_result(raw)
            if parsed is None:
                log.warning("request.unreadable_input_line", batch_id=record.batch_id)
                continue
            yield number, parsed["custom_id"], self.request_line(raw, parsed)

    def requests(self, record: BatchRecord) -> RequestStream:
        return closing_stream(self._requests(record))

    async def cancel(self, batch_id: str) -> None:
        await self.client.batches.cancel(batch_id)

    async def close(self) -> None:
        await self.client.close()
        if self.upload_client is not None:
            self.upload_client.close()
