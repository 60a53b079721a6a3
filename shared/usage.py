"""One shape for the token usage of every result, whatever the provider and endpoint.

Each API names its counts differently: chat and completions say ``prompt_tokens`` /
``completion_tokens`` (details in ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``), responses says ``input_tokens`` /
``output_tokens`` (``input_tokens_details``, ``output_tokens_details``), embeddings only
``prompt_tokens`` and ``total_tokens``, Anthropic's messages ``input_tokens``,
``output_tokens`` and ``cache_read_input_tokens``. ``normalize_usage`` maps all of them to
``{"input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"}``,
the ``usage`` of every ``ResultMessage``; the provider's own object stays in the response body.

Invariant: counts are non-negative ints; a count the provider does not report is 0 for the
three totals and None for the two details (not given is not zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _first(usage: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = _count(usage.get(name))
        if value is not None:
            return value
    return None


def _detail(usage: Mapping[str, Any], detail: tuple[str, ...], name: str) -> int | None:
    for container in detail:
        inner = usage.get(container)
        if isinstance(inner, Mapping):
            value = _count(inner.get(name))
            if value is not None:
                return value
    return None


def normalize_usage(usage: Any) -> dict[str, int | None] | None:
    """The common usage object of a provider's ``usage`` (None when there is none)."""
    if type(usage) is dict and len(usage) == 3 and "completion_tokens" in usage:
        # the common case, chat without details: {prompt, completion, total}
        given, taken, total = (
            usage.get("prompt_tokens"),
            usage["completion_tokens"],
            usage.get("total_tokens"),
        )
        if (
            type(given) is int
            and type(taken) is int
            and type(total) is int
            and min(given, taken, total) >= 0
        ):
            return {
                "input_tokens": given,
                "output_tokens": taken,
                "total_tokens": total,
                "cached_tokens": None,
                "reasoning_tokens": None,
            }
    if not isinstance(usage, Mapping) or not usage:
        return None
    tokens_in = _first(usage, "prompt_tokens", "input_tokens") or 0
    tokens_out = _first(usage, "completion_tokens", "output_tokens") or 0
    cached = _detail(usage, ("prompt_tokens_details", "input_tokens_details"), "cached_tokens")
    if cached is None:
        cached = _count(usage.get("cache_read_input_tokens"))
    anthropic_written = _count(usage.get("cache_creation_input_tokens"))
    if anthropic_written is not None or "cache_read_input_tokens" in usage:
        # Anthropic's input_tokens leaves out what was read from or written to the cache
        tokens_in += (cached or 0) + (anthropic_written or 0)
    total = _count(usage.get("total_tokens"))
    return {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "total_tokens": total if total is not None else tokens_in + tokens_out,
        "cached_tokens": cached,
        "reasoning_tokens": _detail(
            usage, ("completion_tokens_details", "output_tokens_details"), "reasoning_tokens"
        ),
    }
