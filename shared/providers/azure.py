"""The Azure OpenAI provider: the official SDK's ``AsyncAzureOpenAI`` on the same Files +
Batches protocol as OpenAI (``files_api.py``), with Azure's differences:

- the client: ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_KEY`` and ``OPENAI_API_VERSION``;
- a line's ``model`` is the Global-Batch deployment name (batchpipe windows by model, so a
  batch holds one deployment);
- line URLs and the batch ``endpoint`` have no ``/v1`` (``/chat/completions``): lines are
  rewritten when the file is written and restored when a retried line goes back to
  ``requests``;
- limits: 100,000 requests and 200 MB per file; file and output expiry 14-30 days
  (``BATCHPIPE_AZURE_FILE_EXPIRES_AFTER_SECONDS``, ``..._OUTPUT_EXPIRES_AFTER_SECONDS``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from openai import AsyncAzureOpenAI, AzureOpenAI

from batchpipe.shared.providers.base import Limits
from batchpipe.shared.providers.files_api import FilesBatchesProvider
from batchpipe.shared.settings import Settings, SettingsError

AZURE_LIMITS = Limits(max_requests=100_000, max_bytes=200 * 1000 * 1000)
V1 = "/v1"


def _options(settings: Settings) -> dict[str, Any]:
    missing = [
        name
        for name, value in (
            ("AZURE_OPENAI_API_KEY", settings.azure_openai_api_key),
            ("AZURE_OPENAI_ENDPOINT", settings.azure_openai_endpoint),
            ("OPENAI_API_VERSION", settings.openai_api_version),
        )
        if value is None
    ]
    if missing:
        raise SettingsError(
            f"{', '.join(missing)}: not set, but models are routed to azure "
            "(BATCHPIPE_PROVIDER_ROUTES / BATCHPIPE_DEFAULT_PROVIDER)"
        )
    assert settings.azure_openai_api_key is not None
    return {
        "api_key": settings.azure_openai_api_key.get_secret_value(),
        "azure_endpoint": settings.azure_openai_endpoint,
        "api_version": settings.openai_api_version,
        "max_retries": settings.openai_max_retries,
        "timeout": settings.openai_timeout_seconds,
    }


def make_azure(settings: Settings) -> AsyncAzureOpenAI:
    """An ``AsyncAzureOpenAI`` client; ``SettingsError`` names what is missing."""
    return AsyncAzureOpenAI(**_options(settings))


def azure_url(url: str) -> str:
    """``/v1/chat/completions`` -> ``/chat/completions``."""
    return url[len(V1) :] if url.startswith(V1 + "/") else url


class AzureOpenAIProvider(FilesBatchesProvider):
    name: ClassVar[str] = "azure"
    limits = AZURE_LIMITS
    # Global Batch serves these; completions and moderations are OpenAI's alone
    endpoints: ClassVar[frozenset[str] | None] = frozenset(
        {"/v1/chat/completions", "/v1/embeddings", "/v1/responses"}
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureOpenAIProvider:
        return cls(
            make_azure(settings),
            upload_client=AzureOpenAI(**_options(settings)),
            file_expires_after=settings.azure_file_expires_after_seconds,
            output_expires_after=settings.azure_output_expires_after_seconds,
        )

    def batch_url(self, url: str) -> str:
        return azure_url(url)

    def batch_line(self, line: bytes) -> bytes:
        parsed = orjson.loads(line)
        url = parsed.get("url")
        if isinstance(url, str):
            parsed["url"] = azure_url(url)
        return orjson.dumps(parsed)

    def request_line(self, raw: str, parsed: dict[str, Any]) -> bytes:
        url = parsed.get("url")
        if isinstance(url, str) and not url.startswith(V1 + "/"):
            parsed["url"] = V1 + url
        return orjson.dumps(parsed)
