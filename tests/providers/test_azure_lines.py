"""The Azure provider's line shapes: no ``/v1`` in a batch, restored for the requests topic."""

from __future__ import annotations

from typing import Any, cast

import orjson

from batchpipe.shared.providers.azure import AzureOpenAIProvider, azure_url

LINE = {
    "custom_id": "r-1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "my-deployment", "messages": [{"role": "user", "content": "hi"}]},
}


def provider() -> AzureOpenAIProvider:
    return AzureOpenAIProvider(cast(Any, None))


def test_urls_lose_v1() -> None:
    assert azure_url("/v1/chat/completions") == "/chat/completions"
    assert azure_url("/v1/embeddings") == "/embeddings"
    assert azure_url("/chat/completions") == "/chat/completions"
    assert provider().batch_url("/v1/responses") == "/responses"


def test_a_line_goes_to_azure_without_v1_and_comes_back_as_it_was() -> None:
    azure = provider()
    original = orjson.dumps(LINE)
    in_batch = azure.batch_line(original)
    assert orjson.loads(in_batch) == {**LINE, "url": "/chat/completions"}
    assert len(in_batch) < len(original)
    back = azure.request_line(in_batch.decode(), orjson.loads(in_batch))
    assert back == original
