"""The provider interface: what the dispatcher and the poller may ask of a batch API.

Every provider (OpenAI, Azure OpenAI, and the next ones: Anthropic Message Batches, Vertex AI,
Bedrock) is one module implementing ``BatchProvider``; the services only ever talk to this
interface, so adding a provider never touches their code. The steps mirror a dispatch and a
poll:

- ``stage(path)``: make a window's JSONL file available to ``create`` (OpenAI: upload it as a
  file; a provider that takes requests inline may read it itself and return ``None``);
- ``create(...)``: create the batch, exactly once per call (the SDK's own retries off: a
  retried create is a second batch); the caller's retry loop (``services/dispatcher/
  submit.py``) calls ``find`` before trying again;
- ``find(dispatch_ids)``: the batches earlier creates made for these dispatches, after a
  crash; how (batch metadata, a local index, a listing) is the provider's business;
- ``retrieve(batch_id)``: status and counts, with a ``BatchOutcome`` once it has ended;
- ``results(record, outcome)``: every result line, parsed and in the one common shape the
  poller classifies (``ResultLine``): ``{"custom_id", "response": {"status_code", "body"}}``
  or ``{"custom_id", "error": {"code", "message"}}``, ``body`` being the provider's own
  response object;
- ``result_of(batch_id, custom_id)``: one request's result line of an ended batch, in the
  same shape, read back on demand (``batchpipe results fetch``: the body of a result too
  large for the results topic);
- ``requests(record)``: the original request lines of a batch, in the ``requests`` topic's
  shape, to re-publish the ones that are retried;
- ``cancel``, ``enqueued_tokens`` (for the per-model token budget) and ``close``.

Invariants: a provider never retries ``create`` itself; ``results`` and ``requests`` yield
the same sequence every time for a finished batch (the poller's replay after a crash skips
what it already committed, by position); errors worth retrying are instances of
``transient_errors``; the provider's ``limits`` are hard limits the windows stay within.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from batchpipe.shared.contracts import BatchRecord
from batchpipe.shared.settings import Settings

BatchStatus = Literal["completed", "failed", "expired", "cancelled"]
TERMINAL_BATCH_STATUSES: Final = frozenset({"completed", "failed", "expired", "cancelled"})

# A parsed result line in the common shape (see the module docstring); None for a line that
# could not be read.
ResultLine = dict[str, Any]
# An original request line: its 1-based line number in the batch's input (the number a
# provider's validation errors name), its custom_id and its bytes in the ``requests`` topic's
# shape.
RequestLineBytes = tuple[int, str, bytes]


# The share of a provider's byte limit a window fills when ``BATCHPIPE_BATCH_MAX_BYTES`` is
# unset: room for what the provider counts beyond the window's JSONL (Anthropic counts the
# translated JSON request body, which a chat line's translation may make slightly longer).
WINDOW_SHARE: Final = 0.95


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits of one batch: requests and bytes of its input (JSONL, one ``\\n`` each)."""

    max_requests: int
    max_bytes: int

    @property
    def window_bytes(self) -> int:
        """Where a window is cut by default: ``WINDOW_SHARE`` of ``max_bytes``."""
        return int(self.max_bytes * WINDOW_SHARE)


@dataclass(frozen=True, slots=True)
class Submission:
    """A created batch, as ``create`` and ``find`` report it."""

    batch_id: str
    input_file_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class Pending:
    """``find`` cannot tell yet: a batch that may be the dispatch's (``batch_id``) has not
    ended. The caller neither creates again nor abandons the window; it asks again later."""

    batch_id: str


@dataclass(frozen=True, slots=True)
class BatchErrorInfo:
    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What the provider said about a batch that reached a terminal status."""

    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[BatchErrorInfo, ...] = ()
    finished_at: int | None = None  # when it completed / failed / expired / was cancelled


@dataclass(frozen=True, slots=True)
class Progress:
    """One ``retrieve``: the provider's status, its request counts (``total``,
    ``completed``, ``failed`` at least) and, once the batch has ended, its outcome."""

    status: str
    counts: Mapping[str, int] = field(default_factory=dict)
    outcome: BatchOutcome | None = None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Everything ``create`` needs for one window. ``tags`` are batchpipe's labels of the
    batch (dispatch id, model, request count, token estimate), stored wherever the provider
    can keep them."""

    dispatch_id: str
    endpoint: str
    model: str
    path: Path | None  # the window's file, if this process still has it
    staged: str | None
    request_count: int
    tags: Mapping[str, str]


LineStream = AbstractAsyncContextManager[AsyncIterator[ResultLine | None]]
RequestStream = AbstractAsyncContextManager[AsyncIterator[RequestLineBytes]]


