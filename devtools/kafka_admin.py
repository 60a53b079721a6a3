"""Administrative calls on a local cluster: who is registered, who leads what, apply ACLs.

Role: what the local broker tooling and the reliability suite need beyond creating topics
(``shared.kafka.ensure_topics``): the registered broker ids (readiness of a cluster), the
leader of each partition (to kill the right broker), and creating ACLs (aiokafka's admin client
has no ``create_acls``; the protocol request it ships is sent directly, one rule each).

Invariant: every call authenticates with the given ``Settings`` (the administrator's on a
secured cluster), through ``shared.kafka.make_admin`` like every other client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from batchpipe.shared.acls import Acl
from batchpipe.shared.kafka import make_admin
from batchpipe.shared.settings import Settings

# Kafka's wire codes (org.apache.kafka.common.resource / acl).
RESOURCE_TYPES: Final = {"topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
PATTERN_TYPES: Final = {"literal": 3, "prefixed": 4}
OPERATIONS: Final = {"Read": 3, "Write": 4, "Describe": 8, "IdempotentWrite": 12}
ALLOW: Final = 3


async def broker_ids(settings: Settings) -> set[int]:
    """The ids of the brokers the cluster's metadata lists (registered and alive)."""
    admin = make_admin(settings)
    await admin.start()
    try:
        cluster: dict[str, Any] = await admin.describe_cluster()
        return {int(b["node_id"]) for b in cluster["brokers"]}
    finally:
        await admin.close()


async def partition_leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> id of its leader (-1 while it has none)."""
    admin = make_admin(settings)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
        return {int(p["partition"]): int(p["leader"]) for p in described[0]["partitions"]}
    finally:
        await admin.close()


async def create_acls(settings: Settings, acls: Iterable[Acl]) -> int:
    """Create every ALLOW rule in ``acls`` (idempotent: an existing rule is left as is)."""
    admin = make_admin(settings)
    await admin.start()
    created = 0
    try:
        for acl in acls:
            request = CreateAclsRequest(
                RESOURCE_TYPES[acl.resource],
                "kafka-cluster" if acl.resource == "cluster" else acl.name,
                PATTERN_TYPES[acl.pattern],
                f"User:{acl.principal}",
                "*",
                OPERATIONS[acl.operation],
                ALLOW,
            )
            response = await admin._send_request(request)
            for error_code, message in response.creation_responses:
                if error_code:
                    raise for_code(error_code)(f"creating ACL {acl}: {message}")
            created += 1
        return created
    finally:
        await admin.close()
