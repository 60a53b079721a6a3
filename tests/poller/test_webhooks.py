"""The webhook endpoint (services/poller/webhooks.py) without a broker: the SDK verifies what
the emulator signs; a bad signature, an old timestamp or a replayed id is refused and changes
nothing; an unknown batch is acknowledged and only remembered; ``Follower.hurry`` moves a
followed batch's retrieve to now and never retrieves a batch twice at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from batchpipe.devtools.emulator.webhooks import (
    batch_event,
    new_secret,
    signature,
    signed_headers,
)
from batchpipe.services.poller.poll import ERROR_BACKOFF_SECONDS, HURRY_RETRIES, Follower, Tracked
from batchpipe.services.poller.schedule import PollSchedule, RetrievePacer, TokenBucket
from batchpipe.services.poller.webhooks import WEBHOOK_PATH, Expiring, NudgeRecord, Webhooks
from batchpipe.shared.providers.base import BatchOutcome, Progress
from batchpipe.shared.providers.registry import Providers
from batchpipe.shared.settings import Settings, SettingsError, load_settings

from .helpers import MemoryProvider, record

SECRET = new_secret()


class Hurries:
    """Stands for ``Follower.hurry``: which batches were hurried; ``followed`` are known."""

    def __init__(self, followed: set[str]) -> None:
        self.followed = followed
        self.calls: list[str] = []

    def __call__(self, batch_id: str) -> bool:
        self.calls.append(batch_id)
        return batch_id in self.followed


def webhooks(followed: set[str] | None = None, secret: str = SECRET) -> tuple[Webhooks, Hurries]:
    hurry = Hurries(followed or set())
    hooks = Webhooks(Settings(openai_webhook_secret=SecretStr(secret)), hurry, CollectorRegistry())
    published: list[NudgeRecord] = []

    async def publish(nudge: NudgeRecord) -> None:
        published.append(nudge)

    hooks._publish = publish  # type: ignore[method-assign]
    hooks.published = published  # type: ignore[attr-defined]
    return hooks, hurry


def delivery(
    batch_id: str, status: str = "completed", *, secret: str = SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = batch_event(batch_id, status)
    return body, signed_headers(secret, f"wh_{batch_id}_{status}", body, at)


async def test_a_signed_event_hurries_the_batch_and_publishes_one_nudge() -> None:
    hooks, hurry = webhooks({"batch_a"})
    for status in ("completed", "failed", "expired", "cancelled"):
        code, _ = await hooks.receive(*delivery("batch_a", status))
        assert code == 200
    assert hurry.calls == ["batch_a"] * 4
    nudges = hooks.published  # type: ignore[attr-defined]
    assert [n.event_type for n in nudges] == [
        "batch.completed",
        "batch.failed",
        "batch.expired",
        "batch.cancelled",
    ]
    assert {n.batch_id for n in nudges} == {"batch_a"}
    assert "batch_a" not in hooks.recent  # followed here: nothing to remember


async def test_bad_signature_old_or_future_timestamp_or_missing_headers_change_nothing() -> None:
    hooks, hurry = webhooks({"batch_a"})
    body, headers = delivery("batch_a", secret=new_secret())  # signed with another secret
    assert (await hooks.receive(body, headers))[0] == 400
    body, headers = delivery("batch_a")
    tampered = body.replace(b"batch_a", b"batch_b")
    assert (await hooks.receive(tampered, headers))[0] == 400
    for at in (int(time.time()) - 301, int(time.time()) + 400):
        assert (await hooks.receive(*delivery("batch_a", at=at)))[0] == 400
    body, headers = delivery("batch_a")
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != missing}
        assert (await hooks.receive(body, partial))[0] == 400
    assert hurry.calls == []
    assert hooks.published == []  # type: ignore[attr-defined]
    assert len(hooks.seen) == 0 and len(hooks.recent) == 0
    # the same delivery, intact, is then accepted: a refusal did not mark its id
    assert (await hooks.receive(body, headers))[0] == 200


async def test_a_replayed_webhook_id_is_refused_and_changes_nothing() -> None:
    hooks, hurry = webhooks({"batch_a"})
    body, headers = delivery("batch_a")
    assert (await hooks.receive(body, headers))[0] == 200
    # the same id again, even freshly signed
    again = signed_headers(SECRET, headers["webhook-id"], body)
    assert (await hooks.receive(body, again))[0] == 409
    assert hurry.calls == ["batch_a"]
    assert len(hooks.published) == 1  # type: ignore[attr-defined]


async def test_an_unknown_batch_is_acknowledged_and_only_remembered() -> None:
    hooks, hurry = webhooks(set())
    code, content = await hooks.receive(*delivery("batch_nobody"))
    assert (code, content) == (200, {"status": "accepted"})
    assert hurry.calls == ["batch_nobody"]  # asked; not followed here
    assert "batch_nobody" in hooks.recent
    # when this instance starts following it (its partition came here), it is hurried
    hurry.followed.add("batch_nobody")
    hooks.following("batch_nobody")
    assert hurry.calls == ["batch_nobody", "batch_nobody"]
    hooks.following("batch_nobody")  # remembered once
    assert hurry.calls == ["batch_nobody", "batch_nobody"]


async def test_other_event_types_are_acknowledged_and_ignored() -> None:
    hooks, hurry = webhooks({"resp_1"})
    body = orjson.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "created_at": int(time.time()),
            "type": "response.completed",
            "data": {"id": "resp_1"},
        }
    )
    code, content = await hooks.receive(body, signed_headers(SECRET, "wh_r", body))
    assert (code, content) == (200, {"status": "ignored"})
    assert hurry.calls == [] and hooks.published == []  # type: ignore[attr-defined]


async def test_kafka_down_is_503_unless_the_batch_is_followed_here() -> None:
    hooks, _ = webhooks({"batch_here"})

    async def broken(nudge: NudgeRecord) -> None:
        raise RuntimeError("the nudge producer is not started")

    hooks._publish = broken  # type: ignore[method-assign]
    body, headers = delivery("batch_elsewhere")
    assert (await hooks.receive(body, headers))[0] == 503
    assert headers["webhook-id"] not in hooks.seen  # so OpenAI's retry is accepted
    assert (await hooks.receive(*delivery("batch_here")))[0] == 200


async def test_nudges_from_the_topic_hurry_or_are_remembered_and_teach_the_seen_ids() -> None:
    hooks, hurry = webhooks({"batch_mine"})
    now = time.time()
    mine = NudgeRecord(
        batch_id="batch_mine", event_type="batch.completed", webhook_id="wh_1", received_at=now
    )
    other = NudgeRecord(
        batch_id="batch_other", event_type="batch.completed", webhook_id="wh_2", received_at=now
    )
    assert hooks.apply(mine) == "hurried"
    assert hooks.apply(other) == "remembered"
    assert hooks.apply(mine) == "own"  # read twice (or accepted here): no second hurry
    assert hurry.calls == ["batch_mine", "batch_other"]
    # a replay of an id another instance accepted is refused here too
    body = batch_event("batch_mine", "completed")
    assert (await hooks.receive(body, signed_headers(SECRET, "wh_1", body)))[0] == 409


def test_warm_up_verifies_a_self_signed_event_and_marks_nothing() -> None:
    hooks, hurry = webhooks()
    hooks.warm_up()  # raises if the SDK refused it
    assert hurry.calls == [] and len(hooks.seen) == 0 and len(hooks.recent) == 0


def test_expiring_memory_forgets_after_its_ttl_and_beyond_its_size() -> None:
    clock = [1000.0]
    memory = Expiring(10.0, max_entries=3, clock=lambda: clock[0])
    memory.add("a")
    memory.add("old", at=980.0)  # older than the ttl already
    assert "a" in memory and "old" not in memory
    clock[0] = 1011.0
    assert "a" not in memory
    for key in ("b", "c", "d", "e"):
        memory.add(key)
    assert len(memory) == 3 and "b" not in memory and "e" in memory
    assert memory.take("e") and not memory.take("e")


def test_the_secret_is_a_setting_never_shown() -> None:
    secret = new_secret()
    settings = load_settings(openai_webhook_secret=secret)
    assert settings.openai_webhook_secret is not None
    assert settings.openai_webhook_secret.get_secret_value() == secret
    assert secret not in repr(settings) + str(settings.model_dump())
    with pytest.raises(SettingsError) as err:
        load_settings(openai_webhook_secret="whsec_!!not-base64!!")
    assert "OPENAI_WEBHOOK_SECRET" in str(err.value)
    assert "not-base64" not in str(err.value)


def test_the_secret_is_read_from_the_sdks_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", SECRET)
    settings = load_settings()
    assert settings.openai_webhook_secret is not None
    assert settings.openai_webhook_secret.get_secret_value() == SECRET


def test_the_emulators_signature_is_the_standard_one() -> None:
    # Standard Webhooks' reference vector (its spec's example secret, id, timestamp, body)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


async def test_the_endpoint_over_http() -> None:
    from fastapi import FastAPI

    hooks, hurry = webhooks({"batch_h"})
    app = FastAPI()
    app.include_router(hooks.router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
        body, headers = delivery("batch_h")
        ok = await client.post(WEBHOOK_PATH, content=body, headers=headers)
        assert ok.status_code == 200
        assert (await client.post(WEBHOOK_PATH, content=body, headers=headers)).status_code == 409
        bad = {**headers, "webhook-signature": "v1,AAAA"}
        assert (await client.post(WEBHOOK_PATH, content=body, headers=bad)).status_code == 400
        big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        assert (await client.post(WEBHOOK_PATH, content=big, headers=headers)).status_code == 413
    assert hurry.calls == ["batch_h"]


# --- Follower.hurry -----------------------------------------------------------------------


class SlowProvider(MemoryProvider):
    """Each retrieve answers the next status of ``statuses`` (the last one repeats)."""

    name: ClassVar[str] = "openai"

    def __init__(self, statuses: list[str]) -> None:
        super().__init__({})
        self.statuses = statuses
        self.retrieves: list[float] = []
        self.gate: asyncio.Event | None = None

    async def retrieve(self, batch_id: str) -> Progress:
        self.retrieves.append(time.monotonic())
        if self.gate is not None:
            await self.gate.wait()
        status = self.statuses[min(len(self.retrieves) - 1, len(self.statuses) - 1)]
        outcome = BatchOutcome(status="completed") if status == "completed" else None
        return Progress(status=status, outcome=outcome)


def follower(provider: SlowProvider, finished: list[str], interval: float = 300.0) -> Follower:
    async def on_finished(tracked: Tracked, outcome: BatchOutcome) -> None:
        finished.append(tracked.record.batch_id)

    return Follower(
        Providers.single(provider),
        RetrievePacer(PollSchedule(interval), TokenBucket(100.0)),
        on_finished,
        concurrency=4,
    )


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_hurry_retrieves_a_followed_batch_now_not_at_its_next_poll() -> None:
    provider = SlowProvider(["completed"])
    finished: list[str] = []
    follow = follower(provider, finished)
    follow.follow(Tracked(record=record("batch_h"), partition=0, offset=0), delay=300.0)
    task = asyncio.create_task(follow.run())
    try:
        await asyncio.sleep(0.1)
        assert provider.retrieves == []
        assert not follow.hurry("batch_unknown")
        assert follow.hurry("batch_h")
        await wait_for(lambda: finished == ["batch_h"])
        assert len(provider.retrieves) == 1
        assert "batch_h" not in follow.tracked
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lagging_read_after_hurry_is_retried_quickly_then_at_the_interval() -> None:
    provider = SlowProvider(["in_progress"])
    finished: list[str] = []
    follow = follower(provider, finished)
    follow.follow(Tracked(record=record("batch_l"), partition=0, offset=0), delay=300.0)
    task = asyncio.create_task(follow.run())
    try:
        follow.hurry("batch_l")
        await wait_for(lambda: len(provider.retrieves) == 1 + HURRY_RETRIES, timeout=15)
        gaps = [b - a for a, b in zip(provider.retrieves, provider.retrieves[1:], strict=False)]
        assert all(ERROR_BACKOFF_SECONDS * 0.7 <= gap < ERROR_BACKOFF_SECONDS * 2 for gap in gaps)
        await asyncio.sleep(ERROR_BACKOFF_SECONDS * 1.5)
        assert len(provider.retrieves) == 1 + HURRY_RETRIES  # then back to the interval
        assert finished == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_hurry_during_a_retrieve_never_retrieves_twice_at_once() -> None:
    provider = SlowProvider(["in_progress", "completed"])
    provider.gate = asyncio.Event()
    finished: list[str] = []
    follow = follower(provider, finished)
    follow.follow(Tracked(record=record("batch_r"), partition=0, offset=0), delay=0.0)
    task = asyncio.create_task(follow.run())
    try:
        await wait_for(lambda: len(provider.retrieves) == 1)
        assert follow.hurry("batch_r")  # while its retrieve is running
        await asyncio.sleep(0.2)
        assert len(provider.retrieves) == 1  # not a second one alongside
        provider.gate.set()
        # the running one answers in_progress: the next comes after the short backoff
        await wait_for(lambda: finished == ["batch_r"], timeout=ERROR_BACKOFF_SECONDS * 3)
        assert len(provider.retrieves) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
