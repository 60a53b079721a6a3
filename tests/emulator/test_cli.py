"""``python -m services.openai_emulator`` / ``batchpipe openai-emulator``: env vars, the printed
base URL, and a clean exit on SIGTERM with state kept in the data dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from services.cli import app
from tests.emulator.helpers import chat_file, client, create, upload, wait


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["openai-emulator", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--port", "--data-dir", "--api-key", "--processing-seconds", "--seed",
                   "--line-failure-rate", "--create-429-rate", "--retrieve-5xx-rate",
                   "BATCHPIPE_EMULATOR_PORT"):  # fmt: skip
        assert option in result.output


def test_serves_until_sigterm_and_keeps_state(tmp_path: Path) -> None:
    env = os.environ | {
        "BATCHPIPE_EMULATOR_DATA_DIR": str(tmp_path),
        "BATCHPIPE_EMULATOR_PROCESSING_SECONDS": "0.1",
        "BATCHPIPE_EMULATOR_API_KEY": "sk-cli",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.openai_emulator", "--port", "0", "--seed", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"OPENAI_BASE_URL=(http://\S+/v1)", line)
        assert match, line
        from openai import OpenAI

        c = OpenAI(base_url=match.group(1), api_key="sk-cli")
        done = wait(c, create(c, upload(c, chat_file(3))).id)
        assert done.status == "completed"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "emulator.sqlite3").exists()
    assert len(list((tmp_path / "files").iterdir())) == 2  # input + output
    _ = client  # the in-process helpers are exercised elsewhere
