"""docker-compose.yml and the Dockerfile, checked without Docker (it cannot run here).

The compose file is validated against the Compose Specification's JSON Schema (vendored in
tests/data, see its README), every batchpipe service's command must be a registered
``batchpipe`` subcommand, and each long-running service has a healthcheck, a restart policy
and depends_on conditions that name real services.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION
from batchpipe.services.cli import app

ROOT = Path(__file__).parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
BATCHPIPE_SERVICES = {
    "topics": "topics",
    "emulator": "emulator",
    "ingest": "ingest",
    "dispatcher": "dispatcher",
    "poller": "poller",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    schema = copy.deepcopy(schema)
    # the vendored snapshot predates the top-level project `name` (see tests/data/README.md)
    schema["properties"]["name"] = {"type": "string"}
    return schema


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_does_catch_mistakes(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["ingest"]["restart_policy"] = "always"  # not a Compose key
    broken["services"]["poller"]["depends_on"] = {"topics": {"condition": "when_ready"}}
    errors = list(jsonschema.Draft7Validator(compose_schema()).iter_errors(broken))
    assert len(errors) == 2


def test_every_service_command_is_a_batchpipe_subcommand(compose: dict[str, Any]) -> None:
    registered = {c.name for c in app.registered_commands}
    services = compose["services"]
    assert set(services) == {"kafka", *BATCHPIPE_SERVICES}
    for name, command in BATCHPIPE_SERVICES.items():
        service = services[name]
        assert service["image"] == "batchpipe:local" and service["build"]["context"] == "."
        assert service["command"][0] == command
        assert command in registered, f"service {name!r} runs `batchpipe {command}`: not in the CLI"


def test_long_running_services_have_healthchecks_restart_and_ordered_start(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("kafka", "emulator", "ingest", "dispatcher", "poller"):
        service = services[name]
        assert service["restart"] == "unless-stopped", name
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        if name != "kafka":
            assert test[1:3] == ["python", "-c"] and "urlopen('http://127.0.0.1:" in test[3]
    assert services["topics"]["restart"] == "on-failure"
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("ingest", "dispatcher", "poller"):
        assert services[name]["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"}
        }
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services


def test_services_reach_kafka_inside_the_network_and_the_emulator_by_default(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    assert "INTERNAL://kafka:29092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    for name in BATCHPIPE_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
        assert env["BATCHPIPE_HTTP_HOST"] == "0.0.0.0"
        assert env["OPENAI_BASE_URL"] == "${OPENAI_BASE_URL:-http://emulator:8100/v1}"
        assert env["OPENAI_API_KEY"].startswith("${OPENAI_API_KEY:-")
        # Azure OpenAI at the same emulator: its root (the SDK adds /openai)
        assert env["AZURE_OPENAI_ENDPOINT"] == "${AZURE_OPENAI_ENDPOINT:-http://emulator:8100}"
        assert env["AZURE_OPENAI_API_KEY"].startswith("${AZURE_OPENAI_API_KEY:-")
        assert env["OPENAI_API_VERSION"] == f"${{OPENAI_API_VERSION:-{AZURE_API_VERSION}}}"
        # Anthropic at the same emulator: its root (the SDK's paths carry /v1)
        assert env["ANTHROPIC_BASE_URL"] == "${ANTHROPIC_BASE_URL:-http://emulator:8100}"
        assert env["ANTHROPIC_API_KEY"].startswith("${ANTHROPIC_API_KEY:-")
    assert compose["services"]["ingest"]["ports"] == ["8000:8000"]
    assert {"kafka-data", "emulator-data"} <= set(compose["volumes"])


def test_dockerfile_is_slim_non_root_and_caches_dependencies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    copies = [line for line in lines if line.startswith("COPY")]
    assert copies[0] == "COPY pyproject.toml ./"  # dependencies first: a cached layer
    first_source = next(i for i, line in enumerate(lines) if line.startswith("COPY services"))
    deps_install = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    assert deps_install < first_source
    users = [line for line in lines if line.startswith("USER")]
    assert users and users[-1] != "USER root"
    assert 'ENTRYPOINT ["batchpipe"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".batchpipe", "tests"} <= set(ignored)


def test_the_image_copies_every_folder_the_package_links() -> None:
    """The wheel follows ``src/batchpipe``'s links: a folder not copied is missing from it."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    links = sorted(p.name for p in (ROOT / "src" / "batchpipe").iterdir() if p.is_symlink())
    assert links == ["devtools", "services", "shared"]
    for name in links:
        assert f"COPY {name} ./{name}" in lines
    assert "COPY src ./src" in lines
