"""The OpenAI provider: the official SDK's ``AsyncOpenAI`` on the Files + Batches protocol.

The same code talks to api.openai.com and to the local emulator; only ``OPENAI_BASE_URL``
differs. The SDK retries 429/5xx itself (honouring ``Retry-After``) up to
``BATCHPIPE_OPENAI_MAX_RETRIES`` times, except on ``batches.create`` (``files_api.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from openai import AsyncOpenAI, OpenAI

from batchpipe.shared.contracts import ENDPOINTS
from batchpipe.shared.providers.base import Limits
from batchpipe.shared.providers.files_api import FilesBatchesProvider
from batchpipe.shared.settings import Settings, SettingsError

# OpenAI Batch API hard limits (https://platform.openai.com/docs/guides/batch).
OPENAI_LIMITS = Limits(max_requests=50_000, max_bytes=200 * 1000 * 1000)


def _options(settings: Settings) -> dict[str, Any]:
    if settings.openai_api_key is None:
        raise SettingsError(
            "OPENAI_API_KEY: is not set (any value works with the local emulator unless it "
            "was started with --api-key)"
        )
    return {
        "api_key": settings.openai_api_key.get_secret_value(),
        "base_url": settings.openai_base_url,
        "max_retries": settings.openai_max_retries,
        "timeout": settings.openai_timeout_seconds,
    }


def make_openai(settings: Settings) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` client; raises ``SettingsError`` if ``OPENAI_API_KEY`` is unset."""
    return AsyncOpenAI(**_options(settings))


def make_openai_sync(settings: Settings) -> OpenAI:
    """The same client, synchronous: for the uploads run in a thread (``files_api.py``)."""
    return OpenAI(**_options(settings))


class OpenAIProvider(FilesBatchesProvider):
    name: ClassVar[str] = "openai"
    # every endpoint batchpipe accepts but Anthropic's native Messages API
    endpoints: ClassVar[frozenset[str] | None] = frozenset(ENDPOINTS) - {"/v1/messages"}
    limits = OPENAI_LIMITS

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        return cls(
            make_openai(settings),
            upload_client=make_openai_sync(settings),
            file_expires_after=settings.openai_file_expires_after_seconds,
            output_expires_after=settings.openai_output_expires_after_seconds,
        )
