"""What the benchmarks share: the venv's binaries, /proc readings, waiting for an HTTP service,
and the emulator started as its own process (``batchpipe openai-emulator``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from batchpipe.devtools.local_kafka import free_port

BIN = Path(sys.executable).parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``; 0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of ``pid`` and every live descendant (e.g. the emulator's worker
    process that validates batches)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree = {pid}
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(cpu_seconds(p) for p in tree)


def rss_kib(pid: int, field: str) -> int:
    """A memory figure of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def wait_http(
    url: str, timeout: float = 30.0, ok: Callable[[int], bool] = lambda status: status < 500
) -> None:
    """Poll ``url`` until it answers with a status ``ok`` accepts."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if ok((await http.get(url)).status_code):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


def start_emulator(
    work: Path, processing_seconds: float, nice: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """The emulator on a free port, its data and log under ``work`` (at CPU niceness ``nice``);
    returns the process and its ``OPENAI_BASE_URL`` (wait for it with ``wait_http``)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(["nice", "-n", str(nice)] if nice else []),
            str(BIN / "batchpipe"),
            "openai-emulator",
            "--port",
            str(port),
            "--processing-seconds",
            str(processing_seconds),
            "--data-dir",
            str(work / "emulator"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "emulator.log").open("wb"),
    )
    return process, f"http://127.0.0.1:{port}/v1"
