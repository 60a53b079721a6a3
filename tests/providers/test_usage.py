"""normalize_usage: every provider's and endpoint's usage in one shape."""

from __future__ import annotations

from batchpipe.shared.usage import normalize_usage


def test_chat_completions_usage() -> None:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    assert normalize_usage(usage) == {
        "input_tokens": 12,
        "output_tokens": 30,
        "total_tokens": 42,
        "cached_tokens": 8,
        "reasoning_tokens": 20,
    }


def test_responses_usage() -> None:
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "total_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 3},
    }
    assert normalize_usage(usage) == {
        "input_tokens": 5,
        "output_tokens": 7,
        "total_tokens": 12,
        "cached_tokens": 0,
        "reasoning_tokens": 3,
    }


def test_embeddings_usage_has_no_output() -> None:
    assert normalize_usage({"prompt_tokens": 9, "total_tokens": 9}) == {
        "input_tokens": 9,
        "output_tokens": 0,
        "total_tokens": 9,
        "cached_tokens": None,
        "reasoning_tokens": None,
    }


def test_anthropic_usage_counts_cache_reads_and_writes_as_input() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 6,
    }
    assert normalize_usage(usage) == {
        "input_tokens": 116,
        "output_tokens": 4,
        "total_tokens": 120,
        "cached_tokens": 100,
        "reasoning_tokens": None,
    }


def test_nothing_or_junk() -> None:
    assert normalize_usage(None) is None
    assert normalize_usage({}) is None
    assert normalize_usage("12") is None
    odd = normalize_usage({"prompt_tokens": -1, "completion_tokens": True, "total_tokens": "x"})
    assert odd == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": None,
        "reasoning_tokens": None,
    }
