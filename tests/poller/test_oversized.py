"""No poison results, against the real broker and the emulator: one result of a batch is
larger than the results topic accepts (a small BATCHPIPE_RESULTS_MAX_MESSAGE_BYTES, with which
the topic is created); every result still arrives exactly once, the big one as
``result_too_large`` with its ``body_ref``, and ``batchpipe results fetch`` returns its body."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from typer.testing import CliRunner

from batchpipe.services.cli.commands import app
from batchpipe.services.cli.results import ResultNotFound, fetch_body, fetch_line
from batchpipe.shared.contracts import RESULT_TOO_LARGE, ResultMessage, decode
from batchpipe.shared.kafka import make_producer
from batchpipe.shared.providers.openai import make_openai
from batchpipe.shared.settings import settings_env
from tests.support import read_until

from .harness import (
    committed_consumer,
    create_batch,
    lines_for,
    poller_settings,
    publish_batches,
    running_poller,
    wait_ended,
)
from .helpers import request_line

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

LIMIT = 32 * 1024
NORMAL = 20


async def test_an_oversized_result_is_published_without_its_body_and_can_be_fetched(
    kafka_bootstrap: str, emulator: Any, producer_factory: Any, tmp_path: Path
) -> None:
    settings = await poller_settings(
        kafka_bootstrap, emulator, results_max_message_bytes=LIMIT, poller_txn_max_messages=7
    )
    # The topic really refuses larger messages: unchecked, the big result would be refused.
    raw = make_producer(settings)
    await raw.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await raw.send_and_wait(settings.results_topic, b"x" * (LIMIT + 1), key=b"k")
    finally:
        await raw.stop()

    big = request_line("big", "tell me everything")
    big["body"]["n"] = 400  # 400 choices: a response body of ~150 KB
    lines = lines_for("ok", NORMAL)
    lines.insert(NORMAL // 2, big)
    client = make_openai(settings)
    batch = await create_batch(client, lines)
    assert await wait_ended(client, batch.batch_id) == "completed"
    await publish_batches(await producer_factory(), settings, [batch])

    consumer = await committed_consumer(settings, settings.results_topic)
    async with running_poller(settings) as poller:
        got = await read_until(consumer, lambda rs: len(rs) >= NORMAL + 1, settle=2.0)
        assert not poller.follower.tracked
        too_large = poller.metrics.registry.get_sample_value(
            "poller_results_too_large_total", {"code": RESULT_TOO_LARGE}
        )
    await consumer.stop()
    assert too_large == 1

    ids = Counter(r.key.decode() for r in got)
    assert len(got) == NORMAL + 1 and set(ids.values()) == {1}, ids.most_common(3)
    results = {r.key.decode(): decode(ResultMessage, r.value) for r in got}
    assert all(len(r.value) <= LIMIT for r in got)
    for custom_id, result in results.items():
        if custom_id == "big":
            continue
        assert result.status == "succeeded" and result.error is None and result.body_ref is None
        assert result.response is not None and result.response.body is not None

    stub = results["big"]
    assert stub.status == "succeeded" and stub.usage is not None
    assert stub.usage.output_tokens > 1000  # the provider's usage is kept
    assert stub.response is not None
    assert stub.response.status_code == 200 and stub.response.body is None
    assert stub.error is not None and stub.error.code == RESULT_TOO_LARGE
    assert f"{LIMIT:,} bytes" in stub.error.message
    ref = stub.body_ref
    assert ref is not None
    assert (ref.provider, ref.batch_id, ref.custom_id) == ("openai", batch.batch_id, "big")

    # The full body, from the provider: as the function and as the CLI.
    body = await fetch_body(settings, ref.provider, ref.batch_id, ref.custom_id)
    assert body["object"] == "chat.completion" and len(body["choices"]) == 400
    assert len(orjson.dumps(body)) == ref.body_bytes > LIMIT
    output_file = (await client.batches.retrieve(ref.batch_id)).output_file_id
    assert output_file is not None
    output = (await client.files.content(output_file)).text
    published = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    [original] = [line for line in published if line["custom_id"] == "big"]
    assert body == original["response"]["body"]
    line = await fetch_line(settings, "openai", ref.batch_id, "ok-3")
    assert line["response"]["body"] == results["ok-3"].response.body  # type: ignore[union-attr]
    with pytest.raises(ResultNotFound):
        await fetch_body(settings, "openai", ref.batch_id, "nope")

    target = tmp_path / "big.json"
    env = settings_env(settings)
    args = ["results", "fetch", ref.batch_id, ref.custom_id, "--provider", ref.provider]
    done = await asyncio.to_thread(CliRunner().invoke, app, [*args, "-o", str(target)], env=env)
    assert done.exit_code == 0, done.output
    assert orjson.loads(target.read_bytes()) == body
    missing = await asyncio.to_thread(
        CliRunner().invoke, app, ["results", "fetch", ref.batch_id, "nope"], env=env
    )
    assert missing.exit_code == 1 and "ResultNotFound" in missing.output
