"""``batchpipe submit`` against the real broker: what lands on the requests topic, what is
refused (line number and reason), exit codes, and a streamed file of thousands of lines."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from batchpipe.services.cli import app
from batchpipe.services.cli.submit import submit_file
from batchpipe.shared.contracts import RequestLine, decode
from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import Settings
from tests.conftest import ConsumerFactory, make_test_settings
from tests.support import drain

GOOD_AND_BAD = [
    b'[{"role": "user", "content": "How can I learn Python?"}]',
    b'{"custom_id": "obj-1", "messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}',
    b"",
    b'{"custom_id": "line-1", "method": "POST", "url": "/v1/embeddings",'
    b' "body": {"model": "text-embedding-3-small", "input": "hello"}}',
    b"{not json",
    b'{"custom_id": "obj-1", "messages": [{"role": "user", "content": "again"}]}',
    b'[{"role": "robot", "content": "beep"}]',
]


def env_for(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "BATCHPIPE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "BATCHPIPE_REQUESTS_TOPIC": settings.requests_topic,
        "BATCHPIPE_BATCHES_TOPIC": settings.batches_topic,
        "BATCHPIPE_RESULTS_TOPIC": settings.results_topic,
        "BATCHPIPE_DEAD_LETTERS_TOPIC": settings.dead_letters_topic,
        "BATCHPIPE_LOG_FORMAT": "console",
    }.items():
        monkeypatch.setenv(name, value)


async def test_good_lines_land_bad_lines_are_refused_with_their_line_numbers(
    settings: Settings, consumer_factory: ConsumerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(GOOD_AND_BAD) + b"\n")
    progressed: list[int] = []
    summary = await submit_file(settings, path, chunk_lines=2, on_progress=progressed.append)
    assert summary.accepted == 3
    assert summary.lines == 7
    assert [(r.line, r.reason.split(":")[0].split(";")[0]) for r in summary.refusals] == [
        (5, "not valid JSON at column 2"),
        (6, "duplicate custom_id 'obj-1' (first at 2)"),
        (7, "item[0] has unknown role 'robot'"),
    ]
    assert sum(progressed) == path.stat().st_size

    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, 3, timeout=20, settle=1.0)
    assert len(records) == 3
    lines = {r.key.decode(): decode(RequestLine, r.value) for r in records}
    assert lines["obj-1"].body["model"] == "gpt-4o"
    assert lines["line-1"].url == "/v1/embeddings"
    (generated,) = set(lines) - {"obj-1", "line-1"}
    assert lines[generated].body["max_tokens"] == 1000  # default kwargs for bare messages
    assert all(not r.headers for r in records)  # first attempt: no attempt header


async def test_dry_run_produces_nothing(
    settings: Settings, consumer_factory: ConsumerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(GOOD_AND_BAD[0] + b"\n")
    summary = await submit_file(settings, path, dry_run=True)
    assert summary.accepted == 1
    consumer = await consumer_factory(settings.requests_topic)
    assert await consumer.getmany(timeout_ms=1500) == {}


@pytest.mark.slow
async def test_a_large_file_is_streamed_in_chunks(
    settings: Settings, consumer_factory: ConsumerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    count = 20_000
    with path.open("wb") as fh:
        for i in range(count):
            item = {"custom_id": f"r-{i}", "messages": [{"role": "user", "content": f"q {i}"}]}
            fh.write(orjson.dumps(item) + b"\n")
    summary = await submit_file(settings, path, chunk_lines=1000)
    assert (summary.accepted, summary.refused_count) == (count, 0)
    print(f"submit: {count} requests in {summary.seconds:.2f}s = {count / summary.seconds:,.0f}/s")
    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, count, timeout=60, settle=0.5)
    assert len({r.key for r in records}) == count == len(records)


def test_cli_exits_1_listing_refused_lines_and_0_when_all_accepted(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_test_settings(kafka_bootstrap)
    asyncio.run(ensure_topics(settings))
    env_for(settings, monkeypatch)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(GOOD_AND_BAD) + b"\n")
    result = CliRunner().invoke(app, ["submit", str(bad)])
    assert result.exit_code == 1, result.output
    assert "3 accepted into" in result.output and "3 refused" in result.output
    assert "line 5: not valid JSON at column 2" in result.output
    assert "line 7: item[0] has unknown role 'robot'" in result.output

    good = tmp_path / "good.jsonl"
    message = '{"role": "user", "content": "hi"}'
    good.write_text(f'{{"custom_id": "{uuid.uuid4().hex}", "messages": [{message}]}}\n')
    result = CliRunner().invoke(app, ["submit", str(good), "--default-model", "gpt-4.1-nano"])
    assert result.exit_code == 0, result.output
    assert "1 accepted" in result.output and "0 refused" in result.output


def test_cli_exits_2_for_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["submit", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "not a readable file" in result.output
