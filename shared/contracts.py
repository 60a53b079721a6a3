"""The message contracts of the four public topics, defined once and used by every service.

- ``requests``: key ``custom_id``; value one OpenAI Batch input line (``RequestLine``);
  header ``batchpipe-attempt`` counts re-submissions (absent = 0); header ``batchpipe-key``
  names the ingest API key the request came with (a non-secret name, never the key itself;
  absent = unattributed).
- ``batches``: key the provider's batch id; value ``BatchRecord``.
- ``results``: key ``custom_id``; value ``ResultMessage``.
- ``dead-letters``: key of the failed message; value ``DeadLetter``.

The two internal topics (dispatch ledger, poller state; all six are listed in
``shared.topics``) define their records next to the code that owns them.

Values are JSON, serialised with orjson. ``encode``/``decode`` are the only (de)serialisers.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

# OpenAI's batch endpoints, then Anthropic's native Messages API (``/v1/messages``): which
# provider serves which is the providers' ``endpoints`` (``shared.providers``).
Endpoint = Literal[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
    "/v1/moderations",
    "/v1/messages",
]
ENDPOINTS: Final[tuple[str, ...]] = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
    "/v1/moderations",
    "/v1/messages",
)

CUSTOM_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
_CUSTOM_ID_RE: Final = re.compile(CUSTOM_ID_PATTERN)

ATTEMPT_HEADER: Final = "batchpipe-attempt"
KEY_HEADER: Final = "batchpipe-key"
KEY_NAME_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
_KEY_NAME_RE: Final = re.compile(KEY_NAME_PATTERN)

ResultStatus = Literal["succeeded", "failed", "expired", "cancelled"]

# A dead letter keeps at most this much of the raw value, so that it always fits in a message.
DEAD_LETTER_MAX_VALUE_BYTES: Final = 64 * 1024

Headers = Sequence[tuple[str, bytes]]


def is_valid_custom_id(value: str) -> bool:
    return _CUSTOM_ID_RE.fullmatch(value) is not None


def is_valid_key_name(value: str) -> bool:
    return _KEY_NAME_RE.fullmatch(value) is not None


def now_unix() -> int:
    return int(time.time())


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestLine(_Message):
    """One OpenAI Batch input line: the value of a ``requests`` message.

    Validated as OpenAI validates a batch file line, plus the rules a batch needs to be cut:
    the body names a model and does not ask for streaming.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="requests")

    custom_id: str = Field(pattern=CUSTOM_ID_PATTERN, description="Unique id of the request.")
    method: Literal["POST"] = "POST"
    url: Endpoint = Field(description="The OpenAI endpoint; one per batch.")
    body: dict[str, Any] = Field(description="The request body, as sent to the endpoint.")

    @field_validator("body")
    @classmethod
    def _body_is_batchable(cls, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("body.model is required (a non-empty string)")
        if body.get("stream") is True:
            raise ValueError("body.stream=true is not supported by the Batch API")
        return body

    @property
    def model(self) -> str:
        return str(self.body["model"])


class BatchRecord(_Message):
    """What the poller needs to follow one submitted batch: the value of a ``batches`` message.

    Per-request data is kept out of it (the input file holds the lines), so it stays small for
    50,000 requests: only the attempts of re-submitted requests are listed, and the API key
    name is one field because the dispatcher never mixes keys in one batch.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="batches")

    batch_id: str = Field(description="The provider's batch id (also the message key).")
    provider: str = Field("openai", description="The provider that runs the batch.")
    input_file_id: str | None = Field(
        None, description="The provider's id of the batch's input file, if it has one."
    )
    endpoint: Endpoint
    model: str
    request_count: int = Field(ge=1)
    dispatch_id: str = Field(description="Id of the dispatch that cut this batch.")
    attempts: dict[str, int] = Field(
        default_factory=dict,
        description="Attempt number of each re-submitted request (custom_id -> attempt >= 1); "
        "requests not listed are on their first attempt (0).",
    )
    input_bytes: int = Field(ge=0, description="Size of the JSONL input file.")
    window_opened_at: float = Field(description="Unix time the window's first request arrived.")
    submitted_at: int = Field(description="Unix time the batch was created.")
    api_key: str | None = Field(
        None,
        description="Name of the ingest API key every request of this batch came with "
        "(header batchpipe-key); None: unattributed.",
    )

    def attempt_of(self, custom_id: str) -> int:
        return self.attempts.get(custom_id, 0)


class ResultResponse(_Message):
    status_code: int
    body: dict[str, Any] | None = None


class ResultError(_Message):
    code: str
    message: str


class ResultUsage(_Message):
    """Token counts in one shape for every provider (``shared/usage.py``); the provider's
    own usage object stays in ``response.body``."""

    input_tokens: int = Field(0, ge=0, description="Tokens in, cached ones included.")
    output_tokens: int = Field(0, ge=0, description="Tokens out, reasoning ones included.")
    total_tokens: int = Field(0, ge=0)
    cached_tokens: int | None = Field(None, ge=0, description="Input tokens read from cache.")
    reasoning_tokens: int | None = Field(None, ge=0, description="Output tokens of reasoning.")


# ``ResultError.code`` of a result whose response body was left out: its message would not fit
# in the results topic (``body_ref`` says where the body is kept).
RESULT_TOO_LARGE: Final = "result_too_large"
# ``ResultError.code`` of a request that was to be retried but whose line would not fit in a
# message of the requests topic: its terminal result instead.
RETRY_TOO_LARGE: Final = "retry_too_large"


class ResultRef(_Message):
    """Where the response body of a ``result_too_large`` result is kept: at its provider, in
    the batch's results (``batchpipe results fetch`` reads it back)."""

    provider: str = Field(description="The provider that holds the batch's results.")
    batch_id: str = Field(description="The provider's batch id.")
    custom_id: str = Field(description="The request's custom_id in that batch's results.")
    body_bytes: int = Field(ge=0, description="Size of the response body left out (JSON).")


class ResultMessage(_Message):
    """The one terminal result of one request: the value of a ``results`` message.

    ``body_ref`` is present only on a result whose message would not fit in the results topic
    (``error.code`` ``result_too_large``, ``response.body`` null); every other result is
    serialised without it, byte for byte as before the field existed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="results")

    custom_id: str
    status: ResultStatus
    batch_id: str | None = Field(description="The batch that gave this result (None if none).")
    provider: str = Field("openai", description="The provider that ran the request.")
    response: ResultResponse | None = Field(
        None, description="The provider's response: its HTTP status and its own body object."
    )
    error: ResultError | None = None
    attempts: int = Field(ge=1, description="How many batches this request was submitted in.")
    model: str = Field(description="The model the request named (Azure: the deployment).")
    usage: ResultUsage | None = None
    submitted_at: int | None = Field(description="Unix time its last batch was created.")
    completed_at: int = Field(description="Unix time the result was produced.")
    endpoint: Endpoint | None = Field(None, description="The endpoint the request was sent to.")
    api_key: str | None = Field(
        None, description="Name of the ingest API key of the request (None: unattributed)."
    )

    body_ref: ResultRef | None = Field(
        None,
        description="Only with error result_too_large: where the response body left out is "
        "kept (absent otherwise).",
    )

    @model_serializer(mode="wrap")
    def _without_absent_ref(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("body_ref", 0) is None:
            del data["body_ref"]
        return data


class DeadLetter(_Message):
    """Anything that could not be processed: the value of a ``dead-letters`` message."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="dead-letters")

    source_topic: str
    partition: int
    offset: int
    key: str | None = Field(description="The message key, decoded as UTF-8 (lossy).")
    value: str = Field(description="The raw value: UTF-8 text, or base64 (see value_encoding).")
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    value_size: int = Field(ge=0, description="Size of the original value in bytes.")
    value_truncated: bool = False
    reason: str
    service: str
    timestamp: float

    @classmethod
    def of(
        cls,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        service: str,
        timestamp: float | None = None,
    ) -> DeadLetter:
        raw = value or b""
        kept = raw[:DEAD_LETTER_MAX_VALUE_BYTES]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", errors="replace") if key is not None else None,
            value=text,
            value_encoding=encoding,
            value_size=len(raw),
            value_truncated=len(raw) > len(kept),
            reason=reason,
            service=service,
            timestamp=time.time() if timestamp is None else timestamp,
        )


