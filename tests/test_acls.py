"""The ACL registry names the real resources: the poller's group and transactional ids, the
dispatcher's group (its Faust app id) and ledger, and every topic of the registry."""

from __future__ import annotations

from batchpipe.services.poller.publisher import group_id, transactional_id
from batchpipe.shared.acls import all_acls, poller_group, poller_transactional_prefix, service_acls
from batchpipe.shared.settings import Settings
from batchpipe.shared.topics import (
    batch_inputs_topic,
    batch_nudges_topic,
    ledger_topic,
    topic_names,
)


def rights(settings: Settings, principal: str) -> set[tuple[str, str, str]]:
    return {(a.resource, a.name, a.operation) for a in service_acls(settings, principal)}


def test_poller_names_match_the_publisher() -> None:
    settings = Settings(batches_topic="b-1")
    assert poller_group(settings) == group_id(settings)
    for partition in (0, 7, 123):
        assert transactional_id(settings, partition).startswith(
            poller_transactional_prefix(settings)
        )


def test_least_privilege_per_service() -> None:
    s = Settings(requests_topic="rq", batches_topic="bt", results_topic="rs")
    ingest = rights(s, "ingest")
    writes = {name for kind, name, op in ingest if op == "Write"}
    assert writes == {"rq"}
    assert not {op for _, _, op in ingest} - {"Write", "Describe"}
    dispatcher = rights(s, "dispatcher")
    assert ("topic", "rq", "Read") in dispatcher
    assert ("group", s.dispatcher_group_id, "Read") in dispatcher
    assert ("topic", ledger_topic(s), "Write") in dispatcher
    assert {n for k, n, op in dispatcher if op == "Write"} == {
        "bt",
        s.dead_letters_topic,
        ledger_topic(s),
        batch_inputs_topic(s),  # Anthropic's staged windows
    }
    assert ("topic", batch_inputs_topic(s), "Read") in rights(s, "poller")
    poller = rights(s, "poller")
    assert {n for k, n, op in poller if op == "Write" and k == "topic"} == {
        "rs",
        "rq",
        s.poller_state_topic,
        batch_nudges_topic(s),  # webhook nudges, read back by every poller
    }
    assert ("topic", batch_nudges_topic(s), "Read") in poller
    assert ("transactional-id", "batchpipe-poller.bt.", "Write") in poller
    # Every service sees (Describe) every topic, so its start-up ensure_topics creates none.
    for principal in ("ingest", "dispatcher", "poller"):
        seen = {n for k, n, op in rights(s, principal) if k == "topic" and op == "Describe"}
        assert seen == set(topic_names(s))
    assert {a.principal for a in all_acls(s)} == {"ingest", "dispatcher", "poller", "reader"}
    assert {op for _, _, op in rights(s, "reader")} == {"Read", "Describe"}