class BatchProvider(ABC):
    """One provider's batch API (see the module docstring for the contract)."""

    name: ClassVar[str]
    limits: Limits
    # exceptions of this provider's SDK (and the network) that a retry may cure
    transient_errors: tuple[type[Exception], ...]

    @property
    def retryable(self) -> tuple[type[Exception], ...]:
        """``transient_errors`` plus the network's own (``OSError``, ``TimeoutError``)."""
        return (*self.transient_errors, OSError, TimeoutError)

    @abstractmethod
    async def stage(self, path: Path, dispatch_id: str) -> str | None:
        """Make the window's file available to ``create``; the id to give it (or None)."""

    @abstractmethod
    async def create(self, request: CreateRequest) -> Submission:
        """Create the batch once (no retry inside)."""

    @abstractmethod
    async def find(
        self,
        dispatch_ids: Iterable[str],
        *,
        not_before: float | None = None,
        staged: Mapping[str, str] | None = None,
        counts: Mapping[str, int] | None = None,
    ) -> Mapping[str, Submission | Pending]:
        """dispatch id -> the batch created for it, for those that have one (``Pending``
        while the provider cannot tell yet). ``staged`` and ``counts``: each dispatch's
        staged input and request count, for providers that identify a batch by content."""

    @abstractmethod
    async def find_by_id(self, batch_id: str) -> Submission | None:
        """The batch with this id, if the provider knows it."""

    @abstractmethod
    async def retrieve(self, batch_id: str) -> Progress:
        """The batch's status now."""

    @abstractmethod
    def results(self, record: BatchRecord, outcome: BatchOutcome) -> LineStream:
        """Every result line of the ended batch, in a fixed order (common shape)."""

    @abstractmethod
    async def result_of(self, batch_id: str, custom_id: str) -> ResultLine | None:
        """The result line of ``custom_id`` in the ended batch ``batch_id`` (common shape):
        the first that names it, in ``results`` order, so the very line the poller published
        from; None if no line does (or the batch has not ended). The results are streamed:
        only that one line is ever held."""

    @abstractmethod
    def requests(self, record: BatchRecord) -> RequestStream:
        """The batch's original request lines, in the ``requests`` topic's shape, in order
        (lines that cannot be read are logged and left out)."""

    @abstractmethod
    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch."""

    async def enqueued_tokens(self, model: str) -> int:
        """Estimated tokens of ``model`` in batchpipe's batches that have not ended (for the
        token budget); providers without such a quota answer 0."""
        return 0

    @abstractmethod
    async def close(self) -> None:
        """Release the provider's clients."""

    def batch_line(self, line: bytes) -> bytes:
        """A ``requests``-topic line as this provider's batch input expects it (the
        dispatcher writes the window's file with it). Windows count the topic line's bytes:
        a provider whose lines can grow here declares ``limits`` with room for it."""
        return line

    def batch_url(self, url: str) -> str:
        """The URL a request line carries in this provider's batch input, for a
        ``requests``-topic URL (``/v1/chat/completions``)."""
        return url

    # whether ``refuses`` can ever refuse (saves the check for providers that never do)
    may_refuse: ClassVar[bool] = False
    # the ``requests``-topic URLs its batches serve (None: every one batchpipe accepts)
    endpoints: ClassVar[frozenset[str] | None] = None

    @classmethod
    def refuses(cls, settings: Settings, url: str, body: Mapping[str, Any]) -> str | None:
        """Why this provider cannot run a request line (refused with 422 by ingest,
        dead-lettered by the dispatcher), or None when it can. Needs no client: ingest asks
        it without the provider's credentials."""
        return None

    @classmethod
    def refusal(
        cls, settings: Settings, url: str, body: Callable[[], Mapping[str, Any]]
    ) -> str | None:
        """``endpoints``, then ``refuses`` (the body parsed only if it is asked for)."""
        if cls.endpoints is not None and url not in cls.endpoints:
            served = ", ".join(sorted(cls.endpoints))
            return f"{cls.name} batches do not serve {url} (they serve {served})"
        return cls.refuses(settings, url, body()) if cls.may_refuse else None

    @classmethod
    def checks_lines(cls) -> bool:
        """Whether ``refusal`` can refuse anything (the check is skipped otherwise)."""
        return cls.may_refuse or cls.endpoints is not None

    @classmethod
    def may_refuse_url(cls, url: str) -> bool:
        """Whether ``refusal`` can refuse a line sent to ``url`` (ingest skips the check,
        and the parse of the body it needs, otherwise)."""
        return cls.may_refuse or (cls.endpoints is not None and url not in cls.endpoints)


# batchpipe's labels of a batch (``CreateRequest.tags``): which dispatch made it, for which
# model, how many requests and an estimate of its input tokens.
TAG_DISPATCH_ID: Final = "batchpipe_dispatch_id"
TAG_MODEL: Final = "batchpipe_model"
TAG_REQUESTS: Final = "batchpipe_requests"
TAG_TOKENS: Final = "batchpipe_est_tokens"


@contextlib.asynccontextmanager
async def closing_stream(lines: Any) -> AsyncIterator[Any]:
    """An async generator as the context manager ``results`` / ``requests`` return: closed
    on exit (and with it the files or consumers it has open), however the reader stops."""
    try:
        yield lines
    finally:
        await lines.aclose()
