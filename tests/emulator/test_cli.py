"""``python -m batchpipe.devtools.emulator`` / ``batchpipe emulator`` (alias ``openai-emulator``):
env vars, the printed URLs of every provider, state surviving ``kill -9``, and a clean exit
(status 0) on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anthropic import Anthropic
from openai import AzureOpenAI, OpenAI
from typer.testing import CliRunner

from batchpipe.services.cli import app
from tests.emulator.helpers import chat_file, create, read_jsonl, upload, wait


def test_help_lists_the_options() -> None:
    for command in ("emulator", "openai-emulator"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        for option in ("--port", "--data-dir", "--api-key", "--processing-seconds", "--seed",
                       "--line-failure-rate", "--create-429-rate", "--retrieve-5xx-rate",
                       "--azure-deployments", "BATCHPIPE_EMULATOR_PORT"):  # fmt: skip
            assert option in result.output
        assert "Azure OpenAI" in result.output


@contextmanager
def serve(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], OpenAI]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchpipe.devtools.emulator", "--port", "0", "--seed", "5"],
        env=os.environ | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"OPENAI_BASE_URL=(http://\S+/v1)", line)
        assert match, line
        azure = re.search(r"AZURE_OPENAI_ENDPOINT=(http://\S+) OPENAI_API_VERSION=(\S+)", line)
        assert azure and azure.group(1) == match.group(1).removesuffix("/v1"), line
        assert (
            AzureOpenAI(azure_endpoint=azure.group(1), api_key="sk-cli", api_version=azure.group(2))
            .files.list()
            .data
            == []
        )
        anthropic = re.search(r"ANTHROPIC_BASE_URL=(http://\S+)", line)
        assert anthropic and anthropic.group(1) == azure.group(1), line
        claude = Anthropic(base_url=anthropic.group(1), api_key="sk-cli")
        assert list(claude.messages.batches.list()) == []
        yield proc, OpenAI(base_url=match.group(1), api_key="sk-cli")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_survives_kill_9_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {
        "BATCHPIPE_EMULATOR_DATA_DIR": str(tmp_path),
        "BATCHPIPE_EMULATOR_PROCESSING_SECONDS": "1.0",
        "BATCHPIPE_EMULATOR_API_KEY": "sk-cli",
    }
    with serve(env) as (proc, c):
        input_id = upload(c, chat_file(20))
        batch = create(c, input_id)
        wait(c, batch.id, statuses={"in_progress"})
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    with serve(env) as (proc, c):
        done = wait(c, batch.id)
        assert done.status == "completed"
        assert len(read_jsonl(c, done.output_file_id)) == 20
        assert c.files.content(input_id).content == chat_file(20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert len(list((tmp_path / "files").iterdir())) == 2  # input + output
