"""intake.py: a chunk taken at once has the outcome of its requests taken one at a time.

The usual chunk (one partition, ascending offsets, nothing seen or in the ledger) is windowed
in one pass; any other goes request by request; a single request is a chunk of one. Whichever
way, dead letters, dropped duplicates and redeliveries, attempts, cuts, offsets and counters
must come out the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from batchpipe.services.dispatcher.records import Incoming
from batchpipe.shared.providers.azure import AzureOpenAIProvider
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import Providers
from batchpipe.shared.providers.routing import Routes
from tests.dispatcher.fakes import FakeClient, FakeLedger, ledger_entry, line, make_dispatcher


async def _outcome(
    tmp_path: Path,
    chunks: list[list[Incoming]],
    chunked: bool,
    covered: tuple[int, ...] = (),
) -> tuple[Any, ...]:
    """Feed ``chunks`` to a fresh dispatcher (``handle_many`` per chunk, or per message),
    flush, and return everything observable: dead letters, windows, offsets and
    counters. ``covered``: offsets of partition 1 already in a created dispatch (a replay)."""
    ledger = FakeLedger()
    if covered:
        ledger.state.apply(
            ledger_entry(
                "dsp_old",
                [("req", 1, o) for o in covered],
                "created",
                batch_id="batch-old",
                file_id="f-old",
            )
        )
    d, _, producer, _ = make_dispatcher(
        tmp_path, FakeClient(), ledger, batch_max_requests=3, queue_size=10
    )
    d.ready.set()
    for chunk in chunks:
        if chunked:
            await d.handle_many(chunk)
        else:
            for msg in chunk:
                await d.handle_many([msg])
    await d.flush()
    windows = [d.queue.get_nowait()[1] for _ in range(d.queue.qsize())]
    d.flush_metrics()
    marks = {tp: d.offsets.watermark(tp) for tp in [("req", 0), ("req", 1)]}
    pending = d.offsets.pending_count()
    for window in windows:  # as if every window were submitted
        d.offsets.done_many(window.positions)
    return (
        [(t, orjson.loads(v)["reason"].split(":")[0], k) for t, v, k in producer.sent],
        [(w.lines, w.positions, w.attempts, w.cut_reason) for w in windows],
        marks,
        pending,
        # then every request was done: a dead letter, a duplicate or a skip that is not
        # marked done would hold the watermark back
        {tp: d.offsets.watermark(tp) for tp in [("req", 0), ("req", 1)]},
        d.metrics.registry.get_sample_value("dispatcher_requests_consumed_total"),
        d.metrics.registry.get_sample_value("dispatcher_duplicates_dropped_total"),
        d.metrics.registry.get_sample_value("dispatcher_requests_skipped_total"),
    )


def _msgs(
    values: list[tuple[int, int, bytes, tuple[tuple[str, bytes], ...]]],
) -> list[Incoming]:
    return [
        Incoming(topic="req", partition=p, offset=o, key=b"k", value=v, headers=h)
        for p, o, v, h in values
    ]


async def test_a_mixed_chunk_has_the_outcome_of_its_requests_one_by_one(tmp_path: Path) -> None:
    """A chunk of two partitions (request by request) dead-letters, drops duplicates and
    redeliveries, attempts, cuts and tracks offsets exactly as each message alone does."""
    msgs = _msgs(
        [
            (0, 0, line("a"), ()),
            (0, 1, b"not json", ()),
            (0, 2, line("a"), ()),  # duplicate of offset 0 (same open window)
            (0, 1, line("z"), ()),  # redelivery of a seen offset: ignored
            (1, 0, line("b"), (("batchpipe-attempt", b"2"),)),
            (0, 3, line("c"), ()),  # cuts (max 3 requests): a, b, c
            (
                1,
                1,
                orjson.dumps({"custom_id": "d", "url": "/v1/images", "body": {"model": "m"}}),
                (),
            ),
            (1, 2, line("d"), ()),
            (0, 4, line("e"), ()),
        ]
    )
    outcomes = [
        await _outcome(tmp_path, [msgs[:4], msgs[4:]], chunked) for chunked in (False, True)
    ]
    assert outcomes[0] == outcomes[1]
    dead, windows, marks, pending, after, consumed, duplicates, _ = outcomes[0]
    assert [reason for _, reason, _ in dead] == ["not_json", "url_not_allowed"]
    assert [len(w[0]) for w in windows] == [3, 2] and windows[0][2] == {"b": 2}
    assert marks == {("req", 0): 0, ("req", 1): 0} and pending == 8
    assert after == {("req", 0): 5, ("req", 1): 3}
    assert consumed == 8 and duplicates == 1


async def test_plain_fetches_have_the_outcome_of_their_requests_one_by_one(
    tmp_path: Path,
) -> None:
    """Chunks as a fetch returns them (one partition, ascending offsets) take the run path:
    offsets tracked and the ledger checked once per chunk, dead letters and cut windows sent
    after the chunk. A chunk that repeats seen offsets or reaches into a dispatch of the
    ledger goes request by request. Either way the outcome is that of each message alone."""
    url_not_allowed = orjson.dumps({"custom_id": "x", "url": "/v1/images", "body": {"model": "m"}})
    chunks = [
        _msgs(  # a run: dead letters, a duplicate, an attempt header, two cuts
            [
                (0, 0, line("a"), ()),
                (0, 1, b"not json", ()),
                (0, 2, line("a"), ()),
                (0, 3, line("b"), (("batchpipe-attempt", b"2"),)),
                (0, 4, line("c"), ()),
                (0, 5, url_not_allowed, ()),
                (0, 6, line("d"), ()),
                (0, 7, line("e"), ()),
                (0, 8, line("f"), ()),
                (0, 9, line("g"), ()),
            ]
        ),
        _msgs([(1, 0, line("h"), ()), (1, 2, line("i"), ())]),  # a gap (compaction, markers)
        _msgs([(0, 8, line("f"), ()), (0, 9, line("g"), ()), (0, 10, line("j"), ())]),  # seen
        _msgs([(1, 3, line("k"), ()), (1, 4, line("l"), ()), (1, 5, line("m"), ())]),  # replay
    ]
    outcomes = [
        await _outcome(tmp_path, chunks, chunked, covered=(4,)) for chunked in (False, True)
    ]
    assert outcomes[0] == outcomes[1]
    dead, windows, marks, pending, after, consumed, duplicates, skipped = outcomes[0]
    assert [reason for _, reason, _ in dead] == ["not_json", "url_not_allowed"]
    assert [[orjson.loads(x)["custom_id"] for x in w[0]] for w in windows] == [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["g", "h", "i"],
        ["j", "k", "m"],  # l is in the ledger's dispatch
    ]
    assert windows[0][2] == {"b": 2}
    # offset 0 of each partition is in a window not submitted: nothing is committable, and
    # every seen offset is pending (those done out of order too: dead letters, duplicate)
    assert marks == {("req", 0): 0, ("req", 1): 0} and pending == 11 + 5
    assert after == {("req", 0): 11, ("req", 1): 6}
    assert consumed == 16 and duplicates == 1 and skipped == 1


@pytest.mark.parametrize("chunked", [True, False])
async def test_what_the_models_provider_does_not_serve_is_dead_lettered(
    tmp_path: Path, chunked: bool
) -> None:
    """A moderations line for an Azure deployment (Azure's Global Batch does not serve it) is
    dead-lettered with the provider's reason, in both intake paths; the others are windowed
    and every offset is done."""
    azure = AzureOpenAIProvider(cast(Any, FakeClient()))
    openai = OpenAIProvider(cast(Any, FakeClient()))
    d, _, producer, _ = make_dispatcher(tmp_path, FakeClient(), queue_size=10)
    d.providers = Providers({"openai": openai, "azure": azure}, Routes((("dep-*", "azure"),)))
    d.ready.set()

    def request(cid: str, model: str, url: str) -> bytes:
        body = {"model": model, "input": "x"}
        return orjson.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body})

    msgs = [
        Incoming("req", 0, 0, b"a", request("a", "dep-1", "/v1/moderations")),
        Incoming("req", 0, 1, b"b", request("b", "dep-1", "/v1/embeddings")),
        Incoming("req", 0, 2, b"c", request("c", "omni-moderation-latest", "/v1/moderations")),
    ]
    if chunked:
        await d.handle_many(msgs)
    else:
        for msg in msgs:
            await d.handle_many([msg])
    await d.flush()
    (letter,) = [orjson.loads(v) for t, v, _k in producer.sent if t == "dead-letters"]
    assert letter["offset"] == 0 and letter["reason"].startswith("azure_refused")
    assert "do not serve /v1/moderations" in letter["reason"]
    windows = [d.queue.get_nowait()[1] for _ in range(d.queue.qsize())]
    assert sorted((w.model, w.count) for w in windows) == [
        ("dep-1", 1),
        ("omni-moderation-latest", 1),
    ]


async def test_a_model_routed_to_an_unconfigured_provider_is_dead_lettered(
    tmp_path: Path,
) -> None:
    """claude-* goes to Anthropic by a built-in route; a dispatcher without Anthropic's
    credentials dead-letters those requests (provider_not_configured) instead of sending
    them to another provider."""
    d, _, producer, _ = make_dispatcher(tmp_path, FakeClient(), queue_size=10)
    d.providers = Providers(
        {"openai": OpenAIProvider(cast(Any, FakeClient()))},
        Routes(builtin=(("claude-*", "anthropic"),)),
    )
    d.ready.set()
    chat = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
    value = orjson.dumps({"custom_id": "c1", "url": "/v1/chat/completions", "body": chat})
    await d.handle_many([Incoming("req", 0, 0, b"c1", value)])
    (letter,) = [orjson.loads(v) for t, v, _k in producer.sent if t == "dead-letters"]
    assert letter["reason"].startswith("provider_not_configured")
    assert "'anthropic' is not configured" in letter["reason"]
