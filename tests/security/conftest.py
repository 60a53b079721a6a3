"""A secured broker for the security tests: TLS, SCRAM-SHA-512 users and ACLs.

``secured``: a one-node ``LocalCluster`` with ``BrokerSecurity`` (``devtools.kafka_security``),
shared by the session, whose topics and ACLs were provisioned for ``secured.settings`` (fresh
topic names), so every service principal has exactly the rights ``shared.acls`` gives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from batchpipe.devtools.kafka_cluster import LocalCluster, running_cluster
from batchpipe.devtools.kafka_provision import provision, with_cluster
from batchpipe.devtools.kafka_security import ADMIN, BrokerSecurity
from batchpipe.shared.settings import Settings
from tests.conftest import make_test_settings

DEMO = {"batch_max_wait_seconds": 2.0, "poll_interval_seconds": 0.5, "poll_max_rps": 50.0}


@dataclass
class Secured:
    cluster: LocalCluster
    security: BrokerSecurity
    settings: Settings  # the topic names the ACLs were made for, as the administrator

    def as_user(self, user: str, **overrides: object) -> Settings:
        """The same settings connected as ``user`` (a service principal or ``admin``)."""
        return with_cluster(self.settings, self.cluster, user).model_copy(update=overrides)

    def env(self, user: str) -> dict[str, str]:
        """The ``BATCHPIPE_KAFKA_*`` variables of ``user``, for a service process."""
        return self.security.client_env(user)


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = tmp_path_factory.mktemp("secured-kafka")
    security = BrokerSecurity.create(data)
    with running_cluster(data, size=1, heap="384m", security=security) as cluster:
        base = make_test_settings("localhost:1", **DEMO)
        settings = with_cluster(base, cluster, ADMIN)
        asyncio.run(provision(cluster, settings))
        yield Secured(cluster, security, settings)