M = TypeVar("M", bound=BaseModel)

SCHEMAS: Final[dict[str, type[BaseModel]]] = {
    "requests": RequestLine,
    "batches": BatchRecord,
    "results": ResultMessage,
    "dead-letters": DeadLetter,
}


def encode(message: BaseModel) -> bytes:
    """Serialise a contract message with orjson (None fields kept, as the contract shows)."""
    return orjson.dumps(message.model_dump(mode="json"))


def decode(model: type[M], data: bytes | str) -> M:
    """Parse and validate a message; raises ``ValueError`` (incl. pydantic's) on bad input."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return model.model_validate(parsed)


def key_bytes(key: str) -> bytes:
    return key.encode("utf-8")


def attempt_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> int:
    """The ``batchpipe-attempt`` header as an int; absent or unreadable counts as 0."""
    for name, value in headers or ():
        if name == ATTEMPT_HEADER:
            try:
                return max(0, int(value.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                return 0
    return 0


def attempt_headers(attempt: int) -> list[tuple[str, bytes]]:
    """Headers for a request on its ``attempt``-th re-submission (none for the first)."""
    return [(ATTEMPT_HEADER, str(attempt).encode("ascii"))] if attempt > 0 else []


def key_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The ``batchpipe-key`` header (an API key's name); absent or not a valid name is None."""
    for name, value in headers or ():
        if name == KEY_HEADER:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if is_valid_key_name(text) else None
    return None


def key_headers(key_name: str | None) -> list[tuple[str, bytes]]:
    """Headers naming the API key a request came with (none when unattributed)."""
    return [(KEY_HEADER, key_name.encode("ascii"))] if key_name else []


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one topic's values; ``name`` is a key of ``SCHEMAS``."""
    return SCHEMAS[name].model_json_schema()
