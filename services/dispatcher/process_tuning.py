"""Interpreter and allocator settings for a dispatcher worker process, applied by its entry
point (``cli.py``) once the modules are imported and before the worker starts consuming.

The consuming loop is CPU-bound and allocation-heavy (a window holds ~50,000 consumed values);
these settings make the process spend that CPU on requests instead of on the garbage
collector, thread hand-offs and page faults. Each is process-wide, which is why only the entry
point may apply them (never a library module or a test). Figures: bench/README.md, Dispatcher.
"""

from __future__ import annotations

import ctypes
import gc
import sys

GIL_SWITCH_SECONDS = 0.001
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit


def tune_process() -> None:
    """Apply all three (idempotent)."""
    freeze_startup_heap()
    keep_freed_memory()
    shorten_gil_switch()


def freeze_startup_heap() -> None:
    """Take every object alive now (modules, the app) out of the garbage collector's scans
    (``gc.freeze``). The consuming loop makes many objects that live a while (fetched records,
    window positions), which triggers full collections; without this each of them also walks
    the ~130,000 start-up objects of openai, pydantic and faust."""
    gc.freeze()


def shorten_gil_switch() -> None:
    """Hand the GIL between threads every 1 ms instead of 5 ms. The consuming loop is
    CPU-bound, and the other threads wait for it at every hand-off: Faust's consumer thread
    (its aiokafka driver fetches in a thread of its own and returns records through
    ``call_thread``), the upload thread and the JSONL writer."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def keep_freed_memory() -> None:
    """Keep the memory of submitted windows in the process for the next windows (glibc only).

    By default glibc gives freed heap back to the OS, so every later window faults its pages
    in again (~0.6 us per 1 KB value, on the consuming loop); a trim threshold of 1 GiB keeps
    it. Fixing the trim threshold also fixes the mmap threshold (normally adaptive) at
    128 KiB, which would put every 8 MiB upload read and JSONL join in a fresh mmap, faulted
    in and unmapped each time: blocks up to 32 MiB come from the heap instead. RSS stays at
    its peak (the windows in memory at once) instead of falling between windows."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator's defaults stay
