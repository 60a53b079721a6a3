"""batchpipe.shared.partitioner: the key → partition mapping is Kafka's default partitioner's."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from batchpipe.shared.partitioner import murmur2, partition_of, partitions_of


def test_murmur2_and_partition_match_aiokafka_on_edge_keys() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"req-1", "ünï-☃".encode()]
    keys += [rng.randbytes(rng.randint(0, 70)) for _ in range(500)]
    partitioner = DefaultPartitioner()
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key)
        for count in (1, 3, 6, 7):
            parts = list(range(count))
            assert partition_of(key, parts) == partitioner(key, parts, parts)


@given(key=st.binary(max_size=80), count=st.integers(1, 64))
def test_partition_of_matches_the_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert murmur2(key) == aiokafka_murmur2(key)
    assert partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


@given(keys=st.lists(st.binary(max_size=40), max_size=20), count=st.integers(1, 12))
def test_partitions_of_many_keys_is_partition_of_each(keys: list[bytes], count: int) -> None:
    partitions = list(range(0, 2 * count, 2))  # any sorted ids, not only 0..n-1
    assert partitions_of(keys, partitions) == [partition_of(k, partitions) for k in keys]
