"""process_tuning.py: with the allocator tuned, a freed window's memory is reused by the next
window instead of being faulted in again (checked in a fresh interpreter: the tuning is
process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_REFAULT_PROBE = """
import resource, sys
from batchpipe.services.dispatcher.process_tuning import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
kept = [bytes(1021) for _ in range(30_000)]  # a window's values (~30 MB)
del kept
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kept = [bytes(1021) for _ in range(30_000)]  # the next window's
small = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = b"x" * (8 << 20)  # an upload read, a JSONL join (pages touched)
    del block
print(small, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_freed_window_memory_is_reused_instead_of_faulted_in_again() -> None:
    def faults(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", _REFAULT_PROBE, mode], capture_output=True, check=True
        )
        small, large = out.stdout.split()
        return int(small), int(large)

    # ~30 MB of 1 KB values given back and touched again; 8 MiB blocks reused after the first
    assert faults("default")[0] > 5_000
    small, large = faults("keep")
    assert small < 1_000
    assert large < 2 * (8 << 20) // 4096  # not a fresh mmap each time (10 x 2,048 pages)
