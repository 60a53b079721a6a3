"""The API key name (header ``batchpipe-key``) through the dispatcher: windows never mix keys,
chunked and one-by-one intake agree, and the published ``BatchRecord`` names the key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from batchpipe.services.dispatcher.records import Incoming, key_name_of
from batchpipe.services.dispatcher.window import Windows
from batchpipe.shared.contracts import KEY_HEADER, BatchRecord, decode
from tests.dispatcher.fakes import FakeClient, line, make_dispatcher


def test_key_name_of_reads_valid_names_only() -> None:
    assert key_name_of(None) is None
    assert key_name_of([(KEY_HEADER, b"team-a")]) == "team-a"
    assert key_name_of({KEY_HEADER: b"team-b"}) == "team-b"  # Faust's mapping
    assert key_name_of([(KEY_HEADER, b"no spaces allowed")]) is None
    assert key_name_of([(KEY_HEADER, b"\xff")]) is None
    assert key_name_of([("batchpipe-attempt", b"1")]) is None


def _windows() -> Windows:
    return Windows(max_requests=10, max_bytes=100_000, max_wait=60.0)


def test_windows_are_per_key_one_by_one_and_chunked() -> None:
    keys = ["a", "b", None, "a", "b", None, "a"]
    one = _windows()
    for i, key in enumerate(keys):
        assert (
            one.add("/v1/chat/completions", "m", f"r{i}", line(f"r{i}"), ("t", 0, i), 0, key) == ()
        )
    chunked = _windows()
    rows = [(f"r{i}", "/v1/chat/completions", "m", line(f"r{i}")) for i in range(len(keys))]
    dropped, cuts = chunked.add_chunk("t", 0, list(range(len(keys))), rows, None, keys)
    assert dropped == [] and cuts == []
    for windows in (one, chunked):
        by_key = {w.api_key: w.offsets for w in windows.flush()}
        assert by_key == {"a": [0, 3, 6], "b": [1, 4], None: [2, 5]}


def test_the_same_custom_id_under_two_keys_is_not_a_duplicate_of_the_other() -> None:
    windows = _windows()
    assert windows.add("/v1/embeddings", "m", "x", line("x"), ("t", 0, 0), 0, "a") == ()
    assert windows.add("/v1/embeddings", "m", "x", line("x"), ("t", 0, 1), 0, "b") == ()
    assert windows.add("/v1/embeddings", "m", "x", line("x"), ("t", 0, 2), 0, "a") is None


def test_revocation_keeps_the_key_of_what_stays() -> None:
    windows = _windows()
    windows.add("/v1/embeddings", "m", "x", line("x"), ("t", 0, 0), 0, "a")
    windows.add("/v1/embeddings", "m", "y", line("y"), ("t", 1, 0), 0, "a")
    windows.drop_partitions([("t", 0)])
    [kept] = windows.flush()
    assert kept.api_key == "a" and kept.offsets == [0]


async def test_the_batch_record_names_the_key_of_its_requests(tmp_path: Path) -> None:
    client = FakeClient()
    d, ledger, producer, _ = make_dispatcher(tmp_path, client)
    await d.on_assigned({("req", 0)})
    submitter = asyncio.create_task(d.run_submitter())
    try:
        named = ((KEY_HEADER, b"team-a"),)
        for offset, cid in enumerate(["a", "b"]):
            await d.handle_many([Incoming("req", 0, offset, cid.encode(), line(cid), named)])
        async with asyncio.timeout(5):
            while not any(topic == "bat" for topic, _, _ in producer.sent):
                await asyncio.sleep(0.005)
    finally:
        submitter.cancel()
    [value] = [v for topic, v, _ in producer.sent if topic == "bat"]
    record = decode(BatchRecord, value)
    assert record.api_key == "team-a" and record.request_count == 2
    assert all(e.api_key == "team-a" for e in ledger.writes)
    assert "team-a" in orjson.loads(value).values()
