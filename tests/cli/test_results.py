"""``batchpipe results`` against the real broker: read_committed, caught-up exit, --follow,
consumer-group memory, and the table / JSON output."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from typer.testing import CliRunner

from batchpipe.services.cli import app
from batchpipe.services.cli.results import TopicMissing, result_row, stream_results
from batchpipe.shared.contracts import ResultError, ResultMessage, ResultResponse, encode, key_bytes
from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import Settings
from tests.cli.test_submit import env_for
from tests.conftest import ProducerFactory, make_test_settings


def result(custom_id: str, content: str = "Hello!", status: str = "succeeded") -> ResultMessage:
    now = int(time.time())
    if status != "succeeded":
        return ResultMessage(
            custom_id=custom_id,
            status=status,
            batch_id="batch_1",
            error=ResultError(code="batch_expired", message="the batch expired"),
            attempts=3,
            model="gpt-4o-mini",
            submitted_at=now - 7,
            completed_at=now,
        )
    body = {"object": "chat.completion", "choices": [{"message": {"content": content}}]}
    return ResultMessage(
        custom_id=custom_id,
        status="succeeded",
        batch_id="batch_1",
        response=ResultResponse(status_code=200, body=body),
        attempts=1,
        model="gpt-4o-mini",
        submitted_at=now - 7,
        completed_at=now,
    )


async def produce(
    factory: ProducerFactory, topic: str, *msgs: ResultMessage, abort: bool = False
) -> None:
    producer = await factory(transactional_id=f"results-test-{uuid.uuid4().hex}")
    await producer.begin_transaction()
    for msg in msgs:
        await producer.send(topic, encode(msg), key=key_bytes(msg.custom_id))
    if abort:
        await producer.abort_transaction()
    else:
        await producer.commit_transaction()


async def test_reads_only_committed_results_and_exits_when_caught_up(
    settings: Settings, producer_factory: ProducerFactory
) -> None:
    topic = settings.results_topic
    await produce(producer_factory, topic, result("a"), result("b"))
    await produce(producer_factory, topic, result("aborted"), abort=True)
    await produce(producer_factory, topic, result("c", status="expired"))
    seen: list[bytes] = []
    count = await asyncio.wait_for(
        stream_results(settings, seen.append, group_id="", from_beginning=True), 30
    )
    ids = sorted(orjson.loads(v)["custom_id"] for v in seen)
    assert (count, ids) == (3, ["a", "b", "c"])


async def test_a_group_remembers_what_it_has_shown(
    settings: Settings, producer_factory: ProducerFactory
) -> None:
    group = f"results-cli-{uuid.uuid4().hex}"
    await produce(producer_factory, settings.results_topic, result("a"), result("b"))
    first: list[bytes] = []
    assert await stream_results(settings, first.append, group_id=group) == 2
    await produce(producer_factory, settings.results_topic, result("c"))
    second: list[bytes] = []
    assert await stream_results(settings, second.append, group_id=group) == 1
    assert orjson.loads(second[0])["custom_id"] == "c"
    again: list[bytes] = []
    assert await stream_results(settings, again.append, group_id=group, from_beginning=True) == 3


async def test_follow_prints_results_as_they_arrive(
    settings: Settings, producer_factory: ProducerFactory
) -> None:
    await produce(producer_factory, settings.results_topic, result("old"))
    seen: list[bytes] = []
    stop = asyncio.Event()
    # no group and no --from-beginning: only results that arrive from now on
    task = asyncio.create_task(
        stream_results(settings, seen.append, group_id="", follow=True, stop=stop)
    )
    await asyncio.sleep(2.0)
    await produce(producer_factory, settings.results_topic, result("new-1"), result("new-2"))
    deadline = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(task, 10) == 2
    assert sorted(orjson.loads(v)["custom_id"] for v in seen) == ["new-1", "new-2"]


async def test_a_missing_topic_is_reported(settings: Settings) -> None:
    other = settings.model_copy(update={"results_topic": f"nope-{uuid.uuid4().hex}"})
    with pytest.raises(TopicMissing, match="batchpipe topics"):
        await stream_results(other, lambda _: None, group_id="")


def test_result_rows_show_the_answer_or_the_error() -> None:
    assert result_row(encode(result("a", "Hi there"))) == [
        "a",
        "succeeded",
        "gpt-4o-mini",
        "1",
        "7",
        "Hi there",
    ]
    assert result_row(encode(result("b", status="expired")))[1:] == [
        "expired",
        "gpt-4o-mini",
        "3",
        "7",
        "batch_expired: the batch expired",
    ]
    assert result_row(b"\xff garbage")[1] == "undecodable"


def test_cli_prints_json_lines_and_a_table(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_test_settings(kafka_bootstrap)
    asyncio.run(ensure_topics(settings))

    async def seed() -> None:
        from batchpipe.shared.kafka import make_producer

        producer = make_producer(settings, transactional_id=f"cli-{uuid.uuid4().hex}")
        await producer.start()
        async with producer.transaction():
            for msg in (result("one", "[bold]not markup[/bold]"), result("two")):
                await producer.send(
                    settings.results_topic, encode(msg), key=key_bytes(msg.custom_id)
                )
        await producer.stop()

    asyncio.run(seed())
    env_for(settings, monkeypatch)
    as_json = CliRunner().invoke(app, ["results", "--json", "--from-beginning", "--group-id", ""])
    assert as_json.exit_code == 0, as_json.output
    parsed = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert sorted(p["custom_id"] for p in parsed) == ["one", "two"]

    table = CliRunner().invoke(app, ["results", "--group-id", f"g-{uuid.uuid4().hex}"])
    assert table.exit_code == 0, table.output
    assert "custom_id" in table.stdout and "succeeded" in table.stdout
    assert "[bold]not markup[/bold]" in table.stdout
    assert "2 result(s)" in table.output
