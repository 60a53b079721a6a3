"""The batch input file: a window's lines written as JSONL to a temporary file.

The lines are already the exact bytes of each request (``dead_letters.classify`` chose them),
without their newline, so writing is a plain streamed copy in chunks, each line followed by
``\\n``; afterwards the window releases its lines, so the requests are never held twice in
memory (lines + file contents). ``write_jsonl_async`` runs the file I/O in a thread to keep the
event loop free.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Lines joined per write: few, large joins, because the writer runs in a thread and must win
# the GIL back from the busy consuming loop for each one (a switch interval, 5 ms, each time):
# 1,024-line chunks made a 49 MiB window take 0.1-0.2 s to write while consuming instead of
# ~0.03 s. 8,192 lines of ~1 KB are ~8 MiB of transient memory.
CHUNK_LINES = 8192


def write_jsonl(
    lines: Sequence[bytes], directory: Path | None = None, prefix: str = "batch-"
) -> Path:
    """Write ``lines`` (without their ``\\n``) as JSONL to a new temp file; return its path."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".jsonl", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as out:
            for start in range(0, len(lines), CHUNK_LINES):
                out.write(b"\n".join(lines[start : start + CHUNK_LINES]))
                out.write(b"\n")
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


async def write_jsonl_async(
    lines: Sequence[bytes], directory: Path | None = None, prefix: str = "batch-"
) -> Path:
    return await asyncio.to_thread(write_jsonl, lines, directory, prefix)


def jsonl_size(lines: Sequence[bytes]) -> int:
    return sum(len(line) + 1 for line in lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
