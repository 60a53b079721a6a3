"""Reading step of ingest: a POST body as raw bytes (small bodies) or as a stream of items.

A small body is read whole and parsed by orjson at once (``validate.parse_body``). A large one
(over ``STREAM_BYTES``, or of unknown length) is never held whole: ``StreamedItems`` parses the
chunks as they arrive (ijson's C parser) and hands back each item of ``{"data": [...]}`` as
soon as it is complete, so the service keeps only the encoded records, not the body and its
parsed tree as well. Both readings accept the same bodies with the same reasons (tests feed
both); a single unwrapped item is streamed too, up to the size a record may have.
"""

from __future__ import annotations

from typing import Any, Final

import ijson

from batchpipe.services.ingest.encode import MAX_VALUE_BYTES, ItemTooLarge
from batchpipe.services.ingest.validate import BodyError
from batchpipe.shared.request_items import shown_names

# Bodies larger than this are streamed; smaller ones are parsed whole (faster).
STREAM_BYTES: Final = 1024 * 1024

_CONTAINER_STARTS: Final = frozenset({"start_map", "start_array"})
_CONTAINER_ENDS: Final = frozenset({"end_map", "end_array"})


class StreamedItems:
    """An incremental parser of one body: ``feed(chunk)`` returns the items completed by that
    chunk; ``finish()`` checks that the body ended where it should. Raises ``BodyError`` for
    a body that is not usable (the same reasons as ``parse_body``), ``ItemTooLarge`` for a
    single unwrapped item larger than a record may be."""

    def __init__(self) -> None:
        self._events: Any = ijson.sendable_list()
        self._parser: Any = ijson.parse_coro(self._events, use_float=True)
        self._builder: Any = None  # the item being built, if inside one
        self._depth = 0
        self._wrapped: bool | None = None  # {"data": [...]}: True; one item: False
        self._in_data = False
        self._data_done = False
        self._items = 0
        self._single_bytes = 0
        self._started = False

    def feed(self, chunk: bytes) -> list[Any]:
        if not chunk:  # an empty chunk would end ijson's parser; the end is ``finish``
            return []
        try:
            self._parser.send(chunk)
        except ijson.JSONError as exc:
            raise BodyError(f"body is not valid JSON: {exc}") from None
        if self._wrapped is False:
            self._single_bytes += len(chunk)
            if self._single_bytes > MAX_VALUE_BYTES:
                raise ItemTooLarge(f"item is over {MAX_VALUE_BYTES} bytes; at most that")
        done = self._take(self._events)
        self._events.clear()
        return done

    def finish(self) -> list[Any]:
        """The last items; ``BodyError`` if the body is empty, cut short, or has no items."""
        try:
            self._parser.close()
        except ijson.IncompleteJSONError as exc:
            if not self._started and not self._events:
                raise BodyError('empty body; send {"data": [item, ...]} or one item') from None
            raise BodyError(f"body is not valid JSON: {exc}") from None
        except ijson.JSONError as exc:
            raise BodyError(f"body is not valid JSON: {exc}") from None
        done = self._take(self._events)
        self._events.clear()
        if not self._started:
            raise BodyError('empty body; send {"data": [item, ...]} or one item')
        if self._wrapped and not self._items:
            raise BodyError("'data' is empty; send at least one item")
        return done

    def _take(self, events: list[tuple[str, str, Any]]) -> list[Any]:
        done: list[Any] = []
        for prefix, event, value in events:
            self._started = True
            builder = self._builder
            if builder is not None:  # inside an item: build it
                builder.event(event, value)
                if event in _CONTAINER_STARTS:
                    self._depth += 1
                elif event in _CONTAINER_ENDS:
                    self._depth -= 1
                if self._depth == 0:
                    done.append(self._complete(builder.value))
                continue
            if self._wrapped is None:
                self._top(prefix, event, value, done)
            elif prefix == "":  # the wrapper's own keys and end
                if event == "map_key":
                    raise BodyError(
                        f"unexpected top-level field(s) beside 'data': {shown_names([value])}"
                    )
            elif prefix == "data" and not self._in_data and not self._data_done:
                if event != "start_array":
                    raise BodyError("'data' must be a list of items")
                self._in_data = True
            elif prefix == "data" and event == "end_array":
                self._in_data = False
                self._data_done = True
            elif prefix == "data.item":  # an item starts (or is a scalar)
                if event in _CONTAINER_STARTS:
                    self._start_item(event, value)
                else:
                    done.append(self._complete(value))
        return done

    def _top(self, prefix: str, event: str, value: Any, done: list[Any]) -> None:
        """The first events decide: ``{"data": ...`` is the wrapper, anything else one item."""
        if event == "start_map" and self._depth == 0 and self._builder is None:
            self._depth = -1  # an object: its first key decides
            return
        if self._depth == -1:
            if event == "map_key" and value == "data":
                self._wrapped, self._depth = True, 0
                return
            # an object whose first key is not 'data' (or '{}'): one item
            self._wrapped, self._depth = False, 0
            self._start_item("start_map", None)
            if event == "end_map":
                self._builder.event(event, value)
                self._depth = 0
                done.append(self._complete(self._builder.value))
                return
            self._builder.event(event, value)
            return
        self._wrapped = False  # an array or a scalar at the top: one item
        if event in _CONTAINER_STARTS:
            self._start_item(event, value)
        else:
            done.append(self._complete(value))

    def _start_item(self, event: str, value: Any) -> None:
        self._builder = ijson.ObjectBuilder()
        self._builder.event(event, value)
        self._depth = 1

    def _complete(self, item: Any) -> Any:
        self._builder = None
        self._items += 1
        if self._wrapped is False and isinstance(item, dict) and "data" in item:
            extra = sorted(set(item) - {"data"})
            raise BodyError(f"unexpected top-level field(s) beside 'data': {shown_names(extra)}")
        return item
