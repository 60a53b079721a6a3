"""One user-given request item → one ``RequestLine``: the normalisation every front door shares.

Pure and synchronous, so that every way into the ``requests`` topic (ingest's
``POST /requests`` and ``batchpipe submit``) accepts the same shapes with the same reasons.
An item is

- a list of chat messages (a *partial* request): the body becomes
  ``{"model": default_model, **default_kwargs, "messages": [...]}``;
- an object ``{"custom_id"?, "messages": [...], "model"?, ...other chat parameters}``;
- a full OpenAI batch line ``{"custom_id"?, "method"?: "POST", "url"?, "body": {...}}``
  (``url`` one of ``ENDPOINTS``, default ``/v1/chat/completions``; the body needs what
  ``request_schema.REQUIRED`` says: ``messages``, ``input`` or, for completions, ``prompt``;
  ``/v1/messages`` takes Anthropic Messages API params, for models routed to Anthropic).

A missing ``custom_id`` is generated (``new_custom_id``: time-ordered, UUIDv7 layout), a
missing model is the endpoint's own default (``request_schema.DEFAULT_MODELS``: moderations
take OpenAI's ``omni-moderation-latest``) or else ``default_model``. ``normalize_item``
raises ``ItemRefused`` with a short, user-facing reason (a client's value is never repr'd
whole: see ``_shown``); ``DuplicateIds`` spots a custom_id seen before in the same submission.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import ValidationError

from batchpipe.shared import request_schema
from batchpipe.shared.contracts import ENDPOINTS, RequestLine, is_valid_custom_id
from batchpipe.shared.request_schema import (
    DEFAULT_MODELS,
    MESSAGE_VALIDATORS,
    PARAM_NAMES,
    PARAM_VALIDATORS,
    PLAIN_TEXT_ROLES,
    REQUIRED,
    STREAM_ONLY,
    SchemaError,
)

CHAT_URL: Final = request_schema.CHAT_URL
ROLES: Final = frozenset(request_schema.ROLES)
_ROLE_LIST: Final = ", ".join(sorted(ROLES))
LINE_KEYS: Final = frozenset({"custom_id", "method", "url", "body"})
# Shown in reasons instead of the value itself: reasons must stay short.
_SHOWN_MAX: Final = 40


class ItemRefused(ValueError):
    """One item cannot become a request line; the message is the reason shown to the user."""


# --- custom ids -----------------------------------------------------------------------------

_id_lock = threading.Lock()
_id_state = [0, 0]  # last millisecond, last counter
_COUNTER_BITS: Final = 42  # 12 bits of rand_a + 30 high bits of rand_b (RFC 9562, method 1)
_COUNTER_SEED_BITS: Final = 40  # a fresh millisecond starts low enough never to overflow
_getrandbits = random.getrandbits
_time_ns = time.time_ns


def _reserve(count: int) -> tuple[int, int]:
    """The millisecond and first counter of ``count`` new ids (their counters follow on). A
    new millisecond starts from a random counter; within one the counter counts on from the
    last id (also if the clock stepped back); a run that would overflow it moves to the next
    millisecond."""
    with _id_lock:
        ms = _time_ns() // 1_000_000
        if ms > _id_state[0]:
            _id_state[0] = ms
            first = _getrandbits(_COUNTER_SEED_BITS)
        else:
            ms = _id_state[0]
            first = _id_state[1] + 1
        if (first + count - 1) >> _COUNTER_BITS:  # overflow: borrow the next millisecond
            _id_state[0] = ms = ms + 1
            first = _getrandbits(_COUNTER_SEED_BITS)
        _id_state[1] = first + count - 1
    return ms, first


def new_custom_id() -> str:
    """A new unique id in UUIDv7 layout: 48-bit Unix milliseconds, then a 42-bit counter that
    is random at each new millisecond and incremented within one, then 32 random bits. Ids of
    one process sort in creation order (as strings too); random bits keep processes apart."""
    ms, counter = _reserve(1)
    # time_high-time_mid-ver|rand_a-var|rand_b(14)-rand_b(16 counter + 32 random)
    return "%08x-%04x-%04x-%04x-%04x%08x" % (  # noqa: UP031 (one formatting op is fastest)
        ms >> 16,
        ms & 0xFFFF,
        0x7000 | (counter >> 30),
        0x8000 | ((counter >> 16) & 0x3FFF),
        counter & 0xFFFF,
        _getrandbits(32),
    )


def new_custom_ids(count: int) -> list[str]:
    """``count`` new ids as ``count`` calls of ``new_custom_id`` would give them (the same ids
    but for the random bits; at a counter overflow the whole run moves to the next
    millisecond), for a fraction of the cost: one lock, one clock read and one draw of random
    bits for all of them."""
    if count <= 0:
        return []
    ms, first = _reserve(count)
    tails = "%0*x" % (8 * count, _getrandbits(32 * count))  # noqa: UP031
    ids: list[str] = []
    counter, end, done = first, first + count, 0
    while counter < end:  # runs of ids whose counter agrees above its low 16 bits
        high = counter >> 16
        run = min(end, (high + 1) << 16) - counter
        head = "%08x-%04x-%04x-%04x-" % (  # noqa: UP031
            ms >> 16,
            ms & 0xFFFF,
            0x7000 | (counter >> 30),
            0x8000 | (high & 0x3FFF),
        )
        low = counter & 0xFFFF
        ids += [
            f"{head}{lo:04x}{tails[at : at + 8]}"
            for lo, at in zip(
                range(low, low + run), range(8 * done, 8 * (done + run), 8), strict=True
            )
        ]
        counter += run
        done += run
    return ids


# --- normalisation --------------------------------------------------------------------------


def normalize_item(item: Any, default_model: str, default_kwargs: Mapping[str, Any]) -> RequestLine:
    """The request line for one item, or ``ItemRefused`` saying why not (positional
    arguments allowed: ingest calls it once per item, and a keyword call costs more)."""
    if isinstance(item, list):  # partial: bare messages
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
            raise ItemRefused(
                f"{shown_names(misplaced)} belong(s) to a batch line, which needs 'body'"
            )
        _check_params(body, CHAT_URL, "")
        check_messages(body["messages"], "messages")
        body.setdefault("model", default_model)
        return _build(custom_id, CHAT_URL, body)
    raise ItemRefused(
        "object item has neither 'messages' nor 'body'; expected a list of chat messages, "
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
        raise ItemRefused(f"unknown field(s) {shown_names(extra)} in a batch line")
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
    for name in REQUIRED[url]:
        if name not in body:
            raise ItemRefused(f"body.{name} is required for {url}")
    _check_params(body, url, "body.")
    if url == CHAT_URL:
        check_messages(body["messages"], "body.messages")
    body.setdefault("model", DEFAULT_MODELS.get(url, default_model))
    return _build(custom_id, url, body)


def _custom_id(value: Any) -> str:
    if value is None:
        return new_custom_id()
    if not isinstance(value, str) or not is_valid_custom_id(value):
        raise ItemRefused(f"bad custom_id {_shown(value)}: use 1-64 characters of [A-Za-z0-9_.:-]")
    return value


def check_messages(messages: Any, where: str) -> None:
    """A non-empty list of chat messages, each valid for its role (``request_schema``)."""
    if not isinstance(messages, list):
        raise ItemRefused(f"{where} is {_type(messages)}, not a list of messages")
    if not messages:
        raise ItemRefused(f"{where} is an empty list of messages")
    for i, message in enumerate(messages):
        if type(message) is dict and len(message) == 2:  # the common case, decided at once
            role = message.get("role")
            if (
                type(role) is str
                and role in PLAIN_TEXT_ROLES
                and type(message.get("content")) is str
            ):
                continue
        _check_message(message, f"{where}[{i}]")


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise ItemRefused(f"{where} is {_type(message)}, not a list of messages")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        shown = "missing" if role is None else _shown(role)
        raise ItemRefused(f"{where} has unknown role {shown}; use one of {_ROLE_LIST}")
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise ItemRefused(f"{where}.content is {_type(content)}; expected text or parts")
    try:
        MESSAGE_VALIDATORS[role](message)
    except SchemaError as exc:
        raise ItemRefused(schema_reason(exc, f"{where}.", f"{where} ({role})")) from None


def _check_params(body: Mapping[str, Any], url: str, where: str) -> None:
    """The body's parameters (all but ``messages``) against ``url``'s schema; ``where`` is the
    prefix of a parameter's name in a reason (``""`` or ``"body."``)."""
    if body.get("stream") is True:
        raise ItemRefused("stream: true is not supported by the Batch API")
    if "model" in body and (not isinstance(body["model"], str) or not body["model"]):
        raise ItemRefused(f"model must be a non-empty string, not {_shown(body['model'])}")
    unknown = body.keys() - PARAM_NAMES[url]
    if unknown:
        if url == CHAT_URL:
            unknown.discard("messages")
        names = sorted(unknown)
        if names:
            if set(names) <= STREAM_ONLY:
                raise ItemRefused(
                    f"{where}{names[0]} needs stream: true, which the Batch API does not support"
                )
            raise ItemRefused(f"unknown parameter(s) {shown_names(names)} for {url}")
    try:
        PARAM_VALIDATORS[url](body)
    except SchemaError as exc:
        raise ItemRefused(schema_reason(exc, where, where.rstrip(".") or "item")) from None


