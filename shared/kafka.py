"""Kafka clients built from ``Settings``: the one place that knows how batchpipe connects.

Every producer, consumer, admin client and Faust app in batchpipe is made here, so the
connection and security settings (SASL, TLS) reach all of them the same way.

- ``make_producer``: idempotent, ``acks=all``; give ``transactional_id`` for transactions.
- ``make_consumer``: manual commits, ``read_committed`` by default.
- ``ensure_topics``: creates the topics of the registry (``shared.topics``) that are missing,
  or the given specs (idempotent, safe to race).
- ``faust_broker_config``: the same settings for a Faust app.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import MAX_REQUEST_SIZE, TopicSpec, topic_specs

log = get_logger(__name__)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    return context


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection and security keyword arguments shared by every aiokafka client."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        config["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        config["sasl_plain_password"] = password.get_secret_value() if password else None
    return config


def make_producer(
    settings: Settings, *, transactional_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """An idempotent ``acks=all`` producer (not started); transactional if an id is given."""
    config: dict[str, Any] = {
        **client_config(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": MAX_REQUEST_SIZE,
        "compression_type": None,
    }
    if transactional_id is not None:
        config["transactional_id"] = transactional_id
    config.update(overrides)
    return AIOKafkaProducer(**config)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer (not started) with manual commits that reads only committed transactions."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_bytes": 52_428_800,
        "max_partition_fetch_bytes": MAX_REQUEST_SIZE,
    }
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)


def group_instance_id(template: str | None) -> str | None:
    """A static membership id from its setting: ``{hostname}`` becomes this host's name, so
    replicas that share one environment (compose, a deployment) still get ids of their own."""
    if template is None:
        return None
    import socket

    return template.replace("{hostname}", socket.gethostname())


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_config(settings))


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, *, connect_timeout: float = 30.0
) -> list[str]:
    """Create the topics in ``specs`` (default: all of ``topic_specs``) that do not exist yet;
    return the names created. Idempotent; a topic created meanwhile counts as existing.

    A retriable error (a broker of a cluster down, its metadata not yet refreshed) is retried
    with a new admin client until ``connect_timeout`` has passed."""
    wanted = list(specs) if specs is not None else topic_specs(settings)
    deadline = asyncio.get_running_loop().time() + connect_timeout
    created: list[str] = []
    while True:
        try:
            created += await _ensure_once(settings, wanted, connect_timeout)
            return created
        except KafkaError as exc:
            if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            log.info("topics.retry", error=type(exc).__name__)
            await asyncio.sleep(0.5)


async def _ensure_once(
    settings: Settings, wanted: list[TopicSpec], connect_timeout: float
) -> list[str]:
    admin = make_admin(settings)
    await asyncio.wait_for(admin.start(), connect_timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=spec.replication_factor,
                            topic_configs=dict(spec.config),
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                continue
            # aiokafka reports per-topic failures in the response instead of raising.
            error_code = next((e[1] for e in response.topic_errors if e[0] == spec.name), 0)
            if error_code == TopicAlreadyExistsError.errno:
                continue  # created meanwhile (another process, or metadata not yet listed)
            if error_code:
                raise for_code(error_code)(f"creating topic {spec.name}")
            created.append(spec.name)
            log.info("topic.created", topic=spec.name, partitions=spec.partitions)
        return created
    finally:
        await admin.close()


async def topic_exists(settings: Settings, topic: str, *, wait_seconds: float = 5.0) -> bool:
    """True if the broker answers and knows ``topic`` (for readiness checks)."""
    admin = make_admin(settings)
    try:
        await asyncio.wait_for(admin.start(), wait_seconds)
        topics = await asyncio.wait_for(admin.list_topics(), wait_seconds)
        return topic in topics
    except (KafkaError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()


def faust_broker_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` that connect it like every other client."""
    import faust

    urls = [f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")]
    config: dict[str, Any] = {"broker": ";".join(urls)}
    protocol = settings.kafka_security_protocol
    context = _ssl_context(settings)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        config["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    elif context is not None:
        config["broker_credentials"] = faust.SSLCredentials(context)
    return config
