"""ingest stamps the name of the caller's API key on every request it publishes (header
``batchpipe-key``), never the key; with no keys configured requests carry no such header."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from batchpipe.services.ingest.auth import fingerprint
from batchpipe.shared.contracts import KEY_HEADER
from batchpipe.shared.settings import Settings
from tests.conftest import ConsumerFactory
from tests.ingest.conftest import running
from tests.support import drain

MSG = [{"role": "user", "content": "hi"}]


async def test_requests_carry_the_key_name_only(
    settings: Settings,
    consumer_factory: ConsumerFactory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    locked = settings.model_copy(
        update={"ingest_api_keys": (SecretStr("team-a=s3cret-alpha"), SecretStr("s3cret-bare"))}
    )
    async with running(locked) as (_, client):
        for key, count in (("s3cret-alpha", 2), ("s3cret-bare", 1)):
            ok = await client.post(
                "/requests",
                json={"data": [MSG] * count},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert ok.status_code == 202, ok.text
    async with running(settings) as (_, client):  # open ingest: unattributed
        assert (await client.post("/requests", json={"data": [MSG]})).status_code == 202

    consumer = await consumer_factory(settings.requests_topic)
    records = await drain(consumer, 4, settle=0.5)
    names = sorted(dict(r.headers).get(KEY_HEADER, b"").decode() for r in records)
    assert names == ["", fingerprint("s3cret-bare"), "team-a", "team-a"]
    out, err = capfd.readouterr()
    seen = caplog.text + out + err + "".join(str(r.value) + str(r.headers) for r in records)
    assert "s3cret" not in seen
