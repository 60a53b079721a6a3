"""ingest's two readings of a body agree: ``StreamedItems`` (large bodies, chunk by chunk)
gives the same items, or refuses with the same kind of reason, as ``parse_body`` (small
bodies, orjson at once), whatever the chunking."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpipe.services.ingest.body import StreamedItems
from batchpipe.services.ingest.encode import MAX_VALUE_BYTES, ItemTooLarge
from batchpipe.services.ingest.validate import BodyError, parse_body
from tests.ingest.schema_strategies import json_values as json_values_of

json_values = json_values_of(text=8, keys=5, children=3, leaves=10)
bodies = (
    st.fixed_dictionaries({"data": st.lists(json_values, max_size=4)})
    | st.fixed_dictionaries({"data": json_values})
    | st.dictionaries(st.sampled_from(["data", "x", "messages", "body"]), json_values, max_size=3)
    | json_values
)


def streamed(raw: bytes, size: int) -> list[Any]:
    parser = StreamedItems()
    items: list[Any] = []
    for start in range(0, len(raw), size):
        items += parser.feed(raw[start : start + size])
        items += parser.feed(b"")  # the ASGI server's last chunk is empty
    return items + parser.finish()


def outcome(read: Any) -> tuple[str, Any]:
    """The items, or that the body was refused (which check fires first may differ: a
    streamed body is judged in the order it arrives)."""
    try:
        return "items", read()
    except BodyError:
        return "refused", None


@settings(max_examples=300, deadline=None)
@given(body=bodies, size=st.integers(1, 64))
def test_streamed_and_whole_readings_agree(body: Any, size: int) -> None:
    raw = orjson.dumps(body)
    whole = outcome(lambda: parse_body(raw).items)
    stream = outcome(lambda: streamed(raw, size))
    assert stream == whole


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b"   ", "empty body"),
        (b'{"data": [[{"role": "user"}]', "body is not valid JSON"),
        (b'{"data": [1], "x": 2}', "unexpected top-level field(s) beside 'data'"),
        (b'{"data": {}}', "'data' must be a list of items"),
        (b'{"data": []}', "'data' is empty"),
        (b"[1] [2]", "body is not valid JSON"),
    ],
)
def test_streamed_refusals(raw: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        streamed(raw, 7)
    with pytest.raises(BodyError):
        parse_body(raw)


def test_a_single_unwrapped_item_larger_than_a_record_stops_the_stream() -> None:
    parser = StreamedItems()
    parser.feed(b'[{"role": "user", "content": "')
    with pytest.raises(ItemTooLarge):
        for _ in range(MAX_VALUE_BYTES // 65536 + 2):
            parser.feed(b"x" * 65536)


def test_items_come_out_as_soon_as_they_are_complete() -> None:
    parser = StreamedItems()
    assert parser.feed(b'{"data": [[{"role": "user", "content": "a"}], [{"ro') == [
        [{"role": "user", "content": "a"}]
    ]
    assert parser.feed(b'le": "user"}]]}') == [[{"role": "user"}]]
    assert parser.finish() == []