_TYPE_WORDS: Final = {
    "string": "text",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def schema_reason(exc: SchemaError, prefix: str, whole: str) -> str:
    """A short reason for a compiled validator's refusal: the value's path (``prefix`` + the
    path below the validated root, or ``whole`` for the root itself) and the rule it breaks;
    the value itself only through ``_shown``."""
    path = (exc.name or "data").removeprefix("data")
    where = f"{prefix}{path.lstrip('.')}" if path else whole
    rule = exc.rule
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    value = exc.value
    expected = definition.get(rule) if rule else None
    if rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        wanted = " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kinds)
        return f"{where} is {_type(value)}; expected {wanted}"
    if rule == "enum":
        options = [str(o).lower() if isinstance(o, bool) else str(o) for o in expected or ()]
        return f"{where} {_shown(value)} not allowed; use one of {shown_names(options)}"
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">"}.get(rule, "<")
        return f"{where} must be {word} {expected}, not {_shown(value)}"
    if rule in ("minItems", "maxItems", "minProperties", "maxProperties"):
        word = "at least" if rule.startswith("min") else "at most"
        unit = "items" if rule.endswith("Items") else "fields"
        return f"{where} must have {word} {expected} {unit}"
    if rule in ("minLength", "maxLength"):
        word = "at least" if rule == "minLength" else "at most"
        return f"{where} must have {word} {expected} characters"
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in expected or () if k not in value]
        return f"{where} needs {shown_names(missing)}"
    if rule == "additionalProperties" and isinstance(value, dict):
        known = definition.get("properties", {})
        extra = sorted(str(k) for k in value if k not in known)
        return f"unknown field(s) {shown_names(extra)} in {where}"
    if rule in ("anyOf", "oneOf"):
        if "description" in definition:
            return f"{where}: {definition['description']}"
        branches = [b for b in expected or () if isinstance(b, dict)]
        for branch in branches:
            if "enum" in branch and _type(value) == _type(branch["enum"][0]):
                options = [str(o) for o in branch["enum"]]
                return f"{where} {_shown(value)} not allowed; use one of {shown_names(options)}"
        kinds = [b.get("type") for b in branches]
        forms = " or ".join(_TYPE_WORDS.get(str(k), str(k)) for k in kinds if k)
        return f"{where} ({_type(value)}) matches no accepted form ({forms}; see /openapi.json)"
    return f"{where} is not valid ({rule}; see /openapi.json)"


def _build(custom_id: str, url: str, body: dict[str, Any]) -> RequestLine:
    try:
        return RequestLine(custom_id=custom_id, method="POST", url=url, body=body)
    except ValidationError as exc:  # defence in depth: the contract has the last word
        first = exc.errors()[0]
        raise ItemRefused(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


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


def shown_names(names: Sequence[str]) -> str:
    """At most five names, each shortened, for a reason."""
    return ", ".join(_shown(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
