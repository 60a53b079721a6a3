"""One user-given request item → one ``RequestLine``: the normalisation every front door shares.

Pure and synchronous, so that every way into the ``requests`` topic (``batchpipe submit``,
and ingest once it adopts it) accepts the same shapes with the same reasons. An item is

- a list of chat messages (a *partial* request): the body becomes
  ``{"model": default_model, **default_kwargs, "messages": [...]}``;
- an object ``{"custom_id"?, "messages": [...], "model"?, ...other chat parameters}``;
- a full OpenAI batch line ``{"custom_id"?, "method"?: "POST", "url"?, "body": {...}}``
  (``url`` one of ``ENDPOINTS``, default ``/v1/chat/completions``).

A missing ``custom_id`` is generated (``new_custom_id``: UUIDv7 layout, time-ordered), a
missing model is ``default_model``. ``normalize_item`` raises ``ItemRefused`` with a short,
user-facing reason; ``DuplicateIds`` spots a custom_id seen before in the same submission.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from shared.contracts import ENDPOINTS, RequestLine, is_valid_custom_id

CHAT_URL: Final = "/v1/chat/completions"
ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
LINE_KEYS: Final = frozenset({"custom_id", "method", "url", "body"})
_SHOWN_MAX: Final = 40


class ItemRefused(ValueError):
    """One item cannot become a request line; the message is the reason shown to the user."""


# --- custom ids ---------------------------------------------------------------------------

_lock = threading.Lock()
_last = {"ms": 0, "seq": 0}


def new_custom_id() -> str:
    """A unique id in UUIDv7 layout: 48-bit Unix milliseconds, a 12-bit sequence within the
    millisecond (so ids of one process sort in creation order), 62 random bits."""
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last["ms"]:
            _last["ms"], _last["seq"] = ms, 0
        else:
            _last["seq"] += 1
            if _last["seq"] > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                _last["ms"], _last["seq"] = _last["ms"] + 1, 0
        ms, seq = _last["ms"], _last["seq"]
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- normalisation ------------------------------------------------------------------------


def normalize_item(
    item: Any, *, default_model: str, default_kwargs: Mapping[str, Any]
) -> RequestLine:
    """The request line for one item, or ``ItemRefused`` saying why not."""
    if isinstance(item, list):
        check_messages(item, "item")
        body: dict[str, Any] = {"model": default_model, **default_kwargs, "messages": item}
        return _build(new_custom_id(), CHAT_URL, body)
    if not isinstance(item, dict):
        raise ItemRefused(
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
            raise ItemRefused(f"{_names(misplaced)} belong(s) to a batch line, which needs 'body'")
        check_messages(body["messages"], "messages")
        _check_params(body)
        body.setdefault("model", default_model)
        return _build(custom_id, CHAT_URL, body)
    raise ItemRefused(
        "object has neither 'messages' nor 'body'; expected a list of chat messages, "
        "an object with 'messages', or a batch line with 'body'"
    )


class DuplicateIds:
    """Remembers the custom_ids of one submission: ``check`` refuses one seen before."""

    def __init__(self) -> None:
        self._first: dict[str, int] = {}

    def check(self, custom_id: str, where: int) -> None:
        first = self._first.setdefault(custom_id, where)
        if first != where:
            raise ItemRefused(f"duplicate custom_id {custom_id!r} (first at {first})")


def _batch_line(item: dict[str, Any], default_model: str) -> RequestLine:
    extra = sorted(set(item) - LINE_KEYS)
    if extra:
        raise ItemRefused(f"unknown field(s) {_names(extra)} in a batch line")
    custom_id = _custom_id(item.get("custom_id"))
    method = item.get("method", "POST")
    if method != "POST":
        raise ItemRefused(f"method must be 'POST', not {_shown(method)}")
    url = item.get("url", CHAT_URL)
    if url not in ENDPOINTS:
        raise ItemRefused(f"url {_shown(url)} not allowed; use one of {', '.join(ENDPOINTS)}")
    raw_body = item["body"]
    if not isinstance(raw_body, dict):
        raise ItemRefused(f"body is {_type(raw_body)}; expected an object")
    body = dict(raw_body)
    if url == CHAT_URL:
        if "messages" not in body:
            raise ItemRefused("body.messages is required for /v1/chat/completions")
        check_messages(body["messages"], "body.messages")
    elif "input" not in body:
        raise ItemRefused(f"body.input is required for {url}")
    _check_params(body)
    body.setdefault("model", default_model)
    return _build(custom_id, url, body)


def _custom_id(value: Any) -> str:
    if value is None:
        return new_custom_id()
    if not isinstance(value, str) or not is_valid_custom_id(value):
        raise ItemRefused(f"bad custom_id {_shown(value)}: use 1-64 characters of [A-Za-z0-9_.:-]")
    return value


def check_messages(messages: Any, where: str) -> None:
    """A non-empty list of ``{"role": known role, "content": text or parts}`` objects."""
    if not isinstance(messages, list):
        raise ItemRefused(f"{where} is {_type(messages)}, not a list of messages")
    if not messages:
        raise ItemRefused(f"{where} is an empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ItemRefused(f"{where}[{i}] is {_type(message)}, not a message object")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = "missing" if role is None else _shown(role)
            raise ItemRefused(
                f"{where}[{i}] has unknown role {shown}; use one of {', '.join(sorted(ROLES))}"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ItemRefused(f"{where}[{i}].content is {_type(content)}; expected text or parts")


def _check_params(body: Mapping[str, Any]) -> None:
    if body.get("stream") is True:
        raise ItemRefused("stream: true is not supported by the Batch API")
    if "model" in body and (not isinstance(body["model"], str) or not body["model"]):
        raise ItemRefused(f"model must be a non-empty string, not {_shown(body['model'])}")


def _build(custom_id: str, url: str, body: dict[str, Any]) -> RequestLine:
    try:
        return RequestLine.model_validate(
            {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
        )
    except ValidationError as exc:  # the contract has the last word
        first = exc.errors()[0]
        raise ItemRefused(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _type(value: Any) -> str:
    if value is None:
        return "null"
    names: dict[type, str] = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _names(names: Sequence[str]) -> str:
    return ", ".join(_shown(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
