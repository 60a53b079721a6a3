"""The providers batchpipe knows, and the set a service runs with.

``PROVIDERS`` maps a provider's name to its class: adding a provider is a new module plus
one line here. ``make_providers(settings)`` builds every provider the routes can send a model
to, at start-up, so a model routed to a provider without credentials is a ``SettingsError``
naming the missing variable before anything is consumed, never a silent drop later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from batchpipe.shared.logs import get_logger
from batchpipe.shared.providers.anthropic import AnthropicProvider
from batchpipe.shared.providers.azure import AzureOpenAIProvider
from batchpipe.shared.providers.base import BatchProvider, Limits
from batchpipe.shared.providers.openai import OpenAIProvider
from batchpipe.shared.providers.routing import Routes
from batchpipe.shared.settings import Settings, SettingsError

log = get_logger(__name__)

PROVIDERS: Final[
    Mapping[str, type[OpenAIProvider] | type[AzureOpenAIProvider] | type[AnthropicProvider]]
] = {
    OpenAIProvider.name: OpenAIProvider,
    AzureOpenAIProvider.name: AzureOpenAIProvider,
    AnthropicProvider.name: AnthropicProvider,
}


class UnknownProvider(LookupError):
    """A batch names a provider this process was not configured with."""


class Providers:
    """The configured providers and the routes between them."""

    def __init__(self, providers: Mapping[str, BatchProvider], routes: Routes) -> None:
        self._providers = dict(providers)
        self.routes = routes
        missing = routes.names() - set(self._providers)
        if missing:
            raise SettingsError(f"routes name providers not given: {', '.join(sorted(missing))}")

    @classmethod
    def single(cls, provider: BatchProvider) -> Providers:
        """Every model to one provider (tests, benchmarks)."""
        return cls({provider.name: provider}, Routes(default=provider.name))

    def __iter__(self) -> Iterator[BatchProvider]:
        return iter(self._providers.values())

    def get(self, name: str) -> BatchProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(
                f"provider {name!r} is not configured here (configured: "
                f"{', '.join(sorted(self._providers))})"
            ) from None

    def name_for(self, model: str) -> str:
        return self.routes.provider_for(model)

    def for_model(self, model: str) -> BatchProvider:
        return self.get(self.routes.provider_for(model))

    def limits_for(self, model: str) -> Limits:
        return self.for_model(model).limits

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()


def make_providers(settings: Settings) -> Providers:
    """Every provider the routes use, with its clients; ``SettingsError`` for an unknown
    provider name or missing credentials."""
    routes = Routes.from_settings(settings)
    unknown = sorted(routes.names() - set(PROVIDERS))
    if unknown:
        raise SettingsError(
            f"BATCHPIPE_PROVIDER_ROUTES / BATCHPIPE_DEFAULT_PROVIDER: unknown provider "
            f"{', '.join(map(repr, unknown))} (known: {', '.join(PROVIDERS)})"
        )
    # (a client built before a later one fails has opened no connection yet: nothing to close)
    built = {name: PROVIDERS[name].from_settings(settings) for name in sorted(routes.names())}
    for name in sorted(routes.optional_names() & set(PROVIDERS)):
        try:
            built[name] = PROVIDERS[name].from_settings(settings)
        except SettingsError as exc:
            log.info("provider.not_configured", provider=name, reason=str(exc))
    return Providers(built, routes)


class Refusal:
    """What each model's provider refuses (``BatchProvider.refuses``), for ingest, which
    builds no provider (it has no provider credentials)."""

    def __init__(
        self, settings: Settings, routes: Routes, refusers: Mapping[str, type[BatchProvider]]
    ) -> None:
        self._settings = settings
        self._routes = routes
        self._refusers = refusers

    def applies(self, model: str, url: str) -> bool:
        """Whether ``model``'s provider may refuse a line sent to ``url``."""
        cls = self._refusers.get(self._routes.provider_for(model))
        return cls is not None and cls.may_refuse_url(url)

    def __call__(self, model: str, url: str, body: Mapping[str, Any]) -> str | None:
        """The reason ``model``'s provider cannot run this line, or None."""
        cls = self._refusers.get(self._routes.provider_for(model))
        return None if cls is None else cls.refusal(self._settings, url, lambda: body)


def refusal_check(settings: Settings) -> Refusal | None:
    """The ``Refusal`` of these settings' routes; None when no routed provider refuses."""
    routes = Routes.from_settings(settings)
    refusers: dict[str, type[BatchProvider]] = {
        n: c
        for n, c in PROVIDERS.items()
        if n in routes.names() | routes.optional_names() and c.checks_lines()
    }
    return Refusal(settings, routes, refusers) if refusers else None


def check_providers(settings: Settings) -> None:
    """Raise ``SettingsError`` now if ``make_providers`` would (a process's start-up check,
    before it connects to anything; the clients built for the check open no connection)."""
    make_providers(settings)
