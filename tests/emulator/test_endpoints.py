"""Response bodies per endpoint parse as the SDK's own types; embeddings have the right shape;
hundreds of concurrent batches complete through the async client."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
from typing import Any

from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from batchpipe.devtools.emulator.runner import RunningEmulator
from tests.emulator.helpers import (
    aclient,
    await_batch,
    client,
    create,
    jsonl,
    read_jsonl,
    upload,
    wait,
)


def _line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _run(emulator: RunningEmulator, url: str, bodies: list[dict[str, Any]]) -> list[Any]:
    c = client(emulator)
    lines = [_line(f"c{i}", url, body) for i, body in enumerate(bodies)]
    done = wait(c, create(c, upload(c, jsonl(lines)), endpoint=url).id)
    assert done.status == "completed", done
    out = sorted(read_jsonl(c, done.output_file_id), key=lambda line: line["custom_id"])
    assert len(out) == len(bodies)
    return [line["response"]["body"] for line in out]


def test_chat_bodies_are_deterministic_and_respect_max_tokens(emulator: RunningEmulator) -> None:
    message = [{"role": "user", "content": "Tell me about the sea and the sky"}]
    bodies = _run(
        emulator,
        "/v1/chat/completions",
        [
            {"model": "gpt-4o-mini", "messages": message},
            {"model": "gpt-4o-mini", "messages": message},
            {"model": "gpt-4o-mini", "messages": message, "max_completion_tokens": 2},
        ],
    )
    first, second, short = (ChatCompletion.model_validate(b) for b in bodies)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert "sea and the sky" in (first.choices[0].message.content or "")
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens <= 2


def test_embeddings_have_the_right_shape(emulator: RunningEmulator) -> None:
    bodies = _run(
        emulator,
        "/v1/embeddings",
        [
            {"model": "text-embedding-3-small", "input": "hello"},
            {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 256},
            {"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        ],
    )
    single, many, b64 = bodies
    (large,) = _run(emulator, "/v1/embeddings", [{"model": "text-embedding-3-large", "input": "x"}])
    parsed = CreateEmbeddingResponse.model_validate(single)
    assert len(parsed.data) == 1 and len(parsed.data[0].embedding) == 1536
    norm = sum(v * v for v in parsed.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3
    assert [len(d["embedding"]) for d in many["data"]] == [256, 256, 256]
    assert len(large["data"][0]["embedding"]) == 3072
    decoded = struct.unpack("<1536f", base64.b64decode(b64["data"][0]["embedding"]))
    assert abs(decoded[0] - parsed.data[0].embedding[0]) < 1e-5
    assert parsed.usage.prompt_tokens > 0


def test_responses_completions_and_moderations(emulator: RunningEmulator) -> None:
    (resp,) = _run(emulator, "/v1/responses", [{"model": "gpt-4.1-mini", "input": "Hi there"}])
    parsed = Response.model_validate(resp)
    assert parsed.output_text.startswith("Emulated reply")
    assert parsed.usage is not None and parsed.usage.total_tokens > 0
    (cmpl,) = _run(
        emulator, "/v1/completions", [{"model": "gpt-3.5-turbo-instruct", "prompt": "x"}]
    )
    assert Completion.model_validate(cmpl).choices[0].text
    (mod,) = _run(emulator, "/v1/moderations", [{"model": "omni-moderation-latest", "input": "x"}])
    assert ModerationCreateResponse.model_validate(mod).results[0].flagged is False


def test_completions_batch_has_usage_and_a_choice_per_prompt(emulator: RunningEmulator) -> None:
    c = client(emulator)
    model = "gpt-3.5-turbo-instruct"
    lines = [
        _line("one", "/v1/completions", {"model": model, "prompt": "Say this is a test"}),
        _line("many", "/v1/completions", {"model": model, "prompt": ["a b", "c d"], "n": 2}),
        _line("tokens", "/v1/completions", {"model": model, "prompt": [1, 2, 3], "max_tokens": 2}),
        _line("bad", "/v1/completions", {"model": model}),
        _line("bad-type", "/v1/completions", {"model": model, "prompt": {"x": 1}}),
    ]
    done = wait(c, create(c, upload(c, jsonl(lines)), endpoint="/v1/completions").id)
    assert done.status == "completed" and done.model == model
    out = {
        line["custom_id"]: line["response"]["body"] for line in read_jsonl(c, done.output_file_id)
    }
    one, many, tokens = (Completion.model_validate(out[k]) for k in ("one", "many", "tokens"))
    assert one.object == "text_completion" and one.choices[0].text
    assert [choice.index for choice in many.choices] == [0, 1, 2, 3]
    assert tokens.choices[0].finish_reason == "length"
    for parsed in (one, many, tokens):
        assert parsed.usage is not None and parsed.usage.prompt_tokens > 0
        assert (
            parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens
        )
    assert done.usage is not None
    assert done.usage.total_tokens == sum(out[k]["usage"]["total_tokens"] for k in out)
    errors = {line["custom_id"]: line["response"] for line in read_jsonl(c, done.error_file_id)}
    assert {k: v["status_code"] for k, v in errors.items()} == {"bad": 400, "bad-type": 400}
    assert errors["bad"]["body"]["error"]["param"] == "prompt"


def test_moderations_batch_has_no_usage(emulator: RunningEmulator) -> None:
    c = client(emulator)
    model = "omni-moderation-latest"
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    lines = [
        _line("text", "/v1/moderations", {"model": model, "input": "hello"}),
        _line("list", "/v1/moderations", {"model": model, "input": ["a", "b", "c"]}),
        _line(
            "parts",
            "/v1/moderations",
            {"model": model, "input": [{"type": "text", "text": "x"}, image]},
        ),
        _line("bad", "/v1/moderations", {"model": model, "input": 5}),
    ]
    done = wait(c, create(c, upload(c, jsonl(lines)), endpoint="/v1/moderations").id)
    assert done.status == "completed"
    out = {
        line["custom_id"]: line["response"]["body"] for line in read_jsonl(c, done.output_file_id)
    }
    parsed = {k: ModerationCreateResponse.model_validate(v) for k, v in out.items()}
    assert [len(parsed[k].results) for k in ("text", "list", "parts")] == [1, 3, 1]
    assert out["parts"]["results"][0]["category_applied_input_types"]["violence"] == [
        "text",
        "image",
    ]
    assert all("usage" not in body for body in out.values())
    assert done.usage is not None and done.usage.total_tokens == 0
    (bad,) = read_jsonl(c, done.error_file_id)
    assert (bad["custom_id"], bad["response"]["status_code"]) == ("bad", 400)


async def test_hundreds_of_concurrent_batches(emulator: RunningEmulator) -> None:
    c = aclient(emulator)
    count = 200
    uploaded = await c.files.create(
        file=("in.jsonl", io.BytesIO(jsonl([_line(f"r{i}", "/v1/chat/completions",
              {"model": "m", "messages": [{"role": "user", "content": str(i)}]})
              for i in range(5)]))),
        purpose="batch",
    )  # fmt: skip
    batches = await asyncio.gather(
        *(
            c.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"n": str(i)},
            )
            for i in range(count)
        )
    )
    started = time.monotonic()
    while emulator.stats()["batches_by_status"] != {"completed": count}:
        assert time.monotonic() - started < 60, emulator.stats()
        await asyncio.sleep(0.1)
    listed = [b async for b in c.batches.list(limit=100)]
    assert sorted(b.id for b in listed) == sorted(b.id for b in batches)
    assert [b.created_at for b in listed] == sorted((b.created_at for b in listed), reverse=True)
    assert {b.status for b in listed} == {"completed"}
    assert (await await_batch(c, batches[0].id)).request_counts.completed == 5  # type: ignore[union-attr]
    stats = emulator.stats()
    assert stats["batches_by_status"] == {"completed": count}
    assert stats["lines_submitted"] == 5 * count
    assert stats["duplicate_custom_ids"] == 5
    await c.close()
