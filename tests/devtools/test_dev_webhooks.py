"""``batchpipe dev`` and docker-compose wire the emulator's webhooks to the poller: the
emulator sends to the poller's ``POST /webhooks/openai``, both share one whsec_ secret (masked
when shown), and a real secret in the caller's environment never reaches an emulator run."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchpipe.devtools.dev.plan import (
    EMULATOR_WEBHOOK_SECRET,
    WEBHOOK_PATH,
    DevOptions,
    build_plan,
)
from batchpipe.services.poller.webhooks import WEBHOOK_PATH as POLLER_WEBHOOK_PATH
from batchpipe.shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_dev_points_the_emulators_webhooks_at_the_poller(tmp_path: Path) -> None:
    environ = {"PATH": "/bin", "OPENAI_WEBHOOK_SECRET": "whsec_cmVhbC1zZWNyZXQ="}
    plan = build_plan(DevOptions(data_dir=tmp_path, poller_port=18001), environ)
    emulator = next(p for p in plan.processes if p.name == "emulator")
    url = emulator.argv[emulator.argv.index("--webhook-url") + 1]
    assert WEBHOOK_PATH == POLLER_WEBHOOK_PATH
    assert url == f"http://127.0.0.1:18001{POLLER_WEBHOOK_PATH}"
    env = plan.processes[-1].env
    assert env["OPENAI_WEBHOOK_SECRET"] == EMULATOR_WEBHOOK_SECRET  # not the caller's real one
    assert env["BATCHPIPE_EMULATOR_WEBHOOK_SECRET"] == EMULATOR_WEBHOOK_SECRET
    assert base64.b64decode(EMULATOR_WEBHOOK_SECRET.removeprefix("whsec_"))
    assert EMULATOR_WEBHOOK_SECRET not in str(plan.shown_env)
    assert plan.urls["poller webhooks"] == url
    settings = load_settings(openai_webhook_secret=env["OPENAI_WEBHOOK_SECRET"])
    assert settings.openai_webhook_secret is not None


def test_with_real_openai_the_callers_secret_is_kept(tmp_path: Path) -> None:
    environ = {"OPENAI_API_KEY": "sk-real", "OPENAI_WEBHOOK_SECRET": "whsec_cmVhbC1zZWNyZXQ="}
    plan = build_plan(DevOptions(data_dir=tmp_path, openai="real"), environ)
    assert plan.processes[-1].env["OPENAI_WEBHOOK_SECRET"] == "whsec_cmVhbC1zZWNyZXQ="
    assert all(p.name != "emulator" for p in plan.processes)


@pytest.fixture
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_sends_the_emulators_webhooks_to_the_poller(compose: dict[str, Any]) -> None:
    emulator = compose["services"]["emulator"]
    assert any(
        arg.startswith("--webhook-url=") and f"http://poller:8001{POLLER_WEBHOOK_PATH}" in arg
        for arg in emulator["command"]
    )
    env = compose["services"]["poller"]["environment"]
    assert env["OPENAI_WEBHOOK_SECRET"] == env["BATCHPIPE_EMULATOR_WEBHOOK_SECRET"]
    assert EMULATOR_WEBHOOK_SECRET in env["OPENAI_WEBHOOK_SECRET"]
