"""Kafka's default key → partition mapping, computed fast.

aiokafka's ``send()`` runs its pure-Python murmur2 and some bookkeeping per record. Ingest and
the poller fill record batches themselves (``send_batch``), so they need the partition up
front; this module computes exactly what the Java client and aiokafka's default partitioner
compute (tests compare both) with ``murmurhash2``'s C implementation of MurmurHash2 (Kafka's
``Utils.murmur2`` is MurmurHash2 with the seed below).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from murmurhash2 import murmurhash2

KAFKA_MURMUR2_SEED: Final = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a key (the Java client's ``Utils.murmur2``)."""
    return murmurhash2(data, KAFKA_MURMUR2_SEED)


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives ``key`` (``partitions`` sorted)."""
    return partitions[(murmurhash2(key, KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % len(partitions)]


def partitions_of(keys: Iterable[bytes], partitions: Sequence[int]) -> list[int]:
    """``partition_of`` for many keys at once (one call, the loop in a comprehension)."""
    count = len(partitions)
    seed = KAFKA_MURMUR2_SEED
    return [partitions[(murmurhash2(key, seed) & 0x7FFFFFFF) % count] for key in keys]
