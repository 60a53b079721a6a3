"""Routes and the provider registry: which provider gets a model, and start-up errors."""

from __future__ import annotations

from typing import Any

import pytest

from batchpipe.shared.providers.azure import AzureOpenAIProvider
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.registry import (
    Providers,
    UnknownProvider,
    check_providers,
    make_providers,
    refusal_check,
)
from batchpipe.shared.providers.routing import Routes
from batchpipe.shared.settings import Settings, SettingsError

AZURE: dict[str, Any] = {
    "azure_openai_api_key": "az-secret",
    "azure_openai_endpoint": "http://127.0.0.1:1",
    "openai_api_version": "2024-10-21",
}


def test_first_matching_pattern_wins_and_the_rest_go_to_the_default() -> None:
    routes = Routes(rules=(("deploy-*", "azure"), ("deploy-x", "openai")), default="openai")
    assert routes.provider_for("deploy-x") == "azure"
    assert routes.provider_for("gpt-4o-mini") == "openai"
    assert routes.provider_for("Deploy-x") == "openai"  # case-sensitive
    assert routes.names() == {"openai", "azure"}


def test_everything_goes_to_openai_by_default() -> None:
    providers = make_providers(Settings(openai_api_key="sk-test"))
    assert {p.name for p in providers} == {"openai"}
    assert isinstance(providers.for_model("anything"), OpenAIProvider)
    assert providers.limits_for("anything").max_requests == 50_000


async def test_models_are_routed_to_azure_with_its_limits() -> None:
    settings = Settings(openai_api_key="sk-test", provider_routes="batch-*=azure", **AZURE)
    providers = make_providers(settings)
    azure = providers.for_model("batch-gpt-4o")
    assert isinstance(azure, AzureOpenAIProvider)
    assert providers.name_for("batch-gpt-4o") == "azure"
    assert azure.limits.max_requests == 100_000 and azure.limits.max_bytes == 200_000_000
    assert providers.name_for("gpt-4o-mini") == "openai"
    await providers.close()


def test_a_route_to_a_provider_without_credentials_fails_at_start_naming_them() -> None:
    settings = Settings(openai_api_key="sk-test", provider_routes="batch-*=azure")
    with pytest.raises(SettingsError) as err:
        check_providers(settings)
    message = str(err.value)
    assert "AZURE_OPENAI_API_KEY" in message and "AZURE_OPENAI_ENDPOINT" in message
    assert "OPENAI_API_VERSION" in message
    only_key_missing = Settings(provider_routes="x=azure", default_provider="azure", **AZURE)
    check_providers(only_key_missing)  # no OpenAI route: no OpenAI key needed
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        check_providers(Settings(openai_api_key=None))


def test_an_unknown_provider_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="unknown provider 'vertex'"):
        make_providers(Settings(openai_api_key="sk-test", provider_routes="gemini-*=vertex"))


def test_a_record_naming_an_unconfigured_provider_is_a_clear_error() -> None:
    providers = make_providers(Settings(openai_api_key="sk-test"))
    with pytest.raises(UnknownProvider, match="'azure' is not configured"):
        providers.get("azure")
    with pytest.raises(SettingsError):
        Providers({}, Routes())


def test_no_secret_in_the_error() -> None:
    settings = Settings(openai_api_key="sk-supersecret", provider_routes="x=azure")
    with pytest.raises(SettingsError) as err:
        check_providers(settings)
    assert "supersecret" not in str(err.value)


def test_what_a_provider_does_not_serve_is_refused_before_it_is_sent() -> None:
    settings = Settings(openai_api_key="sk-test", provider_routes="batch-*=azure", **AZURE)
    refusal = refusal_check(settings)
    assert refusal is not None
    assert refusal.applies("batch-gpt", "/v1/moderations")
    assert not refusal.applies("batch-gpt", "/v1/chat/completions")  # nothing to check
    assert not refusal.applies("gpt-4o-mini", "/v1/moderations")
    assert refusal.applies("gpt-4o-mini", "/v1/messages")  # OpenAI has no Messages API
    reason = refusal("batch-gpt", "/v1/moderations", {"model": "batch-gpt", "input": "x"})
    assert reason is not None and "azure batches do not serve /v1/moderations" in reason
    assert refusal("batch-gpt", "/v1/chat/completions", {"model": "batch-gpt"}) is None
    assert refusal("gpt-4o-mini", "/v1/moderations", {}) is None  # OpenAI serves it
    plain = refusal_check(Settings(openai_api_key="sk-test"))
    assert plain is not None  # the built-in claude-* route: Anthropic refuses what it can't run
    assert plain.applies("claude-3-5-haiku", "/v1/chat/completions")
    assert not plain.applies("gpt-4o-mini", "/v1/chat/completions")
    reason = plain("claude-3-5-haiku", "/v1/chat/completions", {"model": "c", "n": 3})
    assert reason is not None and "n" in reason
