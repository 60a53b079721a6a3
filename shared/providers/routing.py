"""Which provider serves a model: ``BATCHPIPE_PROVIDER_ROUTES`` then the default.

Rules are shell-style patterns on the request's ``model`` (``fnmatch.fnmatchcase``: ``*``,
``?``, ``[...]``, case-sensitive), tried in order; the first match names the provider, no
match means ``BATCHPIPE_DEFAULT_PROVIDER``. Pure and cached per model: the dispatcher asks once
per window group, the answer never changes while the process runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from batchpipe.shared.settings import Settings


@dataclass(frozen=True)
class Routes:
    rules: tuple[tuple[str, str], ...] = ()
    default: str = "openai"
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Routes:
        return cls(rules=settings.provider_routes, default=settings.default_provider)

    def provider_for(self, model: str) -> str:
        name = self._cache.get(model)
        if name is None:
            name = next((p for pattern, p in self.rules if fnmatchcase(model, pattern)), None)
            name = self._cache[model] = name or self.default
        return name

    def names(self) -> set[str]:
        """Every provider a model can be routed to."""
        return {self.default, *(provider for _pattern, provider in self.rules)}
