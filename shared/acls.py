"""The Kafka rights each batchpipe service needs: one principal per service, least privilege.

Role: the one definition of who may do what, derived from ``Settings`` (topic names, consumer
groups, transactional ids), so the local secured broker (``devtools.kafka_security``), the
documentation (``docs/security.md``, printed by ``batchpipe kafka-acls``) and each service's
start-up access check (``shared.kafka_access``) cannot disagree.

- ``ingest`` writes ``requests``.
- ``dispatcher`` reads ``requests`` in its consumer group (the Faust app id), writes
  ``batches`` and ``dead-letters``, and reads and writes its dispatch ledger.
- ``poller`` reads ``batches`` in its group, writes ``results`` and ``requests``
  (resubmissions), reads and writes its state topic and the webhook nudges, describes the
  dispatcher's group (its committed offsets: the status page's waiting requests), and owns the
  transactional ids ``batchpipe-poller.<batches topic>.*``.
- ``reader`` (results consumers such as ``batchpipe results``) reads ``results`` in groups
  named ``batchpipe-results*``.

Invariant: a service may only DESCRIBE (see the metadata of) the other batchpipe topics, so
its start-up ``ensure_topics`` finds them existing; it can create none and write none of them.
The administrator (a super user) creates topics and applies these ACLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import (
    batch_inputs_topic,
    batch_nudges_topic,
    ledger_topic,
    topic_names,
)

ResourceType = Literal["topic", "group", "transactional-id", "cluster"]
Operation = Literal["Read", "Write", "Describe", "IdempotentWrite"]
Pattern = Literal["literal", "prefixed"]

SERVICE_PRINCIPALS: Final = ("ingest", "dispatcher", "poller", "reader")
RESULTS_GROUP_PREFIX: Final = "batchpipe-results"


@dataclass(frozen=True, slots=True)
class Acl:
    """One ALLOW rule: ``User:<principal>`` may ``operation`` on a resource, from any host."""

    principal: str
    resource: ResourceType
    name: str
    operation: Operation
    pattern: Pattern = "literal"

    def cli_args(self) -> str:
        """The same rule as ``kafka-acls.sh`` arguments (for a user's own cluster)."""
        resource = {
            "topic": f"--topic '{self.name}'",
            "group": f"--group '{self.name}'",
            "transactional-id": f"--transactional-id '{self.name}'",
            "cluster": "--cluster",
        }[self.resource]
        pattern = " --resource-pattern-type prefixed" if self.pattern == "prefixed" else ""
        return (
            f"--add --allow-principal 'User:{self.principal}' "
            f"--operation {self.operation} {resource}{pattern}"
        )


def poller_group(settings: Settings) -> str:
    """The poller's consumer group on ``batches`` (one per batches topic)."""
    return f"batchpipe-poller.{settings.batches_topic}"


def poller_transactional_prefix(settings: Settings) -> str:
    """Every transactional id of the poller starts with this (one per batches partition)."""
    return f"batchpipe-poller.{settings.batches_topic}."


def _topic(principal: str, name: str, *operations: Operation) -> list[Acl]:
    return [Acl(principal, "topic", name, op) for op in (*operations, "Describe")]


def service_acls(settings: Settings, principal: str) -> list[Acl]:
    """The rights of one service principal (``SERVICE_PRINCIPALS``) under ``settings``."""
    s = settings
    own: list[Acl]
    if principal == "ingest":
        own = _topic(principal, s.requests_topic, "Write")
    elif principal == "dispatcher":
        own = [
            *_topic(principal, s.requests_topic, "Read"),
            *_topic(principal, s.batches_topic, "Write"),
            *_topic(principal, s.dead_letters_topic, "Write"),
            *_topic(principal, ledger_topic(s), "Read", "Write"),
            # staged windows of providers without input files (Anthropic): written before
            # create, read back to create after a crash and to find a batch by its requests
            *_topic(principal, batch_inputs_topic(s), "Read", "Write"),
            Acl(principal, "group", s.dispatcher_group_id, "Read"),
            Acl(principal, "group", s.dispatcher_group_id, "Describe"),
        ]
    elif principal == "poller":
        prefix = poller_transactional_prefix(s)
        own = [
            *_topic(principal, s.batches_topic, "Read"),
            *_topic(principal, s.results_topic, "Write"),
            *_topic(principal, s.requests_topic, "Write"),
            *_topic(principal, s.poller_state_topic, "Read", "Write"),
            # the original lines of Anthropic batches (retries, custom_ids given back)
            *_topic(principal, batch_inputs_topic(s), "Read"),
            # webhook nudges: written by the instance an event reaches, read by every instance
            # (assigned partitions, no consumer group)
            *_topic(principal, batch_nudges_topic(s), "Read", "Write"),
            Acl(principal, "group", poller_group(s), "Read"),
            Acl(principal, "group", poller_group(s), "Describe"),
            # the status page's "requests waiting": the dispatcher group's committed offsets
            # (OffsetFetch needs Describe on the group; it cannot join or commit with it)
            Acl(principal, "group", s.dispatcher_group_id, "Describe"),
            Acl(principal, "transactional-id", prefix, "Write", "prefixed"),
            Acl(principal, "transactional-id", prefix, "Describe", "prefixed"),
        ]
    elif principal == "reader":
        own = [
            *_topic(principal, s.results_topic, "Read"),
            Acl(principal, "group", RESULTS_GROUP_PREFIX, "Read", "prefixed"),
            Acl(principal, "group", RESULTS_GROUP_PREFIX, "Describe", "prefixed"),
        ]
    else:
        raise ValueError(f"no such batchpipe principal: {principal!r}")
    named = {acl.name for acl in own if acl.resource == "topic"}
    if principal == "reader":
        return own
    visible = [Acl(principal, "topic", t, "Describe") for t in topic_names(s) if t not in named]
    return own + visible


def all_acls(settings: Settings) -> list[Acl]:
    """Every service principal's rights, in ``SERVICE_PRINCIPALS`` order."""
    return [acl for p in SERVICE_PRINCIPALS for acl in service_acls(settings, p)]
