"""jsonl.py: a window's lines on disk, byte for byte."""

from __future__ import annotations

from pathlib import Path

from batchpipe.services.dispatcher.jsonl import jsonl_size, write_jsonl


def test_write_jsonl(tmp_path: Path) -> None:
    lines = [b'{"a":%d}' % i for i in range(20_000)]  # several joined chunks
    path = write_jsonl(lines, tmp_path)
    assert path.read_bytes() == b"".join(line + b"\n" for line in lines)
    assert path.stat().st_size == jsonl_size(lines)
    assert write_jsonl([], tmp_path).read_bytes() == b""
