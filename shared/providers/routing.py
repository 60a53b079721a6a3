"""Which provider serves a model: ``BATCHPIPE_PROVIDER_ROUTES`` then the default.

Rules are shell-style patterns on the request's ``model`` (``fnmatch.fnmatchcase``: ``*``,
``?``, ``[...]``, case-sensitive), tried in order; the first match names the provider; then
the built-in routes (``claude-*`` to Anthropic); no match means
``BATCHPIPE_DEFAULT_PROVIDER``. Pure and cached per model: the dispatcher asks once
per window group, the answer never changes while the process runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Final

from batchpipe.shared.settings import Settings

# Tried after the settings' rules, before the default: a model family that only one provider
# serves. Its provider is built only when its credentials are there; without them, its
# models are dead-lettered (``provider_not_configured``), never sent elsewhere.
BUILTIN_ROUTES: Final[tuple[tuple[str, str], ...]] = (("claude-*", "anthropic"),)


@dataclass(frozen=True)
class Routes:
    rules: tuple[tuple[str, str], ...] = ()
    default: str = "openai"
    builtin: tuple[tuple[str, str], ...] = ()
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Routes:
        return cls(
            rules=settings.provider_routes,
            default=settings.default_provider,
            builtin=BUILTIN_ROUTES,
        )

    def provider_for(self, model: str) -> str:
        name = self._cache.get(model)
        if name is None:
            name = next(
                (p for pattern, p in (*self.rules, *self.builtin) if fnmatchcase(model, pattern)),
                None,
            )
            name = self._cache[model] = name or self.default
        return name

    def names(self) -> set[str]:
        """Every provider the settings route a model to (each must be configured)."""
        return {self.default, *(provider for _pattern, provider in self.rules)}

    def optional_names(self) -> set[str]:
        """Providers only the built-in routes name (configured if their credentials are)."""
        return {provider for _pattern, provider in self.builtin} - self.names()
