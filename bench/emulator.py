"""Benchmark of the OpenAI emulator: upload, process and download a 50,000-line batch.

Runs ``python -m batchpipe.devtools.emulator`` as a subprocess (so its memory is measured alone),
drives it with the official ``openai`` SDK, and prints the wall time of each phase and the
peak RSS (VmHWM) of the emulator and of this client process.

    .venv/bin/python bench/emulator.py                # 50,000 lines of ~1 KB (~50 MB)
    .venv/bin/python bench/emulator.py --line-bytes 3800   # ~190 MB, the Batch API's size class
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI


def write_input(path: Path, lines: int, line_bytes: int) -> int:
    with path.open("w") as handle:
        for i in range(lines):
            line = {
                "custom_id": f"bench-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ""}]},
            }
            padding = max(line_bytes - len(json.dumps(line)) - 1, 0)
            line["body"]["messages"][0]["content"] = f"question {i} " + "x" * padding  # type: ignore[index]
            handle.write(json.dumps(line) + "\n")
    return path.stat().st_size


def vm_hwm_mib(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--line-bytes", type=int, default=1_000)
    parser.add_argument("--processing-seconds", type=float, default=0.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp:
        work = Path(tmp)
        input_path = work / "input.jsonl"
        size = write_input(input_path, args.lines, args.line_bytes)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "batchpipe.devtools.emulator", "--port", "0",
                "--data-dir", str(work / "data"), "--seed", "1",
                "--processing-seconds", str(args.processing_seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            match = re.search(r"OPENAI_BASE_URL=(\S+)", proc.stdout.readline())
            assert match, "the emulator did not print its URL"
            idle_rss = vm_hwm_mib(proc.pid)
            client = OpenAI(base_url=match.group(1), api_key="sk-bench", timeout=600)

            t0 = time.monotonic()
            with input_path.open("rb") as handle:
                uploaded = client.files.create(file=("input.jsonl", handle), purpose="batch")
            t_upload = time.monotonic() - t0

            t0 = time.monotonic()
            batch = client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.2)
                batch = client.batches.retrieve(batch.id)
            t_process = time.monotonic() - t0
            assert batch.status == "completed", batch

            t0 = time.monotonic()
            downloaded = lines = 0
            with client.files.with_streaming_response.content(batch.output_file_id or "") as resp:
                for chunk in resp.iter_bytes(1 << 20):
                    downloaded += len(chunk)
                    lines += chunk.count(b"\n")
            t_download = time.monotonic() - t0
            assert lines == args.lines, lines

            server_peak = vm_hwm_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "lines": args.lines,
                "input_mb": round(size / 1e6, 1),
                "output_mb": round(downloaded / 1e6, 1),
                "upload_s": round(t_upload, 2),
                "validate_process_s": round(t_process, 2),
                "download_s": round(t_download, 2),
                "total_s": round(t_upload + t_process + t_download, 2),
                "emulator_idle_rss_mib": round(idle_rss, 1),
                "emulator_peak_rss_mib": round(server_peak, 1),
                "client_peak_rss_mib": round(client_peak, 1),
                "processing_seconds_setting": args.processing_seconds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
