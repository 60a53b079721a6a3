"""The OpenAI client of batchpipe: the official SDK, configured from ``Settings``.

The same code path talks to api.openai.com and to the local emulator; only
``OPENAI_BASE_URL`` differs. The SDK retries 429/5xx itself (honouring ``Retry-After``) up to
``BATCHPIPE_OPENAI_MAX_RETRIES`` times.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI, OpenAI

from batchpipe.shared.settings import Settings, SettingsError


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
    """The same client, synchronous: for work run in a thread (the dispatcher's file uploads,
    see ``services/dispatcher/submit.py``)."""
    return OpenAI(**_options(settings))
