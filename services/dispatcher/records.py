"""What the dispatcher reads of a consumed ``requests`` record, and where a record sits.

Both engines hand the core their own record objects (aiokafka's ``ConsumerRecord``; Faust's
driver fetches the same type); ``Record`` is the part of them the core reads, so the core never
depends on either engine. ``Incoming`` is a plain record for tests and for the rare message that
does not come as a fetched chunk.

Types used across the dispatcher: ``TP`` is a (topic, partition), ``Position`` a
(topic, partition, offset). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from batchpipe.shared.contracts import attempt_from_headers, key_from_headers

TP = tuple[str, int]  # (topic, partition)
Position = tuple[str, int, int]  # (topic, partition, offset)


class Record(Protocol):
    """What the core reads of a consumed message (aiokafka's ``ConsumerRecord`` and
    ``Incoming`` both qualify)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def header_items(headers: Any) -> Sequence[tuple[str, bytes]]:
    """A record's headers as ``(name, value)`` pairs: aiokafka gives a sequence of pairs,
    Faust's messages a mapping; a header without a value reads as ``b""``."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [
        (k if isinstance(k, str) else str(k), bytes(v) if v is not None else b"") for k, v in items
    ]


def attempt_of(headers: Any) -> int:
    """The request's delivery attempt (0 for a first delivery; the poller's retries count up)."""
    return attempt_from_headers(header_items(headers)) if headers else 0


def key_name_of(headers: Any) -> str | None:
    """The name of the ingest API key the request came with (None: unattributed)."""
    return key_from_headers(header_items(headers)) if headers else None


def as_incoming(record: Record) -> Incoming:
    """A plain copy of ``record`` (for the dead-letter path, which keeps the raw value)."""
    if isinstance(record, Incoming):
        return record
    return Incoming(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(header_items(record.headers)),
    )


def offsets_of_one_partition(records: Sequence[Record]) -> list[int] | None:
    """The offsets of ``records`` if they are one partition's records in strictly ascending
    offset order (what a fetch returns), else None."""
    if not records:
        return None
    offsets = [r.offset for r in records]
    head = records[0]
    if all(r.partition == head.partition and r.topic == head.topic for r in records) and all(
        map(int.__lt__, offsets, islice(offsets, 1, None))
    ):
        return offsets
    return None
