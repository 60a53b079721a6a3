"""The ``batchpipe`` command's own behaviour: a JSON Schema on demand, bad settings named."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from batchpipe.services.cli import app


def test_schema_command_prints_json_schema() -> None:
    result = CliRunner().invoke(app, ["schema", "results"])
    assert result.exit_code == 0, result.output
    assert '"custom_id"' in result.output and '"title": "results"' in result.output


def test_bad_settings_exit_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHPIPE_TOPIC_PARTITIONS", "zero")
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 2
    assert "BATCHPIPE_TOPIC_PARTITIONS" in result.output
