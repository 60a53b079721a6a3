"""A secured broker refuses what it must, and a service says why in one line.

A wrong password fails at start-up naming the setting (no stack dump, no secret printed); a
service running with another service's principal is refused what it may not do and says
which rights it lacks; TLS verifies the broker's hostname and CA.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import SecretStr

from batchpipe.devtools.kafka_security import ensure_tls
from batchpipe.shared.kafka import _ssl_context, make_producer
from batchpipe.shared.kafka_access import KafkaAccessError, check_access
from batchpipe.shared.settings import settings_env
from tests.security.conftest import Secured

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WRONG = "not-the-password-7f3a"


def run_service(
    secured: Secured, service: str, user: str, **env: str
) -> subprocess.CompletedProcess[str]:
    settings = secured.as_user(user).model_copy(update={"openai_api_key": SecretStr("sk-x")})
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHPIPE_", "OPENAI_"))}
    argv = [sys.executable, "-m", "batchpipe.services.cli", service]
    return subprocess.run(
        argv, env=base | settings_env(settings) | env, capture_output=True, text=True, timeout=60
    )


def test_a_wrong_password_fails_at_start_naming_the_setting(secured: Secured) -> None:
    done = run_service(secured, "dispatcher", "dispatcher", BATCHPIPE_KAFKA_SASL_PASSWORD=WRONG)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "BATCHPIPE_KAFKA_SASL_PASSWORD" in output and "'dispatcher'" in output
    assert "Traceback" not in output and WRONG not in output


async def test_every_service_checks_its_credentials(secured: Secured) -> None:
    for service in ("ingest", "dispatcher", "poller"):
        bad = secured.as_user(service, kafka_sasl_password=SecretStr(WRONG))
        with pytest.raises(KafkaAccessError, match="BATCHPIPE_KAFKA_SASL_PASSWORD") as caught:
            await check_access(bad, service)
        assert WRONG not in str(caught.value)
        await check_access(secured.as_user(service), service)  # its own principal: allowed


def test_a_service_with_another_principal_is_refused_and_says_so(secured: Secured) -> None:
    done = run_service(secured, "dispatcher", "ingest")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "principal 'ingest'" in output and "Traceback" not in output
    assert f"Read topic '{secured.settings.requests_topic}'" in output
    assert f"Read group '{secured.settings.dispatcher_group_id}'" in output


async def test_the_poller_as_the_dispatcher_lacks_the_poller_rights(secured: Secured) -> None:
    with pytest.raises(KafkaAccessError) as caught:
        await check_access(secured.as_user("dispatcher"), "poller")
    message = str(caught.value)
    assert f"Write topic '{secured.settings.results_topic}'" in message
    assert "Read group 'batchpipe-poller." in message


async def test_the_broker_refuses_a_write_the_principal_may_not_do(secured: Secured) -> None:
    ingest = secured.as_user("ingest")
    producer = make_producer(ingest)
    await producer.start()
    try:
        await (await producer.send(ingest.requests_topic, b"allowed"))
        with pytest.raises(TopicAuthorizationFailedError):
            await (await producer.send(ingest.results_topic, b"forged result"))
    finally:
        await producer.stop()


def test_tls_verifies_the_brokers_hostname(secured: Secured) -> None:
    context = _ssl_context(secured.as_user("ingest"))
    assert context is not None and context.check_hostname
    port = secured.cluster.nodes[0].port
    for name in ("localhost", "127.0.0.1"):  # the names its certificate carries
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn't match"),
    ):
        context.wrap_socket(raw, server_hostname="kafka.example.com")


async def test_a_broker_signed_by_another_ca_is_refused(secured: Secured, tmp_path: Path) -> None:
    ensure_tls(tmp_path)
    other = secured.as_user("ingest", kafka_ssl_cafile=tmp_path / "ca.pem")
    with pytest.raises(KafkaAccessError, match="BATCHPIPE_KAFKA_SSL_CAFILE") as caught:
        await check_access(other, "ingest")
    assert "certificate verify failed" in str(caught.value)
