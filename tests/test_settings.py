"""The settings model: defaults, limits, parsing, and errors that name the variable."""

from __future__ import annotations

import os

import pytest

from batchpipe.shared.settings import (
    Settings,
    SettingsError,
    env_var_name,
    load_settings,
    settings_env,
)
from batchpipe.shared.topics import topic_names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("BATCHPIPE_", "OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name)


def test_defaults_match_the_issue_and_the_seed_sample() -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert topic_names(s) == [
        "requests",
        "requests.dispatch-ledger",
        "batches",
        "poller-state",
        "results",
        "dead-letters",
        "requests.batch-inputs",
        "batches.nudges",
    ]
    assert s.topic_partitions == 6
    assert s.batch_max_requests is None  # each provider's own limit
    assert s.batch_max_bytes is None  # 95% of each provider's own limit
    assert s.provider_routes == () and s.default_provider == "openai"
    assert s.batch_max_wait_seconds == 3600
    assert s.poll_interval_seconds == 60
    assert s.max_attempts == 3
    assert s.default_model == "gpt-4o-mini"
    assert s.default_request_kwargs == {"max_tokens": 1000, "temperature": 0.2}
    assert s.ingest_max_items == 10_000
    assert s.ingest_api_keys == ()


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("BATCHPIPE_REQUESTS_TOPIC", "in")
    monkeypatch.setenv("BATCHPIPE_DEFAULT_REQUEST_KWARGS", '{"max_tokens": 5}')
    monkeypatch.setenv("BATCHPIPE_INGEST_API_KEYS", "k1, k2,")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8100/v1")
    s = load_settings()
    assert s.kafka_bootstrap_servers == "a:1,b:2"
    assert s.requests_topic == "in"
    assert s.default_request_kwargs == {"max_tokens": 5}
    assert [k.get_secret_value() for k in s.ingest_api_keys] == ["k1", "k2"]
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-test"
    assert s.openai_base_url == "http://127.0.0.1:8100/v1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BATCHPIPE_BATCH_MAX_REQUESTS", "100001"),
        ("BATCHPIPE_BATCH_MAX_REQUESTS", "0"),
        ("BATCHPIPE_BATCH_MAX_BYTES", str(256_000_001)),
        ("BATCHPIPE_PROVIDER_ROUTES", "gpt-*"),
        ("BATCHPIPE_PROVIDER_ROUTES", "=azure"),
        ("BATCHPIPE_AZURE_FILE_EXPIRES_AFTER_SECONDS", "3600"),
        ("BATCHPIPE_AZURE_OUTPUT_EXPIRES_AFTER_SECONDS", "2592001"),
        ("BATCHPIPE_OPENAI_FILE_EXPIRES_AFTER_SECONDS", "3599"),
        ("BATCHPIPE_BATCH_MAX_WAIT_SECONDS", "-1"),
        ("BATCHPIPE_TOPIC_PARTITIONS", "many"),
        ("BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS", "nohostport"),
        ("BATCHPIPE_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("BATCHPIPE_DEFAULT_REQUEST_KWARGS", "{not json"),
        ("BATCHPIPE_DEFAULT_REQUEST_KWARGS", "[1, 2]"),
        ("BATCHPIPE_DEFAULT_REQUEST_KWARGS", '{"stream": true}'),
        ("BATCHPIPE_MAX_ATTEMPTS", "0"),
        ("BATCHPIPE_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert variable in str(err.value)


def test_provider_routes_and_azure_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHPIPE_PROVIDER_ROUTES", " my-deploy-*=azure, gpt-4o-batch = azure ,")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.setenv("BATCHPIPE_AZURE_OUTPUT_EXPIRES_AFTER_SECONDS", "1209600")
    s = load_settings()
    assert s.provider_routes == (("my-deploy-*", "azure"), ("gpt-4o-batch", "azure"))
    assert s.azure_openai_api_key is not None
    assert s.azure_openai_api_key.get_secret_value() == "az-key"
    assert (s.azure_openai_endpoint, s.openai_api_version) == (
        "https://r.openai.azure.com",
        "2024-10-21",
    )
    assert s.azure_output_expires_after_seconds == 1_209_600
    env = settings_env(s)
    assert env["BATCHPIPE_PROVIDER_ROUTES"] == "my-deploy-*=azure,gpt-4o-batch=azure"
    assert env["AZURE_OPENAI_API_KEY"] == "az-key"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHPIPE_INGEST_API_KEYS", "supersecret1")
    monkeypatch.setenv("BATCHPIPE_KAFKA_SASL_PASSWORD", "supersecret2")
    monkeypatch.setenv("OPENAI_API_KEY", "supersecret3")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "supersecret4")
    s = load_settings()
    shown = repr(s) + str(s) + str(s.model_dump())
    assert "supersecret" not in shown


def test_a_bad_secret_is_named_but_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHPIPE_KAFKA_SASL_MECHANISM", "GSSAPI")
    monkeypatch.setenv("BATCHPIPE_INGEST_API_KEYS", "secret-in-error")
    monkeypatch.setenv("BATCHPIPE_TOPIC_PARTITIONS", "x")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "BATCHPIPE_KAFKA_SASL_MECHANISM" in str(err.value)
    assert "secret-in-error" not in str(err.value)


def test_env_var_names() -> None:
    assert env_var_name("batch_max_bytes") == "BATCHPIPE_BATCH_MAX_BYTES"
    assert env_var_name("openai_api_key") == "OPENAI_API_KEY"
    assert set(Settings.model_fields) >= {"kafka_ssl_cafile", "kafka_sasl_username"}


def test_readme_configuration_table_is_generated_from_the_model() -> None:
    from pathlib import Path

    from batchpipe.services.cli.config import markdown_table

    readme = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    start = readme.index("<!-- config-table:start -->\n") + len("<!-- config-table:start -->\n")
    end = readme.index("<!-- config-table:end -->")
    assert readme[start:end] == markdown_table(), "run: batchpipe config --markdown"


def test_settings_env_round_trips_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from batchpipe.shared.settings import settings_env

    original = Settings(
        kafka_bootstrap_servers="a:1,b:2",
        kafka_sasl_password=SecretStr("pw"),
        ingest_api_keys=(SecretStr("k1"), SecretStr("k2")),
        default_request_kwargs={"max_tokens": 5},
        openai_api_key=SecretStr("sk-test"),
        batch_max_wait_seconds=2.5,
    )
    env = settings_env(original)
    for name in list(os.environ):
        if name.startswith(("BATCHPIPE_", "OPENAI_", "AZURE_OPENAI_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
