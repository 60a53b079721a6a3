"""Validation step of ingest: the raw body of one ``POST /requests`` → request lines, or errors.

Pure and synchronous: the body is parsed once with orjson and every item is checked once.
The body is ``{"data": [item, ...]}`` (the original sample's shape) or one item on its own.
An item is one of

- a list of chat messages: a *partial* request whose body becomes
  ``{"model": DEFAULT_MODEL, **DEFAULT_REQUEST_KWARGS, "messages": [...]}``;
- an object ``{"custom_id"?, "messages": [...], "model"?, ...other chat parameters}``;
- a full OpenAI batch line ``{"custom_id"?, "method"?: "POST", "url"?, "body": {...}}``.

A missing ``custom_id`` is generated (``new_custom_id``: time-ordered, UUIDv7 layout), a
missing model is ``DEFAULT_MODEL``. Validation is all-or-nothing: the result carries either
every line or every bad item's index and reason (index ``None`` for the body as a whole).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from shared.contracts import ENDPOINTS, RequestLine, is_valid_custom_id

CHAT_URL: Final = "/v1/chat/completions"
ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
LINE_KEYS: Final = frozenset({"custom_id", "method", "url", "body"})
# Shown in reasons instead of the value itself: reasons must stay short.
_SHOWN_MAX: Final = 40


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why one item (``index``; ``None`` = the whole body) was refused."""

    index: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Parsed:
    """The items of one body, before they are validated (``len`` is checked against the cap)."""

    items: list[Any]


