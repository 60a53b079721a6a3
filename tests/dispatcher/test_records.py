"""records.py: header parsing of either engine's records, and which chunks are one
partition's records in fetch order."""

from __future__ import annotations

from batchpipe.services.dispatcher.records import (
    Incoming,
    as_incoming,
    attempt_of,
    header_items,
    offsets_of_one_partition,
)


def test_headers_as_pairs_from_a_sequence_or_a_mapping() -> None:
    assert header_items(None) == () and header_items(()) == ()
    pairs = [("batchpipe-attempt", b"2"), ("other", None)]
    assert header_items(pairs) == [("batchpipe-attempt", b"2"), ("other", b"")]
    assert header_items({"batchpipe-attempt": b"2"}) == [("batchpipe-attempt", b"2")]
    assert attempt_of(pairs) == 2 and attempt_of({"batchpipe-attempt": b"3"}) == 3
    assert attempt_of(()) == 0 and attempt_of(None) == 0


def _r(partition: int, offset: int, topic: str = "t") -> Incoming:
    return Incoming(topic, partition, offset, None, b"{}")


def test_one_partitions_ascending_records_are_a_run() -> None:
    assert offsets_of_one_partition([_r(0, 3), _r(0, 4), _r(0, 9)]) == [3, 4, 9]
    assert offsets_of_one_partition([_r(1, 5)]) == [5]
    assert offsets_of_one_partition([]) is None
    assert offsets_of_one_partition([_r(0, 3), _r(1, 4)]) is None  # two partitions
    assert offsets_of_one_partition([_r(0, 3), _r(0, 4, "u")]) is None  # two topics
    assert offsets_of_one_partition([_r(0, 4), _r(0, 3)]) is None  # not ascending
    assert offsets_of_one_partition([_r(0, 4), _r(0, 4)]) is None  # a repeat


def test_as_incoming_copies_a_record() -> None:
    record = _r(2, 7)
    assert as_incoming(record) is record
    other = type(
        "R",
        (),
        {
            "topic": "t",
            "partition": 2,
            "offset": 7,
            "key": b"k",
            "value": b"v",
            "headers": [("h", b"1")],
        },
    )()
    assert as_incoming(other) == Incoming("t", 2, 7, b"k", b"v", (("h", b"1"),))
