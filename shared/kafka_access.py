"""The start-up check of a service's Kafka access: a bad password or a missing right, said once.

Role: a service with the wrong credentials or another service's principal would otherwise
retry its connection forever or die deep inside a client with a stack dump. ``check_access``
runs before the service starts and raises ``KafkaAccessError``, whose message names the
setting at fault and, for rights, every operation the principal lacks
(``shared.acls.service_acls`` is the list of what each service needs).

- authentication (SASL) and TLS failures: which settings (``BATCHPIPE_KAFKA_SASL_USERNAME`` /
  ``_PASSWORD``, ``BATCHPIPE_KAFKA_SSL_CAFILE``) were refused, with the broker's reason;
- rights: the topics' authorized operations come from a Metadata request (v8, which reports
  them) and the groups' from DescribeGroups; a topic that does not exist yet is skipped (the
  service may create it), so is a transactional id (Kafka cannot report rights on those).

Invariant: never a password in a message; a broker that cannot be reached at all is not this
check's business (the service's own connection retries handle it), so it passes then.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Final

from aiokafka.conn import create_conn
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError
from aiokafka.protocol.admin import DescribeGroupsRequest_v3, DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from batchpipe.shared.acls import SERVICE_PRINCIPALS, Acl, service_acls
from batchpipe.shared.kafka import client_config, make_admin
from batchpipe.shared.logs import get_logger
from batchpipe.shared.settings import Settings, env_var_name

log = get_logger(__name__)

OPERATION_BITS: Final = {"Read": 3, "Write": 4, "Describe": 8, "IdempotentWrite": 12}
UNKNOWN_TOPIC: Final = 3
TOPIC_AUTHORIZATION_FAILED: Final = 29
GROUP_AUTHORIZATION_FAILED: Final = 30
NOT_REPORTED: Final = -(2**31)


class KafkaAccessError(RuntimeError):
    """The broker refused this service's credentials or rights; the message says which."""


class MetadataResponse_v8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(
                ("node_id", Int32),
                ("host", String("utf-8")),
                ("port", Int32),
                ("rack", String("utf-8")),
            ),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class MetadataRequest_v8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = MetadataResponse_v8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class AuthorizedMetadataRequest(Request[MetadataRequest_v8]):  # type: ignore[misc]
    """Metadata of some topics with the operations this principal may perform on each."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v8]) -> MetadataRequest_v8:
        return request_struct_class(self._topics, False, False, True)


class _DescribeGroupsRequest_v3(RequestStruct):  # type: ignore[misc]
    """aiokafka's v3 parses the reply as v2, dropping the authorized operations."""

    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = DescribeGroupsRequest_v3.SCHEMA


class AuthorizedDescribeGroups(Request[_DescribeGroupsRequest_v3]):  # type: ignore[misc]
    """DescribeGroups of some groups with the operations this principal may perform on each."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(
        self, request_struct_class: type[_DescribeGroupsRequest_v3]
    ) -> _DescribeGroupsRequest_v3:
        return request_struct_class(self._groups, True)


def _allowed(bits: int, operation: str) -> bool:
    return bits == NOT_REPORTED or bool(bits & (1 << OPERATION_BITS[operation]))


def _who(settings: Settings) -> str:
    user = settings.kafka_sasl_username or "ANONYMOUS"
    return f"principal {user!r} ({env_var_name('kafka_sasl_username')})"


async def _coordinator(admin: Any, group: str) -> int:
    """The group's coordinator, waiting out a fresh broker's "not available yet"."""
    for _ in range(20):
        try:
            node: int = await admin.find_coordinator(group)
            return node
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(0.5)
    node = await admin.find_coordinator(group)
    return node


async def missing_rights(admin: Any, needed: list[Acl]) -> list[Acl]:
    """The rules of ``needed`` this connection's principal does not have (see module doc)."""
    topics = sorted({a.name for a in needed if a.resource == "topic"})
    response = await admin._send_request(AuthorizedMetadataRequest(topics))
    missing: list[Acl] = []
    by_topic = {t[1]: (t[0], t[4]) for t in response.topics}
    for acl in needed:
        if acl.resource != "topic":
            continue
        error, bits = by_topic.get(acl.name, (UNKNOWN_TOPIC, NOT_REPORTED))
        if error == TOPIC_AUTHORIZATION_FAILED or (
            error == 0 and not _allowed(bits, acl.operation)
        ):
            missing.append(acl)
    for group in sorted(
        {a.name for a in needed if a.resource == "group" and a.pattern == "literal"}
    ):
        try:
            node = await _coordinator(admin, group)
        except GroupAuthorizationFailedError:
            error, bits = GROUP_AUTHORIZATION_FAILED, 0
        else:
            described = await admin._send_request(AuthorizedDescribeGroups([group]), node)
            error, bits = described.groups[0][0], described.groups[0][-1]
        refused = error == GROUP_AUTHORIZATION_FAILED
        missing += [
            acl
            for acl in needed
            if acl.resource == "group"
            and acl.name == group
            and (refused or not _allowed(bits, acl.operation))
        ]
    return missing


async def _refusal(settings: Settings, seconds: float) -> str | None:
    """Why the first bootstrap broker refuses this client, if it is an authentication or TLS
    refusal (aiokafka's bootstrap only logs the reason); None if it is anything else."""
    host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    config = client_config(settings)
    config.pop("bootstrap_servers")
    try:
        conn = await asyncio.wait_for(create_conn(host, int(port), **config), seconds)
    except ssl.SSLError as exc:
        return f"TLS: {exc}"
    except (KafkaError, OSError, TimeoutError) as exc:
        text = str(exc)
        if "Authentication" in text or "SASL" in text.upper():
            return text
        return None
    conn.close()
    return None


async def check_access(settings: Settings, service: str, *, seconds: float = 15.0) -> None:
    """Raise ``KafkaAccessError`` if the broker refuses ``service``'s credentials or rights.

    Only with a secured protocol (SSL or SASL): a PLAINTEXT broker has nothing to refuse."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return
    admin = make_admin(settings)
    try:
        try:
            await asyncio.wait_for(admin.start(), seconds)
        except (KafkaError, OSError, TimeoutError) as exc:
            reason = await _refusal(settings, seconds)
            if reason is None:
                log.warning("kafka.access.unchecked", error=type(exc).__name__)
                return
            if reason.startswith("TLS"):
                raise KafkaAccessError(
                    f"the TLS connection to {settings.kafka_bootstrap_servers} failed "
                    f"({env_var_name('kafka_ssl_cafile')}={settings.kafka_ssl_cafile}): {reason}"
                ) from None
            raise KafkaAccessError(
                f"Kafka refused the credentials of {_who(settings)}: check it and "
                f"{env_var_name('kafka_sasl_password')} ({reason})"
            ) from None
        if service not in SERVICE_PRINCIPALS:
            return
        try:
            missing = await asyncio.wait_for(
                missing_rights(admin, service_acls(settings, service)), seconds
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("kafka.access.unchecked", error=type(exc).__name__)
            return
        if missing:
            lacks = ", ".join(f"{a.operation} {a.resource} {a.name!r}" for a in missing)
            raise KafkaAccessError(
                f"Kafka refuses {_who(settings)} what the {service} needs: {lacks}. "
                f"Run the {service} as its own principal, or grant it the ACLs of "
                "docs/security.md (batchpipe kafka-acls prints them)"
            )
    finally:
        await admin.close()
