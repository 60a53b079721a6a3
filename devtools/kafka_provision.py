"""What a local cluster tells its clients, and what it sets up for them once it runs.

Role: the step between "the brokers are up" and "the services can connect": the client
settings (``BATCHPIPE_KAFKA_*`` and the replication settings) printed by ``batchpipe kafka``
and written to ``<data-dir>/client.env`` (the administrator) and ``<data-dir>/<service>.env``
(each service's own principal); and on a secured cluster, batchpipe's topics (created by the
administrator, since services may not create topics) and every service's ACLs.

Invariant: the topic names, groups and transactional ids the ACLs name come from the same
``Settings`` the services will run with (``shared.acls``); the files holding passwords are
mode 0600 and no password is logged.
"""

from __future__ import annotations

from pathlib import Path

from batchpipe.devtools.kafka_admin import create_acls
from batchpipe.devtools.kafka_cluster import LocalCluster
from batchpipe.devtools.kafka_security import ADMIN, PRINCIPALS, write_env_file
from batchpipe.shared.acls import all_acls
from batchpipe.shared.kafka import ensure_topics
from batchpipe.shared.settings import ENV_PREFIX, Settings


def cluster_env(cluster: LocalCluster, user: str = ADMIN) -> dict[str, str]:
    """The variables a client of ``cluster`` sets: where it is, how replicated, who it is."""
    env = {f"{ENV_PREFIX}KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap}
    if cluster.size >= 3:
        env[f"{ENV_PREFIX}TOPIC_REPLICATION_FACTOR"] = "3"
        env[f"{ENV_PREFIX}TOPIC_MIN_INSYNC_REPLICAS"] = "2"
    if cluster.security is not None:
        env |= cluster.security.client_env(user)
    return env


def write_client_env(cluster: LocalCluster) -> Path:
    """``client.env`` (the administrator) and, when secured, ``<principal>.env`` per service;
    returns the path of ``client.env``."""
    path = cluster.data_dir / "client.env"
    write_env_file(path, cluster_env(cluster))
    if cluster.security is not None:
        for user in PRINCIPALS:
            if user != ADMIN:
                write_env_file(cluster.data_dir / f"{user}.env", cluster_env(cluster, user))
    return path


def with_cluster(settings: Settings, cluster: LocalCluster, user: str = ADMIN) -> Settings:
    """``settings`` (topic names, groups) connected to ``cluster`` as ``user``."""
    from batchpipe.devtools.kafka_security import load_settings_from

    env = cluster_env(cluster, user)
    connected = load_settings_from(env)
    fields = [name.removeprefix(ENV_PREFIX).lower() for name in env]
    return settings.model_copy(update={f: getattr(connected, f) for f in fields})


async def provision(cluster: LocalCluster, settings: Settings) -> int:
    """On a secured cluster: create batchpipe's topics and every service's ACLs as the
    administrator; return the number of ACLs applied (0 when not secured)."""
    if cluster.security is None:
        return 0
    admin = with_cluster(settings, cluster)
    await ensure_topics(admin)
    return await create_acls(admin, all_acls(admin))
