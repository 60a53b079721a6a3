"""input_store.py on the real broker: staged windows come back byte for byte, in order, even
when chunks of other dispatches sit between theirs."""

from __future__ import annotations

import asyncio

import pytest

from batchpipe.shared.providers.input_store import CHUNK_BYTES, InputRef, InputStore, chunks
from batchpipe.shared.settings import Settings

pytestmark = pytest.mark.timeout(60)


def test_chunks_respect_the_limit_and_keep_every_line() -> None:
    lines = [b"x" * n for n in (10, 20, 30, 200, 5)]
    parts = list(chunks(lines, limit=64))
    assert b"\n".join(parts).split(b"\n") == lines
    assert all(len(p) <= 64 or b"\n" not in p for p in parts)
    assert list(chunks([])) == []


def test_a_reference_round_trips_through_text() -> None:
    ref = InputRef("req.batch-inputs", 3, 10, 12, "dsp_abc")
    assert InputRef.parse(str(ref)) == ref


async def test_lines_come_back_in_order_between_other_dispatches(settings: Settings) -> None:
    store = InputStore(settings)
    try:
        big = [b'{"custom_id":"a%d","pad":"%s"}' % (i, b"p" * (i % 700)) for i in range(8000)]
        small = [b'{"custom_id":"b%d"}' % i for i in range(50)]
        ref_a, ref_b = await asyncio.gather(store.write("dsp_a", big), store.write("dsp_b", small))
        assert ref_a.last > ref_a.first  # more than one chunk
        assert sum(len(line) + 1 for line in big) > 2 * CHUNK_BYTES
        assert [line async for line in store.read(ref_a)] == big
        assert [line async for line in store.read(InputRef.parse(str(ref_b)))] == small
    finally:
        await store.close()
