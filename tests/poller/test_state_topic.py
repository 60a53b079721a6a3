"""state_topic.py: progress records, and what reading a state partition back makes of them."""

from __future__ import annotations

from batchpipe.services.poller.state_topic import (
    PartitionProgress,
    Progress,
    progress_value,
    state_partition_of,
)
from batchpipe.shared.contracts import decode


def test_progress_value_round_trips() -> None:
    value = progress_value("batch_1", 2, 17, 300, False, "completed")
    record = decode(Progress, value)
    assert (record.batch_id, record.batches_partition, record.batches_offset) == ("batch_1", 2, 17)
    assert (record.emitted, record.done, record.batch_status) == (300, False, "completed")


def test_apply_keeps_the_latest_progress_of_this_partition_only() -> None:
    progress = PartitionProgress(batches_partition=1)
    progress.apply(b"a", progress_value("a", 1, 0, 300, False, "completed"))
    progress.apply(b"b", progress_value("b", 1, 1, 50, True, "cancelled"))
    progress.apply(b"c", progress_value("c", 4, 0, 10, False, "completed"))  # shares the partition
    progress.apply(b"a", progress_value("a", 1, 0, 600, False, "completed"))
    assert progress.emitted == {"a": 600} and progress.done == {"b"}
    progress.apply(b"a", progress_value("a", 1, 0, 900, True, "completed"))
    assert progress.emitted == {} and progress.done == {"a", "b"}
    progress.apply(b"b", None)  # tombstone
    progress.apply(b"x", b"not json")  # unreadable: logged and ignored
    progress.apply(None, b"{}")  # no key: ignored
    assert progress.done == {"a"} and progress.emitted == {}


def test_batches_partitions_map_onto_state_partitions() -> None:
    assert [state_partition_of(p, 6) for p in range(6)] == list(range(6))
    assert [state_partition_of(p, 3) for p in range(6)] == [0, 1, 2, 0, 1, 2]
    assert state_partition_of(5, 0) == 0