@dataclass(frozen=True, slots=True)
class Validated:
    """Either ``lines`` (all items good) or ``errors`` (at least one bad item); never both."""

    lines: list[RequestLine]
    errors: list[ItemError]

    @property
    def ok(self) -> bool:
        return not self.errors


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, ``data`` not a list, no items)."""


# --- custom ids -----------------------------------------------------------------------------

_id_lock = threading.Lock()
_id_state = [0, 0]  # last millisecond, last counter
_COUNTER_BITS: Final = 42  # 12 bits of rand_a + 30 high bits of rand_b (RFC 9562, method 1)
_COUNTER_SEED_BITS: Final = 40  # a fresh millisecond starts low enough never to overflow
_getrandbits = random.getrandbits
_time_ns = time.time_ns


def new_custom_id() -> str:
    """A new unique id in UUIDv7 layout: 48-bit Unix milliseconds, then a 42-bit counter that
    is random at each new millisecond and incremented within one, then 32 random bits. Ids of
    one process sort in creation order (as strings too); random bits keep processes apart."""
    with _id_lock:
        ms = _time_ns() // 1_000_000
        if ms > _id_state[0]:
            _id_state[0] = ms
            _id_state[1] = counter = _getrandbits(_COUNTER_SEED_BITS)
        else:  # same millisecond (or the clock stepped back): keep counting from the last id
            ms = _id_state[0]
            _id_state[1] = counter = _id_state[1] + 1
            if counter >> _COUNTER_BITS:  # overflow: borrow the next millisecond
                _id_state[0] = ms = ms + 1
                _id_state[1] = counter = _getrandbits(_COUNTER_SEED_BITS)
    # time_high-time_mid-ver|rand_a-var|rand_b(14)-rand_b(16 counter + 32 random)
    return "%08x-%04x-%04x-%04x-%04x%08x" % (  # noqa: UP031 (one formatting op is fastest)
        ms >> 16,
        ms & 0xFFFF,
        0x7000 | (counter >> 30),
        0x8000 | ((counter >> 16) & 0x3FFF),
        counter & 0xFFFF,
        _getrandbits(32),
    )


# --- parsing --------------------------------------------------------------------------------


def parse_body(raw: bytes) -> Parsed:
    """Parse the body (orjson, once) into its list of items; ``BodyError`` if unusable."""
    if not raw.strip():
        raise BodyError('empty body; send {"data": [item, ...]} or one item')
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None
    if isinstance(document, dict) and "data" in document:
        extra = sorted(set(document) - {"data"})
        if extra:
            raise BodyError(f"unexpected top-level field(s) beside 'data': {_names(extra)}")
        items = document["data"]
        if not isinstance(items, list):
            raise BodyError("'data' must be a list of items")
        if not items:
            raise BodyError("'data' is empty; send at least one item")
        return Parsed(items)
    return Parsed([document])  # a single item without the wrapper


# --- validation -----------------------------------------------------------------------------


def validate_items(
    items: Sequence[Any], *, default_model: str, default_kwargs: Mapping[str, Any]
) -> Validated:
    """Check every item and build its request line; all items good or the list of errors."""
    lines: list[RequestLine] = []
    errors: list[ItemError] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            line = _line_of(item, default_model, default_kwargs)
        except _Refused as exc:
            errors.append(ItemError(index, str(exc)))
            continue
        seen = first_index.setdefault(line.custom_id, index)
        if seen != index:
            errors.append(
                ItemError(index, f"duplicate custom_id {line.custom_id!r} (also item {seen})")
            )
            continue
        lines.append(line)
    if errors:
        return Validated([], errors)
    return Validated(lines, [])


def validate_body(
    raw: bytes, *, default_model: str, default_kwargs: Mapping[str, Any]
) -> Validated:
    """``parse_body`` then ``validate_items`` (without the item cap), for callers and tests."""
    try:
        parsed = parse_body(raw)
    except BodyError as exc:
        return Validated([], [ItemError(None, str(exc))])
    return validate_items(parsed.items, default_model=default_model, default_kwargs=default_kwargs)


class _Refused(ValueError):
    """One item is bad; the message is the reason shown to the client."""


def _line_of(item: Any, default_model: str, default_kwargs: Mapping[str, Any]) -> RequestLine:
    if isinstance(item, list):  # partial: bare messages
        _check_messages(item, "item")
        body: dict[str, Any] = {"model": default_model, **default_kwargs, "messages": item}
        return _build(new_custom_id(), CHAT_URL, body)
    if not isinstance(item, dict):
        raise _Refused(
            f"item is {_type(item)}; expected a list of chat messages, an object with "
            "'messages', or a batch line with 'body'"
        )
    if "body" in item:
        return _batch_line(item, default_model)
    if "messages" in item:
        body = dict(item)
        custom_id = _custom_id(body.pop("custom_id", None))
        misplaced = sorted({"method", "url"} & set(body))
        if misplaced:
            raise _Refused(f"{_names(misplaced)} belong(s) to a batch line, which needs 'body'")
        _check_messages(body["messages"], "messages")
        _check_params(body)
        body.setdefault("model", default_model)
        return _build(custom_id, CHAT_URL, body)
    raise _Refused(
        "object item has neither 'messages' nor 'body'; expected a list of chat messages, "
        "an object with 'messages', or a batch line with 'body'"
    )


def _batch_line(item: dict[str, Any], default_model: str) -> RequestLine:
    extra = sorted(set(item) - LINE_KEYS)
    if extra:
        raise _Refused(f"unknown field(s) {_names(extra)} in a batch line")
    custom_id = _custom_id(item.get("custom_id"))
    method = item.get("method", "POST")
    if method != "POST":
        raise _Refused(f"method must be 'POST', not {_shown(method)}")
    url = item.get("url", CHAT_URL)
    if url not in ENDPOINTS:
        raise _Refused(f"url {_shown(url)} not allowed; use one of {', '.join(ENDPOINTS)}")
    raw_body = item["body"]
    if not isinstance(raw_body, dict):
        raise _Refused(f"body is {_type(raw_body)}; expected an object")
    body = dict(raw_body)
    if url == CHAT_URL:
        if "messages" not in body:
            raise _Refused("body.messages is required for /v1/chat/completions")
        _check_messages(body["messages"], "body.messages")
    elif "input" not in body:
        raise _Refused(f"body.input is required for {url}")
    _check_params(body)
    body.setdefault("model", default_model)
    return _build(custom_id, url, body)


def _custom_id(value: Any) -> str:
    if value is None:
        return new_custom_id()
    if not isinstance(value, str) or not is_valid_custom_id(value):
        raise _Refused(f"bad custom_id {_shown(value)}: use 1-64 characters of [A-Za-z0-9_.:-]")
    return value


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list):
        raise _Refused(f"{where} is {_type(messages)}, not a list of messages")
    if not messages:
        raise _Refused(f"{where} is an empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Refused(f"{where}[{i}] is {_type(message)}, not a list of messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = "missing" if role is None else _shown(role)
            raise _Refused(
                f"{where}[{i}] has unknown role {shown}; use one of {', '.join(sorted(ROLES))}"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _Refused(f"{where}[{i}].content is {_type(content)}; expected text or parts")


def _check_params(body: Mapping[str, Any]) -> None:
    if body.get("stream") is True:
        raise _Refused("stream: true is not supported by the Batch API")
    if "model" in body and (not isinstance(body["model"], str) or not body["model"]):
        raise _Refused(f"model must be a non-empty string, not {_shown(body['model'])}")


def _build(custom_id: str, url: str, body: dict[str, Any]) -> RequestLine:
    try:
        return RequestLine(custom_id=custom_id, method="POST", url=url, body=body)
    except ValidationError as exc:  # defence in depth: the contract has the last word
        first = exc.errors()[0]
        raise _Refused(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A short rendering of a client's value for a reason (containers by type only: their
    repr could be huge or too deep to compute)."""
    if isinstance(value, list | dict):
        return _type(value)
    if isinstance(value, str):
        value = value[:_SHOWN_MAX]
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _names(names: Sequence[str]) -> str:
    return ", ".join(_shown(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
