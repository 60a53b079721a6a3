"""The pure plan of ``batchpipe dev``: order, commands, demo settings, real-OpenAI refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchpipe.devtools.dev.plan import (
    BOOT,
    EMULATOR_API_KEY,
    DevOptions,
    PlanError,
    build_plan,
    default_launcher,
    missing_commands,
    ports_of,
)
from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION
from batchpipe.services.cli import app


def test_emulator_plan_starts_everything_in_pipeline_order(tmp_path: Path) -> None:
    plan = build_plan(DevOptions(data_dir=tmp_path / "state", python="py", launcher=("bp",)), {})
    assert [p.name for p in plan.processes] == [
        "kafka",
        "emulator",
        "ingest",
        "dispatcher",
        "poller",
    ]
    assert [p.command for p in plan.processes] == [
        None,  # devtools.dev.broker: devtools.local_kafka.LocalKafka in the foreground
        "emulator",
        "ingest",
        "dispatcher",
        "poller",
    ]
    kafka = plan.processes[0]
    assert kafka.argv[:3] == ("py", "-m", "batchpipe.devtools.dev.broker")
    assert str(tmp_path / "state" / "kafka" / "data") in kafka.argv
    assert kafka.port == 9092
    emulator = plan.processes[1]
    assert "--processing-seconds" in emulator.argv and emulator.port == 8100
    assert all(p.cwd == tmp_path / "state" / p.name for p in plan.processes)


def test_demo_settings_point_every_child_at_the_local_broker_and_emulator(tmp_path: Path) -> None:
    plan = build_plan(DevOptions(data_dir=tmp_path, kafka_port=19092), {"PATH": "/bin"})
    env = plan.processes[-1].env
    assert env["BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    assert env["BATCHPIPE_BATCH_MAX_WAIT_SECONDS"] == "5"
    assert env["BATCHPIPE_POLL_INTERVAL_SECONDS"] == "1"
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8100/v1"
    assert env["OPENAI_API_KEY"] == EMULATOR_API_KEY
    assert env["AZURE_OPENAI_ENDPOINT"] == "http://127.0.0.1:8100"  # the SDK adds /openai
    assert env["AZURE_OPENAI_API_KEY"] == EMULATOR_API_KEY
    assert env["OPENAI_API_VERSION"] == AZURE_API_VERSION
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8100"  # the SDK adds /v1/messages
    assert env["ANTHROPIC_API_KEY"] == EMULATOR_API_KEY
    assert plan.urls["anthropic emulator"].startswith("http://127.0.0.1:8100 ")
    assert env["PATH"] == "/bin"
    assert env["BATCHPIPE_DISPATCHER_DATA_DIR"] == str(tmp_path / "dispatcher" / "data")
    assert plan.urls["ingest API docs"] == "http://127.0.0.1:8000/docs"
    assert plan.urls["poller status"] == "http://127.0.0.1:8001/status"
    assert plan.urls["poller status page"] == "http://127.0.0.1:8001/"
    assert ports_of(plan) == {
        "kafka": 19092,
        "emulator": 8100,
        "ingest": 8000,
        "poller": 8001,
        "dispatcher": 6066,
    }


def test_the_users_own_settings_win_over_demo_defaults_but_not_over_the_broker(
    tmp_path: Path,
) -> None:
    environ = {
        "BATCHPIPE_BATCH_MAX_WAIT_SECONDS": "30",
        "BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092",
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "OPENAI_API_KEY": "sk-real-secret-key",
        "AZURE_OPENAI_ENDPOINT": "https://real.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "real-azure-secret",
        "AZURE_OPENAI_AD_TOKEN": "real-azure-token",
        "OPENAI_API_VERSION": "2025-04-01-preview",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
        "ANTHROPIC_API_KEY": "sk-ant-real-secret",
        "ANTHROPIC_AUTH_TOKEN": "real-anthropic-token",
    }
    plan = build_plan(DevOptions(data_dir=tmp_path), environ)
    env = plan.processes[-1].env
    assert env["BATCHPIPE_BATCH_MAX_WAIT_SECONDS"] == "30"
    assert env["BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    # emulator mode: the real keys and URLs never reach the services
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8100/v1"
    assert env["OPENAI_API_KEY"] == EMULATOR_API_KEY
    assert env["AZURE_OPENAI_ENDPOINT"] == "http://127.0.0.1:8100"
    assert env["AZURE_OPENAI_API_KEY"] == EMULATOR_API_KEY
    assert "AZURE_OPENAI_AD_TOKEN" not in env  # the SDK would prefer it to the key
    assert env["OPENAI_API_VERSION"] == "2025-04-01-preview"  # not a secret: the user's own
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8100"
    assert env["ANTHROPIC_API_KEY"] == EMULATOR_API_KEY
    assert "ANTHROPIC_AUTH_TOKEN" not in env
    assert "secret" not in str(env) and "real-azure" not in str(env)
    assert "real-anthropic" not in str(env)


def test_real_openai_needs_a_key() -> None:
    with pytest.raises(PlanError, match="OPENAI_API_KEY"):
        build_plan(DevOptions(openai="real"), {})
    with pytest.raises(PlanError, match="OPENAI_API_KEY"):
        build_plan(DevOptions(openai="real"), {"OPENAI_API_KEY": "  "})


def test_real_openai_skips_the_emulator_and_masks_the_key(tmp_path: Path) -> None:
    plan = build_plan(
        DevOptions(openai="real", data_dir=tmp_path), {"OPENAI_API_KEY": "sk-real-secret-key"}
    )
    assert "emulator" not in [p.name for p in plan.processes]
    env = plan.processes[-1].env
    assert env["OPENAI_API_KEY"] == "sk-real-secret-key"
    assert "OPENAI_BASE_URL" not in env  # the SDK's default: api.openai.com
    assert "AZURE_OPENAI_ENDPOINT" not in env  # no emulator to point Azure at
    assert "secret" not in str(plan.shown_env)


def test_children_run_the_console_script_or_python_c(tmp_path: Path) -> None:
    assert default_launcher(sys.executable) == (str(Path(sys.executable).parent / "batchpipe"),)
    python = tmp_path / "python3"
    assert default_launcher(str(python)) == (str(python), "-c", BOOT)
    done = subprocess.run(
        [sys.executable, "-c", BOOT, "schema", "results"], capture_output=True, check=False
    )
    assert done.returncode == 0 and b'"title": "results"' in done.stdout


def test_missing_commands_are_named() -> None:
    plan = build_plan(DevOptions(), {})
    assert missing_commands(plan, ["kafka", "ingest"]) == [
        "emulator",
        "dispatcher",
        "poller",
    ]
    assert missing_commands(plan, ["kafka", "emulator", "ingest", "dispatcher", "poller"]) == []


def test_dev_refuses_real_openai_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["dev", "--openai", "real"])
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.output


def test_dev_refuses_an_unknown_openai_mode() -> None:
    result = CliRunner().invoke(app, ["dev", "--openai", "azure"])
    assert result.exit_code == 2


def test_dev_refuses_ports_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            app, ["dev", "--kafka-port", str(port), "--data-dir", str(tmp_path)]
        )
    assert result.exit_code == 2
    assert f"{port} (kafka)" in result.output and "already in use" in result.output
