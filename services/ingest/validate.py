"""Validation step of ingest: the raw body of one ``POST /requests`` → request lines, or errors.

Pure and synchronous: the body is parsed once with orjson and every item is checked once.
The body is ``{"data": [item, ...]}`` (the original sample's shape) or one item on its own.
Each item is checked and encoded by ``encode.LineEncoder`` (the shapes and reasons of
``shared.request_items``, which every front door shares: bare chat messages, an object with
``messages``, or a full OpenAI batch line; a missing ``custom_id`` is generated, a missing
model is the default). Here: the body and its ``data`` wrapper, and custom_ids repeated within
one POST.
Validation is all-or-nothing: the result carries either every line or every bad item's index
and reason (index ``None`` for the body as a whole).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchpipe.services.ingest.encode import ItemTooLarge, LineEncoder, Record
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.request_items import ItemRefused, new_custom_ids, shown_names


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
    """Either ``records`` and their ``ids`` (all items good) or ``errors`` (at least one bad
    item); never both. ``too_large``: every error is an item too large for a record."""

    records: deque[Record]
    ids: list[str]
    errors: list[ItemError]
    too_large: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def lines(self) -> list[RequestLine]:
        """The records' request lines, decoded again (for callers and tests, not the hot path)."""
        return [decode(RequestLine, value) for _, value in self.records]


class BodyError(ValueError):
    """The body as a whole is unusable (not JSON, ``data`` not a list, no items)."""


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
            raise BodyError(f"unexpected top-level field(s) beside 'data': {shown_names(extra)}")
        items = document["data"]
        if not isinstance(items, list):
            raise BodyError("'data' must be a list of items")
        if not items:
            raise BodyError("'data' is empty; send at least one item")
        return Parsed(items)
    return Parsed([document])  # a single item without the wrapper


# --- validation -----------------------------------------------------------------------------


class ItemChecker:
    """Checks and encodes the items of one POST as they come (in order), remembering the
    custom_ids given so far; ``result()`` is all records, or every bad item's error. Once an
    item is bad, later good items are checked but no longer kept."""

    def __init__(self, encoder: LineEncoder) -> None:
        self._encode = encoder.encode
        self.count = 0
        self.records: deque[Record] = deque()
        self.ids: list[str] = []
        self.errors: list[ItemError] = []
        self._too_large = True
        self._first_index: dict[str, int] = {}

    def add_all(self, items: Sequence[Any]) -> None:
        """``add`` each item (ids for bare-message items made at once)."""
        fresh = new_custom_ids(len(items))
        encode = self._encode
        records, ids, first_index = self.records, self.ids, self._first_index
        for offset, item in enumerate(items):
            index = self.count + offset
            try:
                custom_id, value = encode(item, fresh[offset])
            except ItemRefused as exc:
                self._refuse(index, str(exc), too_large=isinstance(exc, ItemTooLarge))
                continue
            if type(item) is not list:  # bare messages get a fresh generated id: never repeated
                seen = first_index.setdefault(custom_id, index)
                if seen != index:
                    reason = f"duplicate custom_id {custom_id!r} (also item {seen})"
                    self._refuse(index, reason, too_large=False)
                    continue
            if not self.errors:
                records.append((custom_id.encode(), value))
                ids.append(custom_id)
        self.count += len(items)

    def _refuse(self, index: int, reason: str, *, too_large: bool) -> None:
        if not self.errors:  # nothing of a refused POST is kept
            self.records.clear()
            self.ids.clear()
        self.errors.append(ItemError(index, reason))
        self._too_large = self._too_large and too_large

    def result(self) -> Validated:
        if self.errors:
            return Validated(deque(), [], self.errors, self._too_large)
        return Validated(self.records, self.ids, [])


def validate_items(
    items: Sequence[Any],
    *,
    default_model: str,
    default_kwargs: Mapping[str, Any],
    encoder: LineEncoder | None = None,
) -> Validated:
    """Check and encode every item; all items good or the list of errors. ``encoder`` (built
    from the defaults if not given) is reused across calls by the service."""
    checker = ItemChecker(encoder or LineEncoder(default_model, default_kwargs))
    checker.add_all(items)
    return checker.result()


def validate_body(
    raw: bytes, *, default_model: str, default_kwargs: Mapping[str, Any]
) -> Validated:
    """``parse_body`` then ``validate_items`` (without the item cap), for callers and tests."""
    try:
        parsed = parse_body(raw)
    except BodyError as exc:
        return Validated(deque(), [], [ItemError(None, str(exc))])
    return validate_items(parsed.items, default_model=default_model, default_kwargs=default_kwargs)
